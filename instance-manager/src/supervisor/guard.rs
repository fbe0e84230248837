//! The tools' guard: no tool the manager started outlives it, whatever ends the manager.
//!
//! Every tool (`pg_basebackup`, `pg_rewind`, `initdb`, `pg_controldata`, `postgres -C`) runs
//! in a process group of its own, and the whole group is killed when the manager stops waiting
//! for it: `pg_basebackup -X stream` forks a WAL streamer that holds the temporary replication
//! slot on the primary and does not die with its parent, `initdb` and `pg_rewind` run a
//! `postgres` of their own.
//!
//! A manager that dies by SIGKILL runs no code, so the killing is done by another process:
//! `instance-manager child-guard`, started once per `run`, in its own process group (a
//! terminal's Ctrl-C does not reach it), with a pipe on its stdin. The manager announces each
//! tool group (`+ <pgid>`) and retires it when done (`- <pgid>`); when the pipe closes — the
//! manager is gone, by any exit — the guard SIGKILLs every group still announced, then exits.
//!
//! Why not the parent-death signal (`PR_SET_PDEATHSIG`): it must be set between `fork` and
//! `exec` (a `pre_exec` hook, which is `unsafe`), it fires when the *thread* that forked exits
//! (the runtime's threads come and go), and it does not reach a tool's own children (the
//! forked WAL streamer). The guard covers all three.
//!
//! The announced groups are also kept in `<runDir>/tool-groups`, so that a start after a
//! SIGKILL of both the manager and its guard still finds a tool left running (say a
//! `pg_basebackup` writing into the staging directory the next bootstrap would delete) and
//! kills it first ([`kill_leftovers`]).

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{Child, Error, Supervisor};

/// The programs whose leftover groups may be killed at the next start: a recorded group is
/// killed only when one of its members runs one of these on a path of this instance (the
/// process group id may have been reused since).
const TOOLS: &[&str] = &["pg_basebackup", "pg_rewind", "initdb", "postgres", "pg_controldata"];
/// How long to wait for a leftover group to disappear after its SIGKILL.
const LEFTOVER_WAIT: Duration = Duration::from_secs(10);

/// The manager's side of the guard.
pub(super) struct Guard {
    stdin: Option<ChildStdin>,
    groups: BTreeSet<i32>,
    file: PathBuf,
    _child: Child,
}

impl Guard {
    /// Kills what an earlier run left in `<run_dir>/tool-groups`, then starts the guard.
    pub(super) fn start(sup: &Supervisor, run_dir: &Path, work_dirs: &[PathBuf]) -> Result<Self, Error> {
        let file = run_dir.join("tool-groups");
        kill_leftovers(&file, work_dirs);
        let exe = std::env::current_exe().unwrap_or_else(|_| "instance-manager".into());
        let mut cmd = Command::new(exe);
        cmd.arg("child-guard").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::inherit());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = sup.spawn("child-guard", &mut cmd)?;
        let stdin = child.stdin.take();
        Ok(Self { stdin, groups: BTreeSet::new(), file, _child: child })
    }

    /// A tool's process group started (`added`) or is finished.
    pub(super) fn update(&mut self, pgid: Pid, added: bool) {
        let pgid = pgid.as_raw();
        let changed = if added { self.groups.insert(pgid) } else { self.groups.remove(&pgid) };
        if !changed {
            return;
        }
        let line = format!("{} {pgid}\n", if added { '+' } else { '-' });
        if let Some(stdin) = &mut self.stdin
            && let Err(e) = stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush())
        {
            tracing::warn!(error = %e, "the child guard is gone; tools may outlive a killed manager");
            self.stdin = None;
        }
        let text: String = self.groups.iter().map(|g| format!("{g}\n")).collect();
        if let Err(e) = crate::paths::write_atomic(&self.file, text.as_bytes(), 0o600) {
            tracing::warn!(error = %e, file = %self.file.display(), "cannot record the tools' process groups");
        }
    }
}

