//! Running a short-lived tool (initdb, pg_basebackup, pg_controldata) to completion with its
//! output captured: every line is logged as JSON under the tool's name, and kept for the caller.

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::unix::pipe;

use super::{Child, Error, ExitStatus, Supervisor};

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
        self.stderr
            .lines()
            .chain(self.stdout.lines())
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

/// Runs `cmd` to completion under the supervisor, logging its output lines with
/// `logger = label`. When `timeout` passes the tool is killed (SIGKILL) and waited for.
pub async fn run_logged(
    sup: &Supervisor,
    label: &'static str,
    cmd: &mut Command,
    timeout: Duration,
) -> Result<CommandOutput, Error> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = sup.spawn(label, cmd)?;
    // Readers run as tasks so that a chatty tool never blocks on a full pipe.
    let out = child.stdout.take().map(|s| tokio::spawn(collect(label, pipe_of(s.into()))));
    let err = child.stderr.take().map(|s| tokio::spawn(collect(label, pipe_of(s.into()))));
    let status = wait_or_kill(&child, timeout).await;
    let stdout = match out {
        Some(task) => task.await.unwrap_or_default(),
        None => String::new(),
    };
    let stderr = match err {
        Some(task) => task.await.unwrap_or_default(),
        None => String::new(),
    };
    Ok(CommandOutput { status, stdout, stderr })
}

async fn wait_or_kill(child: &Child, timeout: Duration) -> ExitStatus {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            tracing::error!(label = child.label, pid = child.pid.as_raw(), ?timeout, "timed out; killing it");
            let _ = child.signal(nix::sys::signal::Signal::SIGKILL);
            child.wait().await
        }
    }
}

fn pipe_of(fd: std::os::fd::OwnedFd) -> Option<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd).ok()
}

async fn collect(label: &'static str, rx: Option<pipe::Receiver>) -> String {
    match rx {
        Some(rx) => read_lines(label, rx).await,
        None => String::new(),
    }
}

async fn read_lines(label: &'static str, rx: impl AsyncRead + Unpin) -> String {
    let mut lines = BufReader::new(rx).lines();
    let mut all = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(logger = label, "{line}");
        all.push_str(&line);
        all.push('\n');
    }
    all
}
