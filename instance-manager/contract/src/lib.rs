//! The contract between the instance manager, its CLI and the operator: serde types only, in a
//! crate of their own so that the operator reads them without compiling the manager.
//!
//! - [`InstanceConfig`]: the configuration file the operator renders into a ConfigMap (YAML,
//!   camelCase keys like every Kubernetes document); its JSON Schema comes with
//!   `schemars::schema_for!(InstanceConfig)`.
//! - [`InstanceStatus`] and the other HTTP documents: JSON with snake_case keys, read by the
//!   CLI, by peers and by the operator. Their values are typed ([`InstanceRole`], [`Lsn`],
//!   [`TransitionKind`], [`WalReceiverStatus`]) and serialised as the words and Postgres text
//!   they always were.
//! - The control routes' bodies and answers, and what the HA loop answers a command
//!   ([`HaResult`]).
//! - [`BackupInfo`]: `backup.json`, a base backup as the store describes it.
//! - [`ErrorBody`]: every HTTP error, `{ "error": "...", "hint": "..." }`.
//!
//! Nothing here does I/O; loading and validating a configuration is the manager's `config`
//! module's job.

mod backup;
mod backup_info;
mod backups;
mod config;
mod control;
mod error;
mod lsn;
mod metrics;
mod replication;
mod role;
mod status;
mod transition;

pub use backup::{
    AzureSpec, BackupSpec, BaseBackupSpec, Compression, EncryptionSpec, GcsSpec, RecoverySpec, RecoveryTarget,
    RetentionSpec, S3Spec, StoreSpec, WalSpec,
};
pub use backup_info::{BackupFile, BackupInfo, BadPage};
pub use backups::{BackupList, BackupRequest, BackupStarted, ListedBackup, RetentionVerdict};
pub use config::{
    ApiSpec, ApiTlsSpec, BootstrapSpec, ClientAuth, CredentialsSpec, DEFAULT_FENCE_BUDGET, DEFAULT_LEASE_DURATION,
    DEFAULT_PG_PORT, DEFAULT_RENEW_DEADLINE, DEFAULT_RETRY_PERIOD, DEFAULT_RUN_DIR, DataDurability, InstanceConfig,
    LeaseBackend, LeaseSpec, Member, PostgresSpec, PostgresTlsSpec, PrimaryEndpoint, ReplicaSource, Role, ShutdownSpec,
    SynchronousSpec,
};
pub use control::{
    FailsafeAnswer, FailsafeRequest, FenceAnswer, HaCommandError, HaResult, PauseAnswer, PromoteAnswer, PromoteOutcome,
    PromoteRequest, SwitchoverDone, SwitchoverRequest, SyncLeaveAnswer, SyncLeaveRequest, SyncLeaveState, TickAnswer,
};
pub use error::ErrorBody;
pub use lsn::{Lsn, LsnError};
pub use metrics::{DEFAULT_METRICS_PORT, MetricsSpec};
pub use replication::{ReplicationState, WalReceiverStatus};
pub use role::{InstanceRole, RoleAnswer, UnknownRole};
pub use status::{
    ArchiveAudit, ArchiveStatus, BackupStatus, CertificateStatus, InstanceStatus, LastBackup, LeaseStatus,
    MembershipStatus, PostgresProcess, PostgresProcessState, RefusedParameter, ReplicationPeer, WalReceiver,
};
pub use transition::{Transition, TransitionCount, TransitionKind};

#[cfg(test)]
mod wire_tests;