/// `instance-manager child-guard`: reads `+ <pgid>` / `- <pgid>` lines until stdin closes,
/// then SIGKILLs every group still announced. No runtime, no threads: it must stay tiny.
pub fn child_guard_main() -> i32 {
    let mut groups = BTreeSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match parse(&line) {
            Some((true, pgid)) => groups.insert(pgid),
            Some((false, pgid)) => groups.remove(&pgid),
            None => false,
        };
    }
    for pgid in groups {
        if killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
            let record = serde_json::json!({
                "timestamp": jiff::Timestamp::now().to_string(),
                "level": "WARN",
                "logger": "child-guard",
                "message": "the instance manager is gone: killed a tool it was running",
                "process_group": pgid,
            });
            eprintln!("{record}");
        }
    }
    0
}

/// One line of the protocol: `(added, pgid)`.
pub fn parse(line: &str) -> Option<(bool, i32)> {
    let (op, pgid) = line.trim().split_once(' ')?;
    let pgid: i32 = pgid.trim().parse().ok().filter(|p| *p > 1)?;
    match op {
        "+" => Some((true, pgid)),
        "-" => Some((false, pgid)),
        _ => None,
    }
}

/// Kills the tool groups a previous run recorded in `file` that still run one of [`TOOLS`] on
/// a path under one of `work_dirs`, and waits (bounded) until they are gone. Removes the file.
pub fn kill_leftovers(file: &Path, work_dirs: &[PathBuf]) {
    let Ok(text) = std::fs::read_to_string(file) else { return };
    for pgid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()).filter(|p| *p > 1) {
        let members = group_members(pgid);
        let ours = |pid: i32| work_dirs.iter().any(|d| works_under(pid, d));
        let Some((pid, comm)) = members.iter().find(|(pid, comm)| TOOLS.contains(&comm.as_str()) && ours(*pid)) else {
            continue;
        };
        tracing::warn!(process_group = pgid, pid, program = %comm, "killing a tool a previous run of the manager left running");
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let began = Instant::now();
        while killpg(Pid::from_raw(pgid), None) != Err(Errno::ESRCH) && began.elapsed() < LEFTOVER_WAIT {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_file(file);
}

/// Whether an argument of `pid`'s command line is `dir` or a path under it.
fn works_under(pid: i32, dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let dir = dir.as_os_str().as_bytes();
    let under = |arg: &[u8]| arg.strip_prefix(dir).is_some_and(|rest| rest.is_empty() || rest[0] == b'/');
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(under))
}

/// `(pid, comm)` of the live processes in process group `pgid`, from `/proc`.
fn group_members(pgid: i32) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (comm, group) = parse_stat(&stat)?;
            (group == pgid).then_some((pid, comm))
        })
        .collect()
}

/// `comm` and process group of a `/proc/<pid>/stat` line (`pid (comm) state ppid pgrp …`;
/// comm may contain spaces and parentheses, so the last `)` ends it).
fn parse_stat(stat: &str) -> Option<(String, i32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let _ppid = rest.next()?;
    Some((comm, rest.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_is_two_verbs_and_a_group() {
        assert_eq!(parse("+ 1234"), Some((true, 1234)));
        assert_eq!(parse("- 1234\n"), Some((false, 1234)));
        assert_eq!(parse("+ 1"), None, "never init's group");
        assert_eq!(parse("+ 0"), None, "never our own group");
        assert_eq!(parse("+ -5"), None);
        assert_eq!(parse("kill 5"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn stat_lines_with_odd_names_parse() {
        assert_eq!(parse_stat("42 (pg_basebackup) S 1 40 40 0"), Some(("pg_basebackup".into(), 40)));
        assert_eq!(parse_stat("42 (a) b) R 7 9 9"), Some(("a) b".into(), 9)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_recorded_group_without_a_tool_is_left_alone() {
        // This test process is not one of the tools: its group must survive.
        let dir = std::env::temp_dir().join(format!("pgwarden-guard-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let file = dir.join("tool-groups");
        let own = nix::unistd::getpgrp().as_raw();
        std::fs::write(&file, format!("{own}\n")).unwrap_or_default();
        kill_leftovers(&file, std::slice::from_ref(&dir));
        assert!(!file.exists(), "the record is consumed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
