//! `InstanceStatus`: the `/status` document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    InstanceRole, Lsn, ReplicationState, Role, Transition, TransitionCount, TransitionKind, WalReceiverStatus,
};

/// What `GET /status` answers: the instance as its manager sees it right now.
///
/// LSNs are Postgres' text form (`0/3000060`). Fields Postgres could not be asked about
/// (it is down, or the query timed out) are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// Instance name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// `primary`, `replica`, `starting`, `stopping`, `stopped`, `crashed`, `fenced`.
    pub role: InstanceRole,
    /// The role the configuration asks for.
    pub configured_role: Role,
    /// The supervised postmaster.
    pub postgres: PostgresProcess,
    /// Whether Postgres is in recovery (a standby), as Postgres reports it.
    pub in_recovery: Option<bool>,
    /// Current timeline: the primary's, or the one a standby replays.
    pub timeline: Option<u32>,
    /// `pg_control`'s database system identifier.
    pub system_identifier: Option<String>,
    /// Primary: `pg_current_wal_lsn()`.
    pub current_lsn: Option<Lsn>,
    /// Standby: last WAL location received and flushed by the WAL receiver.
    pub received_lsn: Option<Lsn>,
    /// Standby: last WAL location replayed.
    pub replayed_lsn: Option<Lsn>,
    /// Standby: seconds since the last replayed transaction committed on the primary.
    pub replay_lag_seconds: Option<f64>,
    /// Standby: the WAL receiver, when one runs.
    pub wal_receiver: Option<WalReceiver>,
    /// Primary: connected standbys (`pg_stat_replication`), sorted by name.
    pub replication: Vec<ReplicationPeer>,
    /// Parameters changed in the configuration that take effect only after a restart.
    pub pending_restart: Vec<String>,
    /// The last configuration reload that was refused, and why.
    pub config_error: Option<String>,
    /// Postgres parameters Postgres itself refused (checked with `postgres -C` before a
    /// configuration is written): the edit was not applied and the previous values run on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_parameters: Vec<RefusedParameter>,
    /// Leadership as this instance sees it; `null` when no lease is configured.
    #[serde(default)]
    pub lease: Option<LeaseStatus>,
    /// Fenced by an operator: Postgres is kept stopped.
    #[serde(default)]
    pub fenced: bool,
    /// Failover priority (0: never promoted automatically).
    #[serde(default)]
    pub priority: u32,
    /// Automatic failover disabled.
    #[serde(default)]
    pub paused: bool,
    /// The WAL archive; `null` when no backup store is configured.
    #[serde(default)]
    pub archive: Option<ArchiveStatus>,
    /// Base backups; `null` when no backup store is configured.
    #[serde(default)]
    pub backup: Option<BackupStatus>,
    /// The certificates in use, by purpose (`api`, `api_ca`, `postgres`, `postgres_ca`);
    /// empty without `api.tls` and `postgres.tls`.
    #[serde(default)]
    pub tls: BTreeMap<String, CertificateStatus>,
    /// The data directory.
    pub data_dir: String,
    /// PID of the instance manager.
    pub manager_pid: u32,
    /// Version of the instance manager.
    pub manager_version: String,
    /// Seconds since the manager started.
    pub uptime_seconds: u64,
}

/// A parameter value Postgres refused, as Postgres said it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedParameter {
    /// The parameter (`work_mem`), when Postgres named one.
    pub parameter: Option<String>,
    /// Postgres' message, with its hint (`invalid value for parameter "work_mem": "bogus"`).
    pub message: String,
}

/// The postmaster process as the supervisor sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostgresProcess {
    /// Process state.
    pub state: PostgresProcessState,
    /// PID of the postmaster while it runs.
    pub pid: Option<u32>,
    /// Whether it accepted a connection when asked for this document.
    pub accepting_connections: bool,
    /// `server_version` as Postgres reports it.
    pub version: Option<String>,
    /// Unplanned restarts since the manager started.
    pub restarts: u32,
    /// How the last postmaster exited (`exit code 1`, `killed by SIGKILL`), if it did.
    pub last_exit: Option<String>,
}

/// Lifecycle of the supervised postmaster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostgresProcessState {
    /// Data directory being created (initdb, base backup).
    Bootstrapping,
    /// Started, not yet accepting connections.
    Starting,
    /// Running.
    Running,
    /// Exited unexpectedly; a restart is scheduled.
    Crashed,
    /// Being shut down.
    Stopping,
    /// Not running, on purpose.
    Stopped,
}

