//! The loop of `instance-manager run`: bootstrap, start, watch, restart, stop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use super::state::{Instance, restart_delay};
use crate::api::{PostgresProcessState, Role};
use crate::config::Validated;
use crate::pgdata;
use crate::postgres::{Postmaster, ShutdownMode, roles};
use crate::supervisor::{ExitStatus, Supervisor};

/// Crashes older than this no longer count towards the restart backoff.
const CRASH_WINDOW: Duration = Duration::from_secs(60);

/// Fatal errors of the run loop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Supervisor problems (SIGCHLD handler, spawning).
    #[error(transparent)]
    Supervisor(#[from] crate::supervisor::Error),
    /// The data directory could not be created or prepared.
    #[error(transparent)]
    PgData(#[from] pgdata::Error),
    /// A directory could not be prepared.
    #[error(transparent)]
    OsUser(#[from] crate::osuser::Error),
    /// Configuration files could not be written.
    #[error("cannot write Postgres configuration into {path}: {source}")]
    Render {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// How the run loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// Postgres was stopped cleanly (smart or fast shutdown, exit code 0), or never started.
    Clean,
    /// Postgres needed an immediate shutdown or a SIGKILL, or exited with an error.
    Unclean(String),
}

struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
}

impl Signals {
    fn new() -> Result<Self, Error> {
        let s = |k| signal(k).map_err(Error::Signals);
        Ok(Self { term: s(SignalKind::terminate())?, int: s(SignalKind::interrupt())?, quit: s(SignalKind::quit())? })
    }

    /// The next stop request: SIGTERM smart, SIGINT fast, SIGQUIT immediate.
    async fn next(&mut self) -> ShutdownMode {
        tokio::select! {
            _ = self.term.recv() => ShutdownMode::Smart,
            _ = self.int.recv() => ShutdownMode::Fast,
            _ = self.quit.recv() => ShutdownMode::Immediate,
        }
    }
}

/// Runs the instance until a signal stops it.
pub async fn run(instance: Arc<Instance>) -> Result<ExitReason, Error> {
    let sup = Supervisor::start()?;
    let mut signals = Signals::new()?;
    let v = instance.config();
    v.os_user.ensure_dir(&instance.paths.run_dir, 0o750)?;
    let (reload_tx, mut reload_rx) = mpsc::channel(1);
    let _watch = match crate::config::watch_config(&instance.config_path, reload_tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the configuration file; changes need a restart");
            None
        }
    };
    tokio::select! {
        r = bootstrap(&sup, &instance) => r?,
        mode = signals.next() => {
            tracing::info!(?mode, "stop requested during bootstrap");
            instance.update_process(|p| p.state = PostgresProcessState::Stopped);
            return Ok(ExitReason::Clean);
        }
    }
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    loop {
        let v = instance.config();
        prepare_start(&v, &instance)?;
        let pm = Postmaster::start(&sup, &v, &instance.paths)?;
        instance.db.set_port(pm.port).await;
        instance.update_process(|p| {
            p.state = PostgresProcessState::Starting;
            p.pid = Some(pm.pid());
        });
        let status = match supervise(&instance, &pm, &mut signals, &mut reload_rx).await {
            Supervised::Stopped(reason) => return Ok(reason),
            Supervised::Exited(status) => status,
        };
        instance.db.reset().await;
        let now = Instant::now();
        crashes.retain(|t| now.duration_since(*t) < CRASH_WINDOW);
        crashes.push_back(now);
        let delay = restart_delay(crashes.len() as u32);
        instance.update_process(|p| {
            p.state = PostgresProcessState::Crashed;
            p.pid = None;
            p.restarts += 1;
            p.last_exit = Some(status.to_string());
        });
        tracing::error!(%status, restart_in_ms = delay.as_millis() as u64, "postgres exited unexpectedly; restarting it");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            mode = signals.next() => {
                tracing::info!(?mode, "stop requested while postgres was down");
                instance.update_process(|p| p.state = PostgresProcessState::Stopped);
                return Ok(ExitReason::Unclean(format!("postgres had exited: {status}")));
            }
        }
    }
}

enum Supervised {
    Stopped(ExitReason),
    Exited(ExitStatus),
}

