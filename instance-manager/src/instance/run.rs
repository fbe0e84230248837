//! The loop of `instance-manager run`: bootstrap, start in the desired role, watch, restart,
//! follow role changes, fence, stop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::command::PostgresCommand;
use super::start::{bootstrap, prepare_start};
use super::state::{Desired, Instance, restart_delay};
use crate::api::PostgresProcessState;
use crate::postgres::{Postmaster, ShutdownMode};
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
    PgData(#[from] crate::pgdata::Error),
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
    /// Postgres refuses the configured parameters.
    #[error(transparent)]
    Parameters(#[from] crate::pgconf::check::CheckError),
    /// A recovery bootstrap failed.
    #[error("recovery bootstrap failed: {0}")]
    Recovery(#[from] crate::backup::recover::RecoverError),
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

pub(super) struct Signals {
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
    pub(super) async fn next(&mut self) -> ShutdownMode {
        tokio::select! {
            _ = self.term.recv() => ShutdownMode::Smart,
            _ = self.int.recv() => ShutdownMode::Fast,
            _ = self.quit.recv() => ShutdownMode::Immediate,
        }
    }
}

/// The channels the loop listens to besides the postmaster.
struct Inbox {
    signals: Signals,
    reload: mpsc::Receiver<()>,
    role: RoleInbox,
    sync: watch::Receiver<crate::pgconf::SyncNames>,
}

/// What the HA loop tells the run loop (see `command`).
struct RoleInbox {
    desired: watch::Receiver<Desired>,
    commands: mpsc::Receiver<PostgresCommand>,
    /// Until when a primary may start (the HA loop's claim deadline).
    primary_allowed: watch::Receiver<Option<crate::clock::BootInstant>>,
    /// A rewind was requested: the next start as a replica rewinds first.
    rewind_next: bool,
}

/// Starts the supervisor of Postgres and its tools (before anything spawns one: the HA loop's
/// deadman, the run loop): the run directory exists, and tools left running by a killed
/// predecessor are stopped; ours never outlive this process.
pub fn prepare(instance: &Instance) -> Result<Supervisor, Error> {
    let sup = Supervisor::start()?;
    instance.config().os_user.ensure_run_dir(&instance.paths.run_dir, crate::paths::RUN_DIR_MODE)?;
    let paths = &instance.paths;
    let work_dirs: Vec<_> =
        [paths.data_dir.clone(), paths.staging_dir()].into_iter().chain(paths.wal_staging_dir()).collect();
    sup.guard_tools(&paths.run_dir, &work_dirs);
    Ok(sup)
}

/// Runs the instance until a signal stops it: the one owner of the postmaster. With a lease,
/// the HA loop (`ha::start`, started before) sets the desired role and sends the commands.
pub async fn run(instance: Arc<Instance>, sup: Supervisor) -> Result<ExitReason, Error> {
    let v = instance.config();
    let (reload_tx, reload) = mpsc::channel(1);
    // The configuration file and the password files: a rotated Secret changes the role's
    // password in Postgres and the replicas' password file, without a restart.
    let creds = &v.config.credentials;
    let mut watched = vec![instance.config_path.clone()];
    watched.extend(
        [&creds.superuser_password_file, &creds.app_password_file, &creds.replication_password_file]
            .into_iter()
            .flatten()
            .cloned(),
    );
    // Postgres' certificate: a rotated file is copied again and Postgres reloaded.
    if let Some(t) = &v.config.postgres.tls {
        watched.extend([t.cert_file.clone(), t.key_file.clone()].into_iter().chain(t.ca_file.clone()));
    }
    let _watch = match crate::config::watch_files(&watched, reload_tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the configuration and password files; changes need a restart");
            None
        }
    };
    let commands = instance.take_command_receiver().unwrap_or_else(|| mpsc::channel(1).1);
    let mut inbox = Inbox {
        signals: Signals::new()?,
        reload,
        role: RoleInbox {
            desired: instance.watch_desired(),
            commands,
            primary_allowed: instance.watch_primary_allowed(),
            rewind_next: false,
        },
        sync: instance.watch_sync_names(),
    };
    tokio::select! {
        r = bootstrap(&sup, &instance, &mut inbox.role.desired) => r?,
        mode = inbox.signals.next() => {
            // Interrupted tools were killed with the bootstrap; the instance does not exist.
            let reason = stopped_idle(&instance, mode, None);
            if crate::pgdata::is_initialized(&instance.paths.data_dir) {
                return Ok(reason);
            }
            return Ok(ExitReason::Unclean("stopped before the data directory was created".into()));
        }
    }
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut last_crash: Option<ExitStatus> = None;
    loop {
        let start = tokio::select! {
            d = startable(&instance, &sup, &mut inbox.role, &mut inbox.reload) => d,
            mode = inbox.signals.next() => return Ok(stopped_idle(&instance, mode, last_crash)),
        };
        let v = instance.config();
        tracing::info!(role = %start, "starting postgres");
        prepare_start(&sup, &instance, &v, &start, inbox.role.rewind_next).await?;
        if matches!(start, StartAs::Replica(Some(_))) {
            inbox.role.rewind_next = false;
        }
        let pm = Postmaster::start(&sup, &v, &instance.paths)?;
        instance.db.set_port(pm.port).await;
        instance.update_process(|p| {
            p.state = PostgresProcessState::Starting;
            p.pid = Some(pm.pid());
        });
        let running = match start {
            StartAs::Primary => Desired::Primary,
            StartAs::Replica(up) => Desired::Replica(up),
        };
        let status = match supervise(&instance, &pm, running, &mut inbox).await {
            Supervised::Stopped(reason) => return Ok(reason),
            Supervised::Restart | Supervised::Fenced => {
                last_crash = None;
                continue;
            }
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
        last_crash = Some(status);
        tracing::error!(%status, restart_in_ms = delay.as_millis() as u64, "postgres exited unexpectedly; restarting it");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            mode = inbox.signals.next() => return Ok(stopped_idle(&instance, mode, last_crash)),
        }
    }
}

fn stopped_idle(instance: &Instance, mode: ShutdownMode, crashed: Option<ExitStatus>) -> ExitReason {
    tracing::info!(?mode, "stop requested while postgres was not running");
    instance.update_process(|p| p.state = PostgresProcessState::Stopped);
    match crashed {
        Some(status) => ExitReason::Unclean(format!("postgres had exited: {status}")),
        None => ExitReason::Clean,
    }
}

/// How Postgres may be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAs {
    /// Writable: only with a fresh lease (or no lease configured).
    Primary,
    /// A read-only standby of the upstream, when known.
    Replica(Option<crate::pgconf::Upstream>),
}

/// For log lines: `primary`, `replica of pg-1 (127.0.0.1:15432)`.
impl std::fmt::Display for StartAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Primary => f.write_str("primary"),
            Self::Replica(up) => write!(f, "replica of {}", super::state::upstream_text(up.as_ref())),
        }
    }
}