impl PostgresProcessState {
    /// The state as the API spells it (`running`, `crashed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bootstrapping => "bootstrapping",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Crashed => "crashed",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }
}

/// A standby connected to this primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationPeer {
    /// `application_name` (the standby's instance name).
    pub name: String,
    /// Client address.
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, `startup`, …
    pub state: ReplicationState,
    /// `async`, `sync`, `quorum`, `potential`.
    pub sync_state: String,
    /// Last WAL location sent.
    pub sent_lsn: Option<Lsn>,
    /// Last WAL location flushed on the standby.
    pub flush_lsn: Option<Lsn>,
    /// Last WAL location replayed on the standby.
    pub replay_lsn: Option<Lsn>,
    /// Bytes between the primary's current LSN and the standby's replay LSN.
    pub lag_bytes: Option<i64>,
    /// `replay_lag` in seconds.
    pub replay_lag_seconds: Option<f64>,
}

/// A standby's WAL receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalReceiver {
    /// `streaming`, `waiting`, `starting`, …
    pub status: WalReceiverStatus,
    /// Host it streams from.
    pub sender_host: Option<String>,
    /// Port it streams from.
    pub sender_port: Option<i32>,
}

/// The lease as one instance sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// Where the lease is kept (`file /path`, `kubernetes lease ns/name`).
    pub store: String,
    /// The holder, if any.
    pub holder: Option<String>,
    /// `leaseTransitions`: the term, stamped on everything the holder writes.
    pub term: u64,
    /// The highest term this instance has ever seen (kept beside its data directory): a lease
    /// created again after a deletion starts above the highest any member reports.
    #[serde(default)]
    pub highest_term: u64,
    /// Seconds since the lease store stopped answering, while it does not.
    #[serde(default)]
    pub store_failing_seconds: Option<f64>,
    /// Failsafe (holder): seconds since the send of the last round every member acknowledged,
    /// while the store is unavailable.
    #[serde(default)]
    pub failsafe_confirmed_age_seconds: Option<f64>,
    /// Failsafe (holder): who did not acknowledge the last round, and why.
    #[serde(default)]
    pub failsafe_refusal: Option<String>,
    /// Failsafe (member): the holder this member promised not to take the lease from.
    #[serde(default)]
    pub failsafe_promised_to: Option<String>,
    /// The last failure to write routing (the `-rw` EndpointSlice, a role label), until it
    /// is right again.
    #[serde(default)]
    pub routing_error: Option<String>,
    /// Whether this instance holds it with a fresh renew.
    pub held_by_me: bool,
    /// Seconds since the send of our last successful renew (holder only).
    pub renew_age_seconds: Option<f64>,
    /// Seconds until the lease expires as seen from here (it expires `leaseDuration` after
    /// its version last changed, on this instance's clock).
    pub expires_in_seconds: Option<f64>,
    /// The published synchronous standbys.
    pub sync_standbys: Vec<String>,
    /// Whether this instance could be promoted now.
    pub eligible: bool,
    /// Why not, when it could not.
    pub not_eligible_because: Option<String>,
    /// The last decision of the HA loop, in words (`renew`, `follow pg-1`, `wait: …`).
    pub last_decision: String,
    /// The last lease store error, if the last read failed.
    pub last_error: Option<String>,
    /// The last change of primary this instance took part in.
    pub last_transition: Option<Transition>,
    /// Successful renews of the lease by this instance since its manager started.
    #[serde(default)]
    pub renewals_total: u64,
    /// Renews that failed (store error, deadline passed, lost race) since the manager started.
    #[serde(default)]
    pub renew_failures_total: u64,
    /// The changes of primary that made this instance the primary since its manager started,
    /// by kind (`bootstrap`, `failover`, `switchover`, `promote`).
    #[serde(default)]
    pub transitions: BTreeMap<TransitionKind, TransitionCount>,
    /// The membership the HA loop applies now (`null` from a manager that predates live
    /// membership changes).
    #[serde(default)]
    pub membership: Option<MembershipStatus>,
}

