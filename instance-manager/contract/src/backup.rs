//! Backup configuration: where WAL and base backups go ([`StoreSpec`]), how WAL is archived
//! and restored, base backups, retention and schedule ([`BackupSpec`]), and a recovery
//! bootstrap from a backup ([`RecoverySpec`]).
//!
//! Credentials are never part of the document: it names files (mounted Secrets) holding
//! them, or they come from the standard environment variables of each cloud
//! (`AWS_ACCESS_KEY_ID`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_KEY`, ...).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Continuous WAL archiving and base backups of this cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupSpec {
    /// The object store.
    pub store: StoreSpec,
    /// WAL archive and restore.
    #[serde(default)]
    pub wal: WalSpec,
    /// Base backups.
    #[serde(default)]
    pub base: BaseBackupSpec,
    /// What to keep. Absent: everything is kept.
    #[serde(default)]
    pub retention: Option<RetentionSpec>,
    /// A cron expression (`min hour day month weekday`, UTC) for scheduled base backups,
    /// taken by the lease holder only.
    #[serde(default)]
    pub schedule: Option<String>,
}

/// An object store and the credentials to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreSpec {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` or
    /// `file:///absolute/dir`. The cluster's objects go under `<prefix>/<cluster>/`.
    pub destination: String,
    /// S3 and S3-compatible stores.
    #[serde(default)]
    pub s3: Option<S3Spec>,
    /// Google Cloud Storage.
    #[serde(default)]
    pub gcs: Option<GcsSpec>,
    /// Azure Blob Storage.
    #[serde(default)]
    pub azure: Option<AzureSpec>,
    /// Client-side encryption of WAL and backup data.
    #[serde(default)]
    pub encryption: Option<EncryptionSpec>,
}

/// Client-side encryption (chunked XChaCha20-Poly1305, a random nonce prefix per object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionSpec {
    /// File holding the 32-byte key as 64 hexadecimal characters (`openssl rand -hex 32`).
    /// Losing it loses the backups; restoring needs the same key.
    pub key_file: PathBuf,
}

/// S3 settings. Unset credentials come from the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, or the pod's web identity).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Spec {
    /// The endpoint of an S3-compatible store (`https://minio.example:9000`). Absent: AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region; `us-east-1` when unset.
    #[serde(default)]
    pub region: Option<String>,
    /// File holding the access key id.
    #[serde(default)]
    pub access_key_id_file: Option<PathBuf>,
    /// File holding the secret access key.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// File holding a session token.
    #[serde(default)]
    pub session_token_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust in addition to the system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `bucket.host` addressing instead of path-style `host/bucket` (the default, which
    /// every S3-compatible store accepts).
    #[serde(default)]
    pub virtual_hosted_style: bool,
}

/// Google Cloud Storage settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcsSpec {
    /// A service account key file (JSON). Absent: `GOOGLE_SERVICE_ACCOUNT` or the workload
    /// identity of the pod.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
}

/// Azure Blob Storage settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureSpec {
    /// The storage account. Absent: `AZURE_STORAGE_ACCOUNT_NAME`.
    #[serde(default)]
    pub account_name: Option<String>,
    /// File holding the account key.
    #[serde(default)]
    pub account_key_file: Option<PathBuf>,
    /// File holding a SAS token.
    #[serde(default)]
    pub sas_token_file: Option<PathBuf>,
    /// The endpoint of an Azure-compatible store (Azurite).
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// Compression of archived WAL and base backups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd, level 3 for WAL (fast, ~4× on typical WAL).
    #[default]
    Zstd,
    /// lz4: the fastest, less compact.
    Lz4,
    /// gzip: for tools that read the archive without pgwarden.
    Gzip,
    /// Uncompressed.
    None,
}

/// WAL archive and restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WalSpec {
    /// Compression of archived segments.
    #[serde(default)]
    pub compression: Compression,
    /// Segments uploaded at once; the archiver also starts the next `.ready` segments.
    #[serde(default = "default_max_parallel")]
    pub max_parallel: u32,
    /// Segments fetched ahead into the spool when Postgres asks for one during recovery.
    #[serde(default = "default_prefetch")]
    pub restore_prefetch: u32,
}

impl Default for WalSpec {
    fn default() -> Self {
        Self {
            compression: Compression::Zstd,
            max_parallel: default_max_parallel(),
            restore_prefetch: default_prefetch(),
        }
    }
}

/// Base backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseBackupSpec {
    /// Compression of the data files.
    #[serde(default)]
    pub compression: Compression,
    /// Size of each uploaded part, in MiB.
    #[serde(default = "default_part_size", rename = "partSizeMiB", alias = "partSizeMib")]
    pub part_size_mib: u32,
    /// Parts uploaded at once.
    #[serde(default = "default_max_parallel")]
    pub max_parallel: u32,
}

impl Default for BaseBackupSpec {
    fn default() -> Self {
        Self {
            compression: Compression::Zstd,
            part_size_mib: default_part_size(),
            max_parallel: default_max_parallel(),
        }
    }
}

/// What to keep: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionSpec {
    /// Keep what is needed to recover to any point of the last N days.
    #[serde(default)]
    pub recovery_window_days: Option<u32>,
    /// Keep the last N base backups.
    #[serde(default)]
    pub count: Option<u32>,
}

/// Bootstrap an empty data directory from a base backup and archived WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecoverySpec {
    /// Where the backups are.
    pub store: StoreSpec,
    /// The cluster that took them; default: this cluster's name.
    #[serde(default)]
    pub source_cluster: Option<String>,
    /// The backup to restore; default: the latest that ends before the target.
    #[serde(default)]
    pub backup_id: Option<String>,
    /// Where replay stops; absent: the end of the archive.
    #[serde(default)]
    pub target: Option<RecoveryTarget>,
}

/// Where replay stops: at most one of `time`, `lsn`, `xid`, `name`, `immediate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecoveryTarget {
    /// A timestamp with time zone (RFC 3339, `2026-11-30T12:00:00Z`).
    #[serde(default)]
    pub time: Option<String>,
    /// A WAL position (`0/3000060`).
    #[serde(default)]
    pub lsn: Option<String>,
    /// A transaction id.
    #[serde(default)]
    pub xid: Option<String>,
    /// A restore point made with `pg_create_restore_point`.
    #[serde(default)]
    pub name: Option<String>,
    /// Stop as soon as the backup is consistent.
    #[serde(default)]
    pub immediate: bool,
    /// Whether the target itself is included (default true).
    #[serde(default = "default_true")]
    pub inclusive: bool,
}

fn default_max_parallel() -> u32 {
    4
}

fn default_prefetch() -> u32 {
    8
}

fn default_part_size() -> u32 {
    16
}

fn default_true() -> bool {
    true
}