/// Invariant 5 at every (re)start: what Postgres may be started as, given the desired role,
/// a fence, and whether a fresh lease allows a primary. `None`: do not start.
pub fn start_as(desired: &Desired, fenced: bool, may_be_primary: bool) -> Option<StartAs> {
    match desired {
        _ if fenced => None,
        Desired::Primary if may_be_primary => Some(StartAs::Primary),
        Desired::Replica(up) => Some(StartAs::Replica(up.clone())),
        Desired::Primary | Desired::Unknown | Desired::Halted => None,
    }
}

/// Waits until Postgres may be started: see [`start_as`]. Woken by a change of the desired
/// role, of the fence, or of the lease's claim deadline (a renew); commands that arrive
/// meanwhile find nothing to stop, and a rewind is remembered for the next start. An edited
/// configuration is applied meanwhile (a membership change must not wait for Postgres).
async fn startable(
    instance: &Instance,
    sup: &crate::supervisor::Supervisor,
    inbox: &mut RoleInbox,
    reload: &mut mpsc::Receiver<()>,
) -> StartAs {
    loop {
        let d = inbox.desired.borrow_and_update().clone();
        inbox.primary_allowed.borrow_and_update();
        if let Some(start) = start_as(&d, instance.is_fenced(), instance.may_start_primary()) {
            return start;
        }
        tokio::select! {
            _ = inbox.desired.changed() => {}
            _ = inbox.primary_allowed.changed() => {}
            Some(()) = reload.recv() => super::reload::apply(instance, sup, None, &d).await,
            Some(cmd) = inbox.commands.recv() => match cmd {
                PostgresCommand::Fence { reason } => tracing::debug!(reason, "fence requested while postgres is stopped"),
                PostgresCommand::Rewind { reason } => {
                    tracing::info!(reason, "rewind requested while postgres is stopped: at the next start");
                    inbox.rewind_next = true;
                }
            },
        }
    }
}

/// A handover asked of the HA loop: its answer is the new primary's name.
type HandoverRequest<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = crate::api::HaResult<crate::api::SwitchoverDone>> + Send + 'a>>;