/// The cluster's membership as one instance's HA loop applies it: the configuration's
/// `members`, taken live when the file changes, and the steps of a change still under way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipStatus {
    /// The members, by name, this instance included when it is listed.
    pub members: Vec<String>,
    /// Whether this instance is listed. An instance that is not (it is being removed) never
    /// takes the lease; it may go on as a replica, and a holder keeps the lease until it is
    /// switched over.
    pub listed: bool,
    /// What a membership change still waits for, in words (a removed member still asked in
    /// failsafe rounds until the lease store answers, a removed standby leaving the
    /// synchronous set, this instance holding the lease without being listed).
    #[serde(default)]
    pub pending: Vec<String>,
}

/// The WAL archive as this instance's manager sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchiveStatus {
    /// Where WAL goes (no credentials).
    pub destination: String,
    /// The newest WAL file archived by this manager.
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    pub last_archived_at: Option<jiff::Timestamp>,
    /// Files archived since the manager started.
    pub archived_total: u64,
    /// Failed attempts since the manager started.
    pub failures_total: u64,
    /// The file of the last failure.
    pub last_failed_wal: Option<String>,
    /// Why it failed.
    pub last_failure: Option<String>,
    /// When.
    pub last_failed_at: Option<jiff::Timestamp>,
    /// Files Postgres has marked ready and not yet archived (`archive_status/*.ready`).
    pub backlog: Option<u64>,
    /// Why the store is refused now (its identity document vanished: moved or deleted);
    /// `null` while it is sound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_problem: Option<String>,
    /// The last audit of the whole archive (run by the lease holder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<ArchiveAudit>,
}

/// The lease holder's periodic look at the whole archive: every segment from the oldest
/// backup's first one through the last archived one, following the timeline history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchiveAudit {
    /// When it ran.
    pub checked_at: Option<jiff::Timestamp>,
    /// The first segment looked for (the oldest backup's `startWal`).
    pub from_wal: Option<String>,
    /// The last one.
    pub to_wal: Option<String>,
    /// Segments a recovery to the end needs and the archive lacks.
    pub missing_segments: u64,
    /// The first of them.
    pub first_missing: Option<String>,
    /// Backups in the catalog.
    pub backups: u64,
    /// Why the audit could not run (the store failed, its identity or catalog vanished).
    pub error: Option<String>,
}

/// Base backups as this instance's manager sees them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupStatus {
    /// The newest backup of the catalog (taken by any instance), as last read.
    pub last_backup: Option<LastBackup>,
    /// The id of the backup this instance is taking now.
    pub running: Option<String>,
    /// The last backup of this instance that failed, and why.
    pub last_failure: Option<String>,
    /// When it failed.
    pub last_failed_at: Option<jiff::Timestamp>,
    /// The last retention run that failed, and why (cleared by a successful run).
    pub retention_error: Option<String>,
    /// When the schedule fires next (on the lease holder only).
    pub next_scheduled_at: Option<jiff::Timestamp>,
    /// Backups of this instance that failed since its manager started.
    #[serde(default)]
    pub failures_total: u64,
    /// The oldest point a recovery can reach: when the oldest backup of the catalog ended.
    #[serde(default)]
    pub first_recoverability_point: Option<jiff::Timestamp>,
}

/// The newest complete backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastBackup {
    /// Its id.
    pub id: String,
    /// The instance that took it.
    pub instance: String,
    /// When `pg_backup_stop` returned.
    pub stopped_at: jiff::Timestamp,
    /// Seconds since then.
    pub age_seconds: u64,
    /// Bytes of the data directory it holds.
    #[serde(default)]
    pub data_bytes: u64,
    /// Bytes it takes in the store (compressed).
    #[serde(default)]
    pub stored_bytes: u64,
    /// Data pages it found failing checksum verification; absent when not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_failures: Option<u64>,
}

/// A certificate in use: the API's (`api`) or Postgres' (`postgres`) server certificate, or
/// the CA of either (`api_ca`, `postgres_ca`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// The configured file it comes from (`api.tls.certFile`, `postgres.tls.caFile`, …).
    pub file: String,
    /// The configured private key of a server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Serial number (hex).
    pub serial: String,
    /// `notBefore`.
    pub not_before: jiff::Timestamp,
    /// `notAfter`: from then on clients refuse it. For a CA file holding several
    /// certificates, the one that expires first.
    pub not_after: jiff::Timestamp,
    /// Rotations taken into use since the manager started (the API's files only: Postgres'
    /// are copied at a configuration reload, whose refusal is `config_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reloads_total: Option<u64>,
    /// Rotations refused since the manager started (the previous certificate stays in use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_failures_total: Option<u64>,
    /// Why the last rotation was refused; cleared when one is taken into use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload_error: Option<String>,
}
