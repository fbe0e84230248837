//! The contract between the instance manager, its CLI and the operator: serde types only.
//!
//! - [`InstanceConfig`]: the configuration file the operator renders into a ConfigMap (YAML,
//!   camelCase keys like every Kubernetes document).
//! - [`InstanceStatus`] and the other HTTP documents: JSON with snake_case keys, read by the
//!   CLI, by peers and by the operator.
//! - [`ErrorBody`]: every HTTP error, `{ "error": "...", "hint": "..." }`.
//!
//! Nothing here does I/O; loading and validating a configuration is the `config` module's job.

mod backup;
mod backups;
mod config;
mod error;
mod metrics;
mod status;

pub use backup::{
    AzureSpec, BackupSpec, BaseBackupSpec, Compression, EncryptionSpec, GcsSpec, RecoverySpec, RecoveryTarget,
    RetentionSpec, S3Spec, StoreSpec, WalSpec,
};
pub use backups::{BackupList, BackupRequest, BackupStarted, ListedBackup, RetentionVerdict};
pub use config::{
    ApiSpec, ApiTlsSpec, BootstrapSpec, ClientAuth, CredentialsSpec, DataDurability, InstanceConfig, LeaseBackend,
    LeaseSpec, Member, PostgresSpec, PostgresTlsSpec, PrimaryEndpoint, ReplicaSource, Role, ShutdownSpec,
    SynchronousSpec,
};
pub use error::ErrorBody;
pub use metrics::{DEFAULT_METRICS_PORT, MetricsSpec};
pub use status::{
    ArchiveAudit, ArchiveStatus, BackupStatus, CertificateStatus, InstanceStatus, LastBackup, LeaseStatus,
    PostgresProcess, PostgresProcessState, RefusedParameter, ReplicationPeer, Transition, TransitionCount, WalReceiver,
};