enum Supervised {
    Stopped(ExitReason),
    Exited(ExitStatus),
    Restart,
    Fenced,
}

/// Watches a started postmaster until it exits, a signal stops it, or its role changes in a
/// way that needs a restart.
async fn supervise(instance: &Arc<Instance>, pm: &Postmaster, mut running: Desired, inbox: &mut Inbox) -> Supervised {
    let ready = wait_accepting(instance);
    tokio::pin!(ready);
    let mut is_ready = false;
    let mut sync_pending = false;
    inbox.role.desired.borrow_and_update();
    inbox.sync.borrow_and_update();
    // SIGTERM on a lease-holding primary: a handover runs first (the HA loop halts Postgres
    // through the desired role), and the manager exits once the lease is handed over. The
    // request is a future polled here, by this loop: no task of its own.
    let mut handover: Option<HandoverRequest<'_>> = None;
    // SIGTERM on a synchronous standby: it leaves the primary's synchronous set first
    // (`sync_leave`), so that commits do not wait for it while it is down.
    let mut leaving: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> = None;
    loop {
        tokio::select! {
            status = pm.wait() => return Supervised::Exited(status),
            mode = inbox.signals.next() => {
                if handover.is_none() && mode == ShutdownMode::Smart && running == Desired::Primary && instance.config().config.lease.is_some() {
                    tracing::info!("SIGTERM on the primary: handing the lease over before stopping");
                    handover = Some(Box::pin(instance.ha_command(|reply| super::HaCommand::Switchover { target: None, reply })));
                    continue;
                }
                if leaving.is_none() && mode == ShutdownMode::Smart && matches!(running, Desired::Replica(_)) && super::sync_leave::applies(instance) {
                    tracing::info!("SIGTERM on a synchronous standby: leaving the synchronous set before stopping");
                    leaving = Some(Box::pin(super::sync_leave::leave(instance)));
                    continue;
                }
                return Supervised::Stopped(stop_and_release(instance, pm, &mut inbox.signals, mode).await);
            }
            () = async { match leaving.as_mut() { Some(l) => l.await, None => std::future::pending().await } }, if leaving.is_some() => {
                return Supervised::Stopped(stop_and_release(instance, pm, &mut inbox.signals, ShutdownMode::Smart).await);
            }
            r = async { match handover.as_mut() { Some(h) => h.await, None => std::future::pending().await } }, if handover.is_some() => {
                match r {
                    Ok(target) => tracing::info!(%target, "handover done"),
                    Err(e) => tracing::warn!(error = %e, "handover not possible; stopping anyway"),
                }
                return Supervised::Stopped(stop_and_release(instance, pm, &mut inbox.signals, ShutdownMode::Smart).await);
            }
            Some(cmd) = inbox.role.commands.recv() => {
                execute(instance, pm, cmd, &mut inbox.role.rewind_next).await;
                return Supervised::Fenced;
            }
            _ = &mut ready, if !is_ready => {
                is_ready = true;
                if sync_pending {
                    let upstream = match &running { Desired::Replica(up) => up.clone(), _ => None };
                    super::roles::rerender(instance, pm, upstream.as_ref());
                }
                super::roles::on_ready(instance, &running).await;
            }
            Some(()) = inbox.reload.recv() => super::reload::apply(instance, pm.supervisor(), Some(pm), &running).await,
            Ok(()) = inbox.sync.changed() => {
                inbox.sync.borrow_and_update();
                // A SIGHUP before the postmaster installed its handlers would kill it: a
                // postmaster that is not ready yet reads the new file when it starts up.
                if is_ready {
                    let upstream = match &running { Desired::Replica(up) => up.clone(), _ => None };
                    super::roles::rerender(instance, pm, upstream.as_ref());
                } else {
                    sync_pending = true;
                }
            }
            Ok(()) = inbox.role.desired.changed() => {
                // The HA loop sends its fence request before it sets the replica role, and both
                // may be ready here at once: the fence must win. The role change alone would
                // stop Postgres with a fast shutdown, which waits for the WAL senders of a
                // partitioned primary (up to stopTimeout), and would leave the fence request
                // queued to kill the next Postgres.
                if let Ok(cmd) = inbox.role.commands.try_recv() {
                    execute(instance, pm, cmd, &mut inbox.role.rewind_next).await;
                    return Supervised::Fenced;
                }
                let want = inbox.role.desired.borrow_and_update().clone();
                match super::roles::change_role(instance, pm, &running, &want, is_ready).await {
                    super::roles::Change::Done => running = want,
                    super::roles::Change::Ignored => {}
                    super::roles::Change::NeedsRestart => {
                        let reason = stop(instance, pm, &mut inbox.signals, ShutdownMode::Fast).await;
                        if let Some(request) = handover.take() {
                            // Exiting: wait (bounded) for the lease to reach the target.
                            match tokio::time::timeout(Duration::from_secs(30), request).await {
                                Ok(Ok(target)) => tracing::info!(%target, "handover done"),
                                Ok(Err(e)) => tracing::warn!(error = %e, "handover did not complete"),
                                Err(_) => tracing::warn!("handover did not complete within 30 s"),
                            }
                            return Supervised::Stopped(reason);
                        }
                        return Supervised::Restart;
                    }
                }
                if instance.is_fenced() {
                    fence(instance, pm, "fenced by an operator").await;
                    return Supervised::Fenced;
                }
            }
        }
    }
}

