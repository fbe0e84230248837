//! The state shared by the run loop (the only writer) and the HTTP handlers (readers).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::api::{
    CertificateStatus, HaCommandError, HaResult, InstanceRole, InstanceStatus, LeaseStatus, PostgresProcess,
    PostgresProcessState, Role, WalReceiverStatus,
};
use crate::config::{Overrides, Validated};
use crate::paths::Paths;
use crate::pgconf::Upstream;
use crate::postgres::Db;
use crate::postgres::observe::{Observed, observe};

/// How long `/status` and `/readyz` wait for Postgres before reporting it unreachable.
pub const SQL_TIMEOUT: Duration = Duration::from_secs(2);

/// The supervised postmaster, as the run loop last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessState {
    /// Lifecycle state.
    pub state: PostgresProcessState,
    /// PID while it runs.
    pub pid: Option<u32>,
    /// Unplanned restarts so far.
    pub restarts: u32,
    /// How the last postmaster exited.
    pub last_exit: Option<String>,
}

/// The role the run loop should give Postgres: set once from the configuration without a
/// lease, and by the HA loop with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    /// Not decided yet (the HA loop has not finished its first tick).
    Unknown,
    /// Accept writes. Only ever set while this instance holds a fresh lease (or has no lease).
    Primary,
    /// A read-only standby streaming from the upstream, when it is known.
    Replica(Option<Upstream>),
    /// Stopped (fast) and kept stopped: a primary handing its lease over.
    Halted,
}

/// How a log line names an upstream: `pg-1 (127.0.0.1:15432)`, or that it is not known yet.
pub(crate) fn upstream_text(up: Option<&Upstream>) -> String {
    match up {
        Some(u) => format!("{} ({}:{})", u.name, u.host, u.port),
        None => "a primary not known yet".into(),
    }
}

/// For log lines: `primary`, `replica of pg-1 (127.0.0.1:15432)`, ... (never Rust debug text).
impl std::fmt::Display for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown => f.write_str("undecided"),
            Self::Primary => f.write_str("primary"),
            Self::Replica(up) => write!(f, "replica of {}", upstream_text(up.as_ref())),
            Self::Halted => f.write_str("halted"),
        }
    }
}

/// An instance: configuration, process state and the connection to Postgres.
pub struct Instance {
    /// Where its files live.
    pub paths: Paths,
    /// The configuration file it was started with.
    pub config_path: PathBuf,
    /// Environment and flag overrides, re-applied at every reload.
    pub overrides: Overrides,
    /// The superuser connection.
    pub db: Db,
    config: RwLock<Arc<Validated>>,
    process: watch::Sender<ProcessState>,
    config_error: Mutex<Option<String>>,
    refused_parameters: Mutex<Vec<crate::api::RefusedParameter>>,
    manager_pending: Mutex<Vec<String>>,
    started: Instant,
    desired: watch::Sender<Desired>,
    commands_tx: mpsc::Sender<super::PostgresCommand>,
    commands_rx: Mutex<Option<mpsc::Receiver<super::PostgresCommand>>>,
    lease_status: Mutex<Option<LeaseStatus>>,
    fenced: std::sync::atomic::AtomicBool,
    promoted_at: Mutex<Option<crate::clock::BootInstant>>,
    primary_allowed_until: watch::Sender<Option<crate::clock::BootInstant>>,
    ha: Mutex<Option<mpsc::Sender<super::HaCommand>>>,
    /// Failsafe promises this member gave, and its acquisitions (`ha::failsafe`).
    pub failsafe: Arc<crate::failsafe::Promises>,
    paused: std::sync::atomic::AtomicBool,
    sync_names: watch::Sender<crate::pgconf::SyncNames>,
    ha_heartbeat: Mutex<Option<crate::clock::BootInstant>>,
    /// The API's certificate, once the HTTPS listener has loaded it (for `/status` and the
    /// metrics; the listener owns it).
    api_tls: std::sync::OnceLock<Arc<crate::tls::ServerTls>>,
    /// The WAL archiver, when `backup` is configured (settings apply at the manager's start).
    pub archiver: Option<Arc<crate::archive::Archiver>>,
    /// Base backups: the one running, the last one, the schedule.
    pub backups: crate::backup::Backups,
    pub(super) restorer: Mutex<Option<Arc<crate::archive::Restorer>>>,
    pub(super) applied_passwords: Mutex<std::collections::BTreeMap<String, [u8; 32]>>,
}

