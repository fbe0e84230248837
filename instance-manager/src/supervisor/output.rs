//! Running a short-lived tool (initdb, pg_basebackup, pg_controldata) to completion with its
//! output captured: every line is logged as JSON under the tool's name, and kept for the caller.

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
    let mut child = KillOnDrop(sup.spawn(label, cmd)?);
    // Readers run as tasks so that a chatty tool never blocks on a full pipe.
    let out = child.0.stdout.take().map(|s| tokio::spawn(collect(label, pipe_of(s.into()), log)));
    let err = child.0.stderr.take().map(|s| tokio::spawn(collect(label, pipe_of(s.into()), log)));
    let status = wait_or_kill(&child.0, timeout).await;
    Ok(CommandOutput { status, stdout: drain(out).await, stderr: drain(err).await })
}

async fn drain(task: Option<tokio::task::JoinHandle<String>>) -> String {
    match task {
        Some(task) => tokio::time::timeout(DRAIN_TIMEOUT, task).await.ok().and_then(Result::ok).unwrap_or_default(),
        None => String::new(),
    }
}

/// Kills the child if the future awaiting it is dropped before it exited.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.exited().is_none() {
            let _ = self.0.signal(Signal::SIGKILL);
        }
    }
}

async fn wait_or_kill(child: &Child, timeout: Duration) -> ExitStatus {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            tracing::error!(label = child.label, pid = child.pid.as_raw(), ?timeout, "timed out; killing it");
            let _ = child.signal(Signal::SIGKILL);
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
