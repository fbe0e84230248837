//! Running a short-lived tool (initdb, pg_basebackup, pg_controldata) to completion with its
//! output captured: every line is logged as JSON under the tool's name, and kept for the caller.
//!
//! The tool leads a process group of its own, and whatever is left of that group when the
//! tool has exited, timed out, or is no longer awaited is SIGKILLed: `pg_basebackup -X stream`
//! forks a WAL streamer (holding a temporary slot on the primary) that survives its parent.

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::unix::pipe;

use super::{Child, Error, ExitStatus, Supervisor};

/// How long to wait for a tool's output after it exited (a grandchild may hold the pipe).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a tool printed and how it ended.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// How it exited.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl CommandOutput {
    /// The last non-empty line of stderr (or stdout): usually the error a tool reports.
    pub fn last_line(&self) -> &str {
        self.stderr.lines().chain(self.stdout.lines()).rev().find(|l| !l.trim().is_empty()).unwrap_or("")
    }
}

/// Runs `cmd` to completion under the supervisor, logging its output lines with
/// `logger = label`. When `timeout` passes the tool is killed (SIGKILL) and waited for; when
/// the returned future is dropped (the manager is stopping) the tool is killed too.
pub async fn run_logged(
    sup: &Supervisor,
    label: &'static str,
    cmd: &mut Command,
    timeout: Duration,
) -> Result<CommandOutput, Error> {
    run(sup, label, cmd, timeout, true).await
}

/// Like [`run_logged`], without logging the output (for tools whose output is data).
pub async fn run_quiet(
    sup: &Supervisor,
    label: &'static str,
    cmd: &mut Command,
    timeout: Duration,
) -> Result<CommandOutput, Error> {
    run(sup, label, cmd, timeout, false).await
}

async fn run(
    sup: &Supervisor,
    label: &'static str,
    cmd: &mut Command,
    timeout: Duration,
    log: bool,
) -> Result<CommandOutput, Error> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    let mut child = KillOnDrop(sup.spawn(label, cmd)?, sup.clone());
    sup.guard_group(child.0.pid, true);
    // Readers run as tasks so that a chatty tool never blocks on a full pipe.
    let out = child.0.stdout.take().map(|s| tokio::spawn(collect(label, pipe_of(s.into()), log)));
    let err = child.0.stderr.take().map(|s| tokio::spawn(collect(label, pipe_of(s.into()), log)));
    let status = wait_or_kill(&child.0, timeout).await;
    // What is left of its group would hold the pipes open: kill it before draining them.
    drop(child);
    Ok(CommandOutput { status, stdout: drain(out).await, stderr: drain(err).await })
}

async fn drain(task: Option<tokio::task::JoinHandle<String>>) -> String {
    match task {
        Some(task) => tokio::time::timeout(DRAIN_TIMEOUT, task).await.ok().and_then(Result::ok).unwrap_or_default(),
        None => String::new(),
    }
}

/// Kills the child's process group when the run is over: if the future awaiting it is
/// dropped before it exited (the manager is stopping), or whatever of its group outlived it.
struct KillOnDrop(Child, Supervisor);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.exited().is_none() {
            tracing::info!(label = self.0.label, pid = self.0.pid.as_raw(), "stopping it");
            let _ = self.0.signal_group(Signal::SIGKILL);
        } else {
            // The group id stays reserved while any member lives, so this reaches only what
            // is left of the tool's own group (nothing, usually: ESRCH).
            let _ = nix::sys::signal::killpg(self.0.pid, Signal::SIGKILL);
        }
        self.1.guard_group(self.0.pid, false);
    }
}

async fn wait_or_kill(child: &Child, timeout: Duration) -> ExitStatus {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            tracing::error!(label = child.label, pid = child.pid.as_raw(), ?timeout, "timed out; killing it");
            let _ = child.signal_group(Signal::SIGKILL);
            child.wait().await
        }
    }
}

fn pipe_of(fd: std::os::fd::OwnedFd) -> Option<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd).ok()
}

async fn collect(label: &'static str, rx: Option<pipe::Receiver>, log: bool) -> String {
    match rx {
        Some(rx) => read_lines(label, rx, log).await,
        None => String::new(),
    }
}

async fn read_lines(label: &'static str, rx: impl AsyncRead + Unpin, log: bool) -> String {
    let mut lines = BufReader::new(rx).lines();
    let mut all = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if log {
            tracing::info!(logger = label, "{line}");
        }
        all.push_str(&line);
        all.push('\n');
    }
    all
}