/// Stops Postgres, then gives up the lease if this instance holds it, so that a replica can
/// take over at once instead of after the lease expires.
async fn stop_and_release(
    instance: &Instance,
    pm: &Postmaster,
    signals: &mut Signals,
    mode: ShutdownMode,
) -> ExitReason {
    let reason = stop(instance, pm, signals, mode).await;
    // Alone, keep the lease: released, the next start would come up as a standby and promote
    // itself onto a new timeline.
    let v = instance.config();
    if v.config.lease.is_some() && v.config.members.iter().any(|m| m.name != v.name) {
        let release = instance.ha_command(|reply| super::HaCommand::Release { reply });
        match tokio::time::timeout(Duration::from_secs(5), release).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the lease"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }
    reason
}

/// Waits until Postgres accepts connections. `postmaster.pid` says when it is `ready` (or a
/// `standby` accepting reads), so no connection is tried earlier (each would log a FATAL).
async fn wait_accepting(instance: &Instance) {
    loop {
        let pidfile = std::fs::read_to_string(instance.paths.data_dir.join("postmaster.pid")).unwrap_or_default();
        let status = pidfile.lines().nth(7).map(str::trim).unwrap_or("");
        if matches!(status, "ready" | "standby") && instance.db.accepting(Duration::from_secs(1)).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Carries out a command on a running postmaster: both stop it at once; a rewind also makes
/// the next start as a replica rewind first.
async fn execute(instance: &Instance, pm: &Postmaster, cmd: PostgresCommand, rewind_next: &mut bool) {
    match cmd {
        PostgresCommand::Fence { reason } => fence(instance, pm, &reason).await,
        PostgresCommand::Rewind { reason } => {
            *rewind_next = true;
            fence(instance, pm, &reason).await;
        }
    }
}

/// Stops Postgres at once: immediate shutdown, then SIGKILL of its whole process group when it
/// is not gone within half the fence budget.
async fn fence(instance: &Instance, pm: &Postmaster, reason: &str) {
    tracing::warn!(reason, "fencing: stopping postgres immediately");
    instance.update_process(|p| p.state = PostgresProcessState::Stopping);
    let budget = instance.config().fence_budget();
    let status = pm.kill_within(budget / 2).await;
    instance.update_process(|p| {
        p.state = PostgresProcessState::Stopped;
        p.pid = None;
        p.last_exit = Some(status.to_string());
    });
    instance.db.reset().await;
}

/// Stops Postgres: the requested mode first, escalating on schedule; a further signal jumps
/// to an immediate shutdown.
async fn stop(instance: &Instance, pm: &Postmaster, signals: &mut Signals, mode: ShutdownMode) -> ExitReason {
    instance.update_process(|p| p.state = PostgresProcessState::Stopping);
    // Our own connection would keep a smart shutdown waiting.
    instance.db.reset().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_starts_writable_only_with_a_fresh_lease() {
        assert_eq!(start_as(&Desired::Primary, false, true), Some(StartAs::Primary));
        assert_eq!(start_as(&Desired::Primary, false, false), None, "no fresh lease: not even as a replica");
        assert_eq!(start_as(&Desired::Primary, true, true), None, "fenced");
        assert_eq!(start_as(&Desired::Halted, false, true), None, "halted for a handover");
        assert_eq!(start_as(&Desired::Unknown, false, true), None, "undecided");
        assert_eq!(start_as(&Desired::Replica(None), false, false), Some(StartAs::Replica(None)));
        assert_eq!(start_as(&Desired::Replica(None), true, false), None);
    }
}
