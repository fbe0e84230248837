//! The `PostgresBackup` custom resource (`pgwarden.io/v1alpha1`, short name `pgb`): one
//! on-demand base backup of a `PostgresCluster`, asked for by applying an object, as
//! CloudNativePG's `Backup` is. The operator carries it out (`crate::backup_reconcile`) and
//! reports it in the status, with field names close to CloudNativePG's (`phase`, `backupId`,
//! `startedAt`, `stoppedAt`, `beginLSN`, `endLSN`, `beginWal`, `endWal`, `instanceID`, `error`).
//!
//! The spec is immutable: an object asks for one backup. A new backup is a new object.
//!
//! ```text
//!   New ──(asked the primary)──▶ Started ──(in the catalog)──▶ Completed
//!    │                             │
//!    └────────(cannot start)───────┴──(failed, or ended with its instance)──▶ Failed
//! ```

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::spec::LocalObjectReference;

/// One base backup of a cluster, taken once by its primary and recorded in the status.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pgwarden.io",
    version = "v1alpha1",
    kind = "PostgresBackup",
    plural = "postgresbackups",
    shortname = "pgb",
    namespaced,
    status = "PostgresBackupStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster.name","description":"The cluster backed up"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"New, Started, Completed or Failed"}"#,
    printcolumn = r#"{"name":"Backup ID","type":"string","jsonPath":".status.backupId","description":"The backup's id in the store"}"#,
    printcolumn = r#"{"name":"Started","type":"date","jsonPath":".status.startedAt","description":"When the backup started"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = spec_rules()))]
pub struct PostgresBackupSpec {
    /// The cluster to back up, in this namespace. Its `backup.store` receives the backup.
    /// Required; immutable like the whole spec.
    pub cluster: LocalObjectReference,
    /// How the backup is taken. Default and only method today: `baseBackup`, a base backup
    /// of the primary streamed to the cluster's backup store.
    #[serde(default)]
    pub method: BackupMethod,
}

/// How a backup is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BackupMethod {
    /// `pg_backup_start`/`pg_backup_stop` on the primary, the data directory streamed to the
    /// cluster's backup store (docs/architecture.md §8).
    #[default]
    BaseBackup,
}

/// The spec is fixed once the object exists.
fn spec_rules() -> Value {
    json!([{
        "rule": "self == oldSelf",
        "message": "spec is immutable: a PostgresBackup asks for one backup; create a new PostgresBackup for another",
    }])
}

/// Where the backup is: `New` (waiting to be asked for), `Started` (asked of an instance),
/// `Completed` (in the store's catalog) or `Failed` (`error` says why). Absent: `New`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupPhase {
    /// Not asked for yet: waiting for the cluster, its primary, or a backup running there.
    #[default]
    New,
    /// Asked of an instance (`instanceID`); `backupId` once the instance answered.
    Started,
    /// In the store's catalog: restorable.
    Completed,
    /// Ended without a usable backup; `error` says why.
    Failed,
}

impl BackupPhase {
    /// Completed and Failed are final: nothing is done any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// The instance a backup was asked of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceId {
    /// The instance (its Pod's name).
    pub pod_name: String,
    /// The Pod's uid when the backup was asked: a re-created Pod (another uid) has lost the
    /// backup its predecessor was taking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

/// What the operator knows of the backup. Written by the operator only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupStatus {
    /// Where the backup is (see [`BackupPhase`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// What the operator is waiting for, for a person (`New`, `Started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why the backup failed (`Failed`), with a hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The backup's id in the store (`YYYYMMDDTHHMMSSZ`, its start time): what
    /// `bootstrap.recovery.backupId` names to restore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The instance that was asked to take it (the primary then).
    #[serde(default, rename = "instanceID", skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<InstanceId>,
    /// When the backup started (`pg_backup_start`, RFC 3339); until the instance reports
    /// it, when the operator asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended (`pg_backup_stop`, RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// The WAL location where it began (`pg_backup_start`).
    #[serde(default, rename = "beginLSN", skip_serializing_if = "Option::is_none")]
    pub begin_lsn: Option<String>,
    /// The WAL location where it ended: a restore replays at least this far.
    #[serde(default, rename = "endLSN", skip_serializing_if = "Option::is_none")]
    pub end_lsn: Option<String>,
    /// The first WAL file a restore needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_wal: Option<String>,
    /// The WAL file holding `endLSN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_wal: Option<String>,
    /// The timeline it began on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// Bytes of the data directory it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Bytes it takes in the store (compressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<i64>,
    /// The store it is in (no credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_path: Option<String>,
    /// Since when the instance taking it has not answered (RFC 3339); absent while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl PostgresBackupStatus {
    /// The phase (`New` when absent).
    pub fn phase(&self) -> BackupPhase {
        self.phase.unwrap_or_default()
    }
}