/// Watches a started postmaster until it exits or a signal stops it.
async fn supervise(
    instance: &Arc<Instance>,
    pm: &Postmaster,
    signals: &mut Signals,
    reload_rx: &mut mpsc::Receiver<()>,
) -> Supervised {
    let ready = wait_accepting(instance);
    tokio::pin!(ready);
    let mut is_ready = false;
    loop {
        tokio::select! {
            status = pm.wait() => return Supervised::Exited(status),
            mode = signals.next() => return Supervised::Stopped(stop(instance, pm, signals, mode).await),
            _ = &mut ready, if !is_ready => {
                is_ready = true;
                on_ready(instance).await;
            }
            Some(()) = reload_rx.recv() => super::reload::apply(instance, Some(pm)).await,
        }
    }
}

async fn wait_accepting(instance: &Instance) {
    while !instance.db.accepting(Duration::from_secs(1)).await {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn on_ready(instance: &Instance) {
    instance.update_process(|p| p.state = PostgresProcessState::Running);
    tracing::info!("postgres accepts connections");
    let v = instance.config();
    if v.config.role != Role::Primary {
        return;
    }
    match instance.db.client(Duration::from_secs(5)).await {
        Ok(client) => {
            if let Err(e) = roles::ensure_roles(&client, &v).await {
                tracing::error!(error = %e, "cannot create or update roles and the application database");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot connect to create roles"),
    }
}

/// Stops Postgres: the requested mode first, escalating on schedule; a further signal jumps
/// to an immediate shutdown.
async fn stop(instance: &Instance, pm: &Postmaster, signals: &mut Signals, mode: ShutdownMode) -> ExitReason {
    instance.update_process(|p| p.state = PostgresProcessState::Stopping);
    let v = instance.config();
    let smart = Duration::from_secs(v.config.shutdown.smart_timeout_seconds);
    let deadline = Duration::from_secs(v.config.shutdown.stop_timeout_seconds);
    let stopping = pm.stop(mode, smart, deadline);
    tokio::pin!(stopping);
    let mut forced = false;
    let (status, used) = loop {
        tokio::select! {
            r = &mut stopping => break r,
            again = signals.next() => {
                tracing::warn!(signal_mode = ?again, "second stop request: immediate shutdown");
                forced = true;
                pm.request(ShutdownMode::Immediate);
            }
        }
    };
    instance.update_process(|p| {
        p.state = PostgresProcessState::Stopped;
        p.pid = None;
        p.last_exit = Some(status.to_string());
    });
    instance.db.reset().await;
    let used = if forced { used.max(ShutdownMode::Immediate) } else { used };
    if status.success() && used <= ShutdownMode::Fast {
        ExitReason::Clean
    } else {
        ExitReason::Unclean(format!("postgres stopped with {status} after a {used:?} shutdown"))
    }
}

/// Creates the data directory when it is empty: initdb for a primary, a base backup of the
/// primary for a replica (retried until the primary answers).
async fn bootstrap(sup: &Supervisor, instance: &Instance) -> Result<(), Error> {
    let v = instance.config();
    if pgdata::is_initialized(&instance.paths.data_dir) {
        return Ok(());
    }
    match (v.config.role, &v.config.primary) {
        (Role::Replica, Some(primary)) => {
            let port = u16::try_from(primary.port).unwrap_or(5432);
            let mut delay = Duration::from_secs(1);
            loop {
                tracing::info!(host = %primary.host, port, "cloning the primary with pg_basebackup");
                match pgdata::clone_from(sup, &v, &instance.paths, &primary.host, port).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "cannot clone the primary yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
        _ => {
            tracing::info!(data_dir = %instance.paths.data_dir.display(), "initialising a new data directory");
            pgdata::initdb(sup, &v, &instance.paths).await?;
        }
    }
    tracing::info!("data directory ready");
    Ok(())
}

/// Renders the configuration and signal files for a start in the configured role.
fn prepare_start(v: &Validated, instance: &Instance) -> Result<(), Error> {
    let paths = &instance.paths;
    crate::pgconf::write_all(v, paths, &paths.data_dir)
        .map_err(|source| Error::Render { path: paths.data_dir.display().to_string(), source })?;
    pgdata::set_standby_signal(v, paths, v.config.role == Role::Replica)?;
    Ok(())
}
