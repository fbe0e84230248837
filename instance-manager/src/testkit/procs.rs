//! Finding and killing what an instance left running once its manager is gone.
//!
//! A manager killed with SIGKILL cannot stop its Postgres (in a pod the container's end takes
//! every process with it; a test has no container). `postmaster.pid` names the postmaster only
//! once it is written: a Postgres the manager was just (re)starting, or a `pg_basebackup` or
//! `pg_rewind` it was running, would be left behind. So the processes are found by what they
//! work on: any argument under the instance's directory.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Process ids (not this process) with an argument that is `dir` or a path under it.
pub fn processes_under(dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let dir = dir.as_os_str().as_bytes();
    let under = |arg: &[u8]| arg.strip_prefix(dir).is_some_and(|rest| rest.is_empty() || rest[0] == b'/');
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(under))
        })
        .collect()
}

/// SIGKILLs every process [`processes_under`] `dir`.
pub fn kill_processes_under(dir: &Path) {
    for pid in processes_under(dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn finds_processes_by_a_path_argument_under_the_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path().join("pg-1");
        let other = dir.path().join("pg-10");
        let follow = |d: &Path| {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("log"), "").unwrap();
            std::process::Command::new("tail").arg("-f").arg(d.join("log")).spawn().unwrap()
        };
        let (mut mine, mut theirs) = (follow(&inst), follow(&other));
        let found = processes_under(&inst);
        assert!(found.contains(&(mine.id() as i32)), "{found:?}");
        assert!(!found.contains(&(theirs.id() as i32)), "pg-10 is not under pg-1: {found:?}");
        kill_processes_under(&inst);
        assert!(!mine.wait().unwrap().success());
        let _ = theirs.kill();
        let _ = theirs.wait();
    }
}
