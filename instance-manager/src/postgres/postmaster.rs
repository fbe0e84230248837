//! The postmaster as a foreground child of the manager, and its shutdown escalation.
//!
//! ```text
//!  stop(Smart) ──SIGTERM──▶ smart: new sessions refused, existing ones may finish
//!       │ smartTimeoutSeconds
//!       ▼
//!  ──SIGINT──▶ fast: sessions terminated, shutdown checkpoint
//!       │ stopTimeoutSeconds (from the start of the stop)
//!       ▼
//!  ──SIGQUIT──▶ immediate: no checkpoint, crash recovery at next start
//!       │ KILL_GRACE
//!       ▼
//!  ──SIGKILL──▶ gone
//! ```

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::net::unix::pipe;

use crate::config::Validated;
use crate::paths::Paths;
use crate::supervisor::{self, Child, ExitStatus, Supervisor};

/// How long after SIGQUIT before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// Postgres' shutdown modes, in escalating order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownMode {
    /// Wait for sessions to end (SIGTERM).
    Smart,
    /// Terminate sessions, checkpoint (SIGINT).
    Fast,
    /// Quit at once, recover at next start (SIGQUIT).
    Immediate,
    /// SIGKILL of the postmaster.
    Kill,
}

impl ShutdownMode {
    /// The signal that asks the postmaster for this mode.
    pub fn signal(self) -> Signal {
        match self {
            ShutdownMode::Smart => Signal::SIGTERM,
            ShutdownMode::Fast => Signal::SIGINT,
            ShutdownMode::Immediate => Signal::SIGQUIT,
            ShutdownMode::Kill => Signal::SIGKILL,
        }
    }
}

/// The escalation plan: which mode to be in `elapsed` after a stop that began in `start`.
/// Pure, so the schedule is tested without waiting.
pub fn mode_at(start: ShutdownMode, elapsed: Duration, smart: Duration, stop: Duration) -> ShutdownMode {
    let by_time = if elapsed >= stop + KILL_GRACE {
        ShutdownMode::Kill
    } else if elapsed >= stop {
        ShutdownMode::Immediate
    } else if elapsed >= smart {
        ShutdownMode::Fast
    } else {
        ShutdownMode::Smart
    };
    by_time.max(start)
}

/// A running postmaster.
pub struct Postmaster {
    child: Child,
    /// The supervisor that started it: checks of a new configuration run under it too.
    sup: Supervisor,
    /// The port it was started on.
    pub port: u16,
}

impl Postmaster {
    /// Starts `postgres` in the foreground with pgwarden's config file; stderr becomes JSON logs.
    pub fn start(sup: &Supervisor, v: &Validated, paths: &Paths) -> Result<Self, supervisor::Error> {
        let mut cmd = Command::new(v.bin("postgres"));
        cmd.arg("-D").arg(&paths.data_dir).arg("-c").arg(format!("config_file={}", paths.conf_file().display()));
        crate::pgdata::postgres_env(v, &mut cmd);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // The postmaster leads its own process group, so a Ctrl-C in a terminal reaches only
        // the manager, which then decides how Postgres stops.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = sup.spawn("postgres", &mut cmd)?;
        if let Some(stderr) = child.stderr.take()
            && let Ok(rx) = pipe::Receiver::from_owned_fd(stderr.into())
        {
            tokio::spawn(super::logs::forward(rx));
        }
        tracing::info!(pid = child.pid.as_raw(), port = v.port, "postgres started");
        Ok(Self { child, sup: sup.clone(), port: v.port })
    }

    /// The supervisor the postmaster runs under.
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> u32 {
        self.child.pid.as_raw() as u32
    }

    /// Waits for the postmaster to exit. Cancel-safe.
    pub async fn wait(&self) -> ExitStatus {
        self.child.wait().await
    }

    /// Sends the signal of `mode`.
    pub fn request(&self, mode: ShutdownMode) {
        if let Err(e) = self.child.signal(mode.signal()) {
            tracing::debug!(error = %e, ?mode, "cannot signal postgres");
        }
    }

    /// Fencing: immediate shutdown (SIGQUIT), then SIGKILL of the postmaster's whole process
    /// group (every backend) when it has not exited within `grace`.
    pub async fn kill_within(&self, grace: Duration) -> ExitStatus {
        self.request(ShutdownMode::Immediate);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(?grace, "postgres did not stop in time; killing its process group");
                if let Err(e) = self.child.signal_group(Signal::SIGKILL) {
                    tracing::debug!(error = %e, "cannot kill the process group");
                }
                self.wait().await
            }
        }
    }

    /// Reloads the configuration (SIGHUP).
    pub fn reload(&self) -> Result<(), supervisor::Error> {
        self.child.signal(Signal::SIGHUP)
    }

    /// Stops Postgres, beginning in `start` and escalating on schedule. Returns how it exited
    /// and the strongest mode that was needed.
    pub async fn stop(&self, start: ShutdownMode, smart: Duration, stop: Duration) -> (ExitStatus, ShutdownMode) {
        let began = tokio::time::Instant::now();
        let mut mode = start;
        tracing::info!(?mode, "stopping postgres");
        self.request(mode);
        loop {
            let next = [smart, stop, stop + KILL_GRACE].into_iter().find(|d| mode_at(start, *d, smart, stop) > mode);
            let sleep = match next {
                Some(d) => tokio::time::sleep_until(began + d),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                status = self.wait() => {
                    tracing::info!(%status, ?mode, elapsed_ms = began.elapsed().as_millis() as u64, "postgres stopped");
                    return (status, mode);
                }
                _ = sleep => {
                    mode = mode_at(start, began.elapsed(), smart, stop);
                    tracing::warn!(?mode, "postgres is still running; escalating the shutdown");
                    self.request(mode);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const S: Duration = Duration::from_secs(10);
    const T: Duration = Duration::from_secs(30);

    #[test]
    fn escalates_on_schedule() {
        use ShutdownMode::*;
        assert_eq!(mode_at(Smart, Duration::ZERO, S, T), Smart);
        assert_eq!(mode_at(Smart, S, S, T), Fast);
        assert_eq!(mode_at(Smart, T, S, T), Immediate);
        assert_eq!(mode_at(Smart, T + KILL_GRACE, S, T), Kill);
    }

    #[test]
    fn never_deescalates() {
        use ShutdownMode::*;
        assert_eq!(mode_at(Fast, Duration::ZERO, S, T), Fast);
        assert_eq!(mode_at(Immediate, S, S, T), Immediate);
    }
}