fn read<T: Clone>(m: &Mutex<T>) -> T {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

fn write<T>(m: &Mutex<T>, v: T) {
    *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = v;
}

impl Instance {
    /// A new instance in state `bootstrapping`.
    pub fn new(v: Validated, config_path: PathBuf, overrides: Overrides) -> Self {
        let paths = Paths::of(&v.config);
        let db = Db::new(paths.run_dir.clone(), v.port);
        let (process, _) = watch::channel(ProcessState {
            state: PostgresProcessState::Bootstrapping,
            pid: None,
            restarts: 0,
            last_exit: None,
        });
        let initial = if v.config.lease.is_some() {
            Desired::Unknown
        } else if v.config.role == Role::Primary {
            Desired::Primary
        } else {
            Desired::Replica(crate::pgconf::configured_upstream(&v))
        };
        let (desired, _) = watch::channel(initial);
        let (commands_tx, commands_rx) = mpsc::channel(4);
        let archiver = super::archiving::open_archiver(&v);
        let restorer = archiver.as_ref().map(|a| super::archiving::open_restorer(&v, a.store().clone()));
        Self {
            paths,
            config_path,
            overrides,
            db,
            config: RwLock::new(Arc::new(v)),
            process,
            config_error: Mutex::new(None),
            refused_parameters: Mutex::new(Vec::new()),
            manager_pending: Mutex::new(Vec::new()),
            started: Instant::now(),
            desired,
            commands_tx,
            commands_rx: Mutex::new(Some(commands_rx)),
            lease_status: Mutex::new(None),
            fenced: false.into(),
            promoted_at: Mutex::new(None),
            primary_allowed_until: watch::channel(None).0,
            ha: Mutex::new(None),
            failsafe: Arc::default(),
            paused: false.into(),
            sync_names: watch::channel(crate::pgconf::SyncNames::default()).0,
            ha_heartbeat: Mutex::new(None),
            api_tls: std::sync::OnceLock::new(),
            restorer: Mutex::new(restorer),
            applied_passwords: Mutex::new(std::collections::BTreeMap::new()),
            backups: crate::backup::Backups::default(),
            archiver,
        }
    }

    /// Registers the API's TLS state (once, when the HTTPS listener starts).
    pub fn set_api_tls(&self, tls: Arc<crate::tls::ServerTls>) {
        let _ = self.api_tls.set(tls);
    }

    /// The certificates in use by purpose (`api`, `api_ca`, `postgres`, `postgres_ca`): the
    /// API's as the listener holds them, Postgres' as last copied for it.
    pub fn tls_status(&self) -> std::collections::BTreeMap<String, CertificateStatus> {
        let mut out: std::collections::BTreeMap<_, _> = match self.api_tls.get() {
            Some(api) => api.in_use().into_iter().map(|(purpose, s)| (purpose.to_owned(), s)).collect(),
            None => Default::default(),
        };
        if let Some(spec) = &self.config().config.postgres.tls {
            out.extend(crate::tls::status::postgres(spec, &self.paths));
        }
        out
    }

    /// The role Postgres should have.
    pub fn desired(&self) -> Desired {
        self.desired.borrow().clone()
    }

    /// Subscribes to changes of the desired role.
    pub fn watch_desired(&self) -> watch::Receiver<Desired> {
        self.desired.subscribe()
    }

    /// Sets the desired role (the HA loop, or an operator command).
    pub fn set_desired(&self, d: Desired) {
        self.desired.send_if_modified(|cur| {
            if *cur == d {
                return false;
            }
            tracing::info!(from = %cur, to = %d, "desired role changed");
            *cur = d;
            true
        });
    }

    /// Asks the run loop to stop Postgres at once (fencing). Never blocks.
    pub fn fence_now(&self, reason: String) {
        self.command(super::PostgresCommand::Fence { reason });
    }

    /// Stops Postgres and rewinds it onto its upstream before it starts again (a replica that
    /// diverged from the primary's timeline).
    pub fn request_rewind(&self, reason: String) {
        self.command(super::PostgresCommand::Rewind { reason });
    }

    /// Queues a command for the run loop. Never blocks: with a full queue, a fence is
    /// already pending, and the command that found it full is dropped (logged).
    fn command(&self, cmd: super::PostgresCommand) {
        if let Err(e) = self.commands_tx.try_send(cmd) {
            tracing::warn!(command = ?e.into_inner(), "the run loop has commands pending; dropped");
        }
    }

    /// The receiving end of the commands; the run loop takes it once.
    pub(crate) fn take_command_receiver(&self) -> Option<mpsc::Receiver<super::PostgresCommand>> {
        self.commands_rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// Publishes the HA loop's view of the lease for `/status`.
    pub fn set_lease_status(&self, s: Option<LeaseStatus>) {
        write(&self.lease_status, s);
    }

    /// The HA loop's view of the lease.
    pub fn lease_status(&self) -> Option<LeaseStatus> {
        read(&self.lease_status)
    }

    /// Invariant 5, in the run loop: with a lease, Postgres may start (or restart) as a
    /// primary only until the renew deadline of the HA loop's last successful renew.
    pub fn may_start_primary(&self) -> bool {
        if self.config().config.lease.is_none() {
            return true;
        }
        self.primary_allowed_until.borrow().is_some_and(|t| crate::clock::BootInstant::now() < t)
    }

    /// Sets until when Postgres may run (or start) as the primary: the HA loop's claim
    /// deadline after each successful renew, `None` when the lease is not ours.
    pub(crate) fn set_primary_allowed_until(&self, t: Option<crate::clock::BootInstant>) {
        self.primary_allowed_until.send_if_modified(|cur| std::mem::replace(cur, t) != t);
    }

    /// Subscribes to changes of [`Self::may_start_primary`]'s deadline (the run loop waits on
    /// it instead of polling).
    pub(crate) fn watch_primary_allowed(&self) -> watch::Receiver<Option<crate::clock::BootInstant>> {
        self.primary_allowed_until.subscribe()
    }

    /// The HA loop calls this at every tick.
    pub(crate) fn ha_heartbeat(&self) {
        write(&self.ha_heartbeat, Some(crate::clock::BootInstant::now()));
    }

    /// `Err` when the HA loop has stalled: no tick for `stall` (liveness fails then). The `Err`
    /// is the probe's reason, the text `/healthz` answers to a person; nothing matches on it.
    pub fn ha_liveness(&self, stall: Duration) -> Result<(), String> {
        if self.config().config.lease.is_none() {
            return Ok(());
        }
        match read(&self.ha_heartbeat) {
            Some(t) if t.elapsed() > stall => {
                Err(format!("the HA loop has not run for {:.1} s", t.elapsed().as_secs_f64()))
            }
            _ => Ok(()),
        }
    }

    /// The `synchronous_standby_names` Postgres should have (rendered into its configuration).
    pub fn sync_names(&self) -> String {
        self.sync_names.borrow().render()
    }

    /// Sets the synchronous standby names; the run loop reloads Postgres.
    pub fn set_sync_names(&self, n: crate::pgconf::SyncNames) {
        self.sync_names.send_if_modified(|cur| {
            if *cur == n {
                return false;
            }
            tracing::info!(from = %cur.render(), to = %n.render(), "synchronous_standby_names");
            *cur = n;
            true
        });
    }

    /// Subscribes to changes of the synchronous standby names.
    pub fn watch_sync_names(&self) -> watch::Receiver<crate::pgconf::SyncNames> {
        self.sync_names.subscribe()
    }

    /// Whether automatic failover is paused (by the configuration or at runtime).
    pub fn is_paused(&self) -> bool {
        self.config().config.paused || self.paused.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Pauses or resumes automatic failover at runtime.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sends a command to the HA loop without waiting (dropped when the loop is busy).
    pub fn ha_notify(&self, cmd: super::HaCommand) -> bool {
        read(&self.ha).is_some_and(|tx| tx.try_send(cmd).is_ok())
    }

    /// Connects the HA loop's command channel (set once at start).
    pub(crate) fn set_ha(&self, tx: mpsc::Sender<super::HaCommand>) {
        write(&self.ha, Some(tx));
    }

    /// Sends a command to the HA loop and waits for its answer. `Err` when there is no lease
    /// (and so no HA loop) or the loop is gone.
    pub async fn ha_command<T>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<HaResult<T>>) -> super::HaCommand,
    ) -> HaResult<T> {
        let gone = |why: &str| HaCommandError::NoElection(why.to_string());
        let Some(tx) = read(&self.ha) else { return Err(gone("no lease is configured: there is no leader election")) };
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(make(reply)).await.map_err(|_| gone("the HA loop is not running"))?;
        rx.await.map_err(|_| gone("the HA loop dropped the request"))?
    }

    /// When Postgres last finished a promotion.
    pub fn promoted_at(&self) -> Option<crate::clock::BootInstant> {
        read(&self.promoted_at)
    }

    pub(crate) fn note_promoted(&self) {
        write(&self.promoted_at, Some(crate::clock::BootInstant::now()));
    }

    /// Whether an operator fenced this instance.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Fences (keeps Postgres stopped) or unfences the instance.
    pub fn set_fenced(&self, fenced: bool) {
        self.fenced.store(fenced, std::sync::atomic::Ordering::SeqCst);
        // Wake the run loop, which re-reads both the desired role and the fence.
        self.desired.send_modify(|_| {});
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Validated> {
        Arc::clone(&self.config.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub(crate) fn set_config(&self, v: Validated) {
        *self.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(v);
    }

    /// The process state.
    pub fn process(&self) -> ProcessState {
        self.process.borrow().clone()
    }

    /// Subscribes to process state changes.
    pub fn watch_process(&self) -> watch::Receiver<ProcessState> {
        self.process.subscribe()
    }

    pub(crate) fn update_process(&self, f: impl FnOnce(&mut ProcessState)) {
        self.process.send_modify(f);
    }

    pub(crate) fn set_config_error(&self, e: Option<String>) {
        write(&self.config_error, e);
    }

    pub(crate) fn set_refused_parameters(&self, refused: Vec<crate::api::RefusedParameter>) {
        write(&self.refused_parameters, refused);
    }

    pub(crate) fn set_manager_pending(&self, fields: Vec<String>) {
        write(&self.manager_pending, fields);
    }

    /// Postgres' view of itself, when it is running and answers.
    pub async fn observe(&self) -> Option<Observed> {
        if self.process().state != PostgresProcessState::Running {
            return None;
        }
        let client = self.db.client(SQL_TIMEOUT).await.ok()?;
        match observe(&client, SQL_TIMEOUT).await {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::debug!(error = %e, "cannot observe postgres");
                None
            }
        }
    }

    /// The `/status` document.
    pub async fn status(&self) -> InstanceStatus {
        let v = self.config();
        let p = self.process();
        let o = self.observe().await;
        let role = if self.is_fenced() && p.state != PostgresProcessState::Running {
            InstanceRole::Fenced
        } else {
            role_name(p.state, o.as_ref())
        };
        let mut pending = o.as_ref().map(|o| o.pending_restart.clone()).unwrap_or_default();
        pending.extend(read(&self.manager_pending));
        let o = o.unwrap_or_default();
        let accepting = !o.version.is_empty();
        InstanceStatus {
            name: v.name.clone(),
            cluster: v.cluster.clone(),
            role,
            configured_role: v.config.role,
            postgres: PostgresProcess {
                state: p.state,
                pid: p.pid,
                accepting_connections: accepting,
                version: accepting.then(|| o.version.clone()),
                restarts: p.restarts,
                last_exit: p.last_exit,
            },
            in_recovery: accepting.then_some(o.in_recovery),
            timeline: o.timeline,
            system_identifier: o.system_identifier,
            current_lsn: o.current_lsn,
            received_lsn: o.received_lsn,
            replayed_lsn: o.replayed_lsn,
            replay_lag_seconds: o.replay_lag_seconds,
            wal_receiver: o.wal_receiver,
            replication: o.replication,
            pending_restart: pending,
            config_error: read(&self.config_error),
            refused_parameters: read(&self.refused_parameters),
            lease: self.lease_status(),
            fenced: self.is_fenced(),
            priority: v.config.priority,
            paused: self.is_paused(),
            archive: self.archiver.as_ref().map(|a| a.status()),
            backup: self.archiver.as_ref().map(|_| self.backups.status()),
            tls: self.tls_status(),
            data_dir: self.paths.data_dir.display().to_string(),
            manager_pid: std::process::id(),
            manager_version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }

    /// Whether a running primary may present itself as one: with a lease, only while it holds
    /// it with a renew younger than the renew deadline.
    pub fn holds_live_lease(&self) -> bool {
        self.config().config.lease.is_none() || self.may_start_primary()
    }

    /// `Ok` when the instance can serve: Postgres accepts connections; a primary (with a
    /// lease) holds it; a replica streams. The `Err` is the probe's reason, the text `/readyz`
    /// answers to a person; nothing matches on it.
    pub async fn readiness(&self) -> Result<(), String> {
        let p = self.process();
        if p.state != PostgresProcessState::Running {
            return Err(format!("postgres is {}", state_name(p.state)));
        }
        let Some(o) = self.observe().await else {
            return Err("postgres does not accept connections".into());
        };
        if o.in_recovery {
            match &o.wal_receiver {
                Some(w) if w.status == WalReceiverStatus::Streaming => Ok(()),
                Some(w) => Err(format!("replica is not streaming (wal receiver: {})", w.status)),
                None => Err("replica is not streaming (no wal receiver)".into()),
            }
        } else if !self.holds_live_lease() {
            Err("primary without a live lease (it is being fenced)".into())
        } else {
            Ok(())
        }
    }
}

/// The role reported in `/status`.
pub fn role_name(state: PostgresProcessState, o: Option<&Observed>) -> InstanceRole {
    match (state, o) {
        (PostgresProcessState::Running, Some(o)) if o.in_recovery => InstanceRole::Replica,
        (PostgresProcessState::Running, Some(_)) => InstanceRole::Primary,
        (PostgresProcessState::Running | PostgresProcessState::Starting | PostgresProcessState::Bootstrapping, _) => {
            InstanceRole::Starting
        }
        (PostgresProcessState::Crashed, _) => InstanceRole::Crashed,
        (PostgresProcessState::Stopping, _) => InstanceRole::Stopping,
        (PostgresProcessState::Stopped, _) => InstanceRole::Stopped,
    }
}

fn state_name(s: PostgresProcessState) -> &'static str {
    s.as_str()
}

/// How long to wait before restarting Postgres after its `crashes_in_window`-th crash within
/// the last minute: at once the first time, then doubling from 1 s up to 30 s.
pub fn restart_delay(crashes_in_window: u32) -> Duration {
    match crashes_in_window {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 2).min(5)).min(Duration::from_secs(30)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_grows_and_caps() {
        let d: Vec<u64> = (1..=9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(d, vec![0, 1, 2, 4, 8, 16, 30, 30, 30]);
    }
}

#[cfg(test)]
mod display_tests {
    use super::{Desired, Upstream};

    #[test]
    fn roles_in_log_lines_read_as_words_not_rust_debug_text() {
        let up = Upstream { name: "pg-1".into(), host: "127.0.0.1".into(), port: 15432 };
        assert_eq!(Desired::Replica(Some(up)).to_string(), "replica of pg-1 (127.0.0.1:15432)");
        assert_eq!(Desired::Replica(None).to_string(), "replica of a primary not known yet");
        assert_eq!(Desired::Primary.to_string(), "primary");
        assert_eq!(Desired::Unknown.to_string(), "undecided");
    }
}
