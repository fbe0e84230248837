//! PID 1 duties: spawning children, reaping every process, routing exit statuses.
//!
//! **One reaper owns every `waitpid`.** A child is registered *while the registry lock is
//! held across `spawn`*, and the reaper takes the same lock before it calls `waitpid`, so no
//! child can be reaped before its waiter exists. The reaper runs on every `SIGCHLD` and reaps
//! until nothing is left: exit statuses of our own children go to their [`Child`] handles,
//! anything else (an orphan re-parented to us as PID 1 or as a child subreaper) is logged.
//! Signals are sent under the same lock and only to a registered pid, so a pid that has been
//! reaped (and may be reused) is never signalled.
//!
//! Nothing else in the process may wait for children: no `std::process::Command::output`,
//! no `tokio::process`. When the manager is not PID 1 it makes itself a child subreaper so
//! orphans still come to it (and this is testable outside a PID namespace).
//!
//! Tools run to completion ([`run_logged`]) never outlive the manager: each runs in a process
//! group of its own that is killed whole when the manager stops waiting for it, and a small
//! guard process kills what is left when the manager dies by SIGKILL ([`guard`]).

pub mod guard;
mod output;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub use output::{CommandOutput, run_logged, run_quiet};

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(Signal),
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by {s}"),
        }
    }
}

#[derive(Default)]
struct Registry {
    children: HashMap<Pid, watch::Sender<Option<ExitStatus>>>,
}

/// Spawns children and reaps every process. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    registry: Arc<Mutex<Registry>>,
    guard: Arc<Mutex<Option<guard::Guard>>>,
}

/// A child registered with the supervisor.
pub struct Child {
    /// Its pid.
    pub pid: Pid,
    /// What it is, for logs (`postgres`, `initdb`).
    pub label: &'static str,
    /// Its stdin, when piped.
    pub stdin: Option<ChildStdin>,
    /// Its stdout, when piped.
    pub stdout: Option<ChildStdout>,
    /// Its stderr, when piped.
    pub stderr: Option<ChildStderr>,
    exit: watch::Receiver<Option<ExitStatus>>,
    registry: Arc<Mutex<Registry>>,
}

/// Errors of the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A child could not be started.
    #[error("cannot start {label} ({program}): {source}")]
    Spawn {
        /// What it is.
        label: &'static str,
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The SIGCHLD handler could not be installed.
    #[error("cannot install the SIGCHLD handler: {0}")]
    Signal(std::io::Error),
    /// The child has already exited; it cannot be signalled.
    #[error("{0} has already exited")]
    Exited(&'static str),
    /// Sending a signal failed.
    #[error("cannot signal {label} (pid {pid}): {source}")]
    Kill {
        /// What it is.
        label: &'static str,
        /// Its pid.
        pid: Pid,
        /// Why.
        source: Errno,
    },
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Supervisor {
    /// Becomes the reaper: subreaper when not PID 1, and a task that reaps on every SIGCHLD.
    /// Must be called inside a Tokio runtime, once per process.
    pub fn start() -> Result<Self, Error> {
        if std::process::id() != 1
            && let Err(e) = nix::sys::prctl::set_child_subreaper(true)
        {
            tracing::warn!(error = %e, "cannot become a child subreaper; orphans will not be reaped here");
        }
        let mut sigchld = signal(SignalKind::child()).map_err(Error::Signal)?;
        let registry = Arc::new(Mutex::new(Registry::default()));
        let reaper = Arc::clone(&registry);
        tokio::spawn(async move {
            reap_all(&reaper);
            while sigchld.recv().await.is_some() {
                reap_all(&reaper);
            }
        });
        Ok(Self { registry, guard: Arc::new(Mutex::new(None)) })
    }

    /// Kills the tools a previous run left working under `work_dirs` (recorded in `run_dir`),
    /// then starts the guard that kills this run's tools if the manager dies. Without a guard
    /// (it could not start) tools are still killed on every exit path the manager survives.
    pub fn guard_tools(&self, run_dir: &Path, work_dirs: &[PathBuf]) {
        match guard::Guard::start(self, run_dir, work_dirs) {
            Ok(g) => *self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(g),
            Err(e) => tracing::warn!(error = %e, "cannot start the child guard; tools may outlive a killed manager"),
        }
    }

    /// Records that the process group `pgid` of a tool started (`added`) or is finished.
    fn guard_group(&self, pgid: Pid, added: bool) {
        if let Some(g) = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
            g.update(pgid, added);
        }
    }

    /// Spawns `cmd` and registers it before it can be reaped.
    pub fn spawn(&self, label: &'static str, cmd: &mut Command) -> Result<Child, Error> {
        let mut reg = lock(&self.registry);
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            label,
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        let pid = Pid::from_raw(child.id() as i32);
        let (tx, rx) = watch::channel(None);
        reg.children.insert(pid, tx);
        drop(reg);
        tracing::debug!(label, pid = pid.as_raw(), "child started");
        // Dropping std's handle neither waits nor kills: the reaper owns the exit status.
        Ok(Child {
            pid,
            label,
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            exit: rx,
            registry: Arc::clone(&self.registry),
        })
    }
}

fn reap_all(registry: &Mutex<Registry>) {
    let mut reg = lock(registry);
    loop {
        let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "waitpid failed");
                return;
            }
            Ok(s) => s,
        };
        let (pid, exit) = match status {
            WaitStatus::Exited(pid, code) => (pid, ExitStatus::Code(code)),
            WaitStatus::Signaled(pid, sig, _) => (pid, ExitStatus::Signal(sig)),
            _ => continue,
        };
        match reg.children.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(Some(exit));
            }
            None => tracing::info!(pid = pid.as_raw(), status = %exit, "reaped an orphaned process"),
        }
    }
}

impl Child {
    /// Waits until the child has exited. Cancel-safe; may be called again afterwards.
    pub async fn wait(&self) -> ExitStatus {
        let mut rx = self.exit.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(s) => s.unwrap_or(ExitStatus::Code(-1)),
            // The sender lives in the registry until the exit is sent; a closed channel
            // without a value means the reaper is gone, which ends the process anyway.
            Err(_) => ExitStatus::Code(-1),
        }
    }

    /// The exit status, if the child has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Sends `sig` to the child's process group (the child must lead one: see
    /// `CommandExt::process_group`), only if the child has not been reaped yet.
    pub fn signal_group(&self, sig: Signal) -> Result<(), Error> {
        let reg = lock(&self.registry);
        if !reg.children.contains_key(&self.pid) {
            return Err(Error::Exited(self.label));
        }
        nix::sys::signal::killpg(self.pid, sig).map_err(|source| Error::Kill {
            label: self.label,
            pid: self.pid,
            source,
        })
    }

    /// Sends `sig` to the child, only if it has not been reaped yet.
    pub fn signal(&self, sig: Signal) -> Result<(), Error> {
        let reg = lock(&self.registry);
        if !reg.children.contains_key(&self.pid) {
            return Err(Error::Exited(self.label));
        }
        nix::sys::signal::kill(self.pid, sig).map_err(|source| Error::Kill { label: self.label, pid: self.pid, source })
    }
}
