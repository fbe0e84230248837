//! `backup.json`: a base backup as the catalog in the store describes it, and as `GET /backups`
//! and `backup create` show it (camelCase like every document in the store).

use serde::{Deserialize, Serialize};

use crate::{Compression, Lsn};

/// `backup.json`: everything needed to choose and restore a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupInfo {
    /// Sortable id: the start time, `YYYYMMDDTHHMMSSZ`.
    pub id: String,
    /// The cluster that took it.
    pub cluster: String,
    /// The instance it was taken on.
    pub instance: String,
    /// Whether it was taken on a standby.
    pub from_standby: bool,
    /// `pg_control`'s system identifier, decimal.
    pub system_identifier: String,
    /// `server_version` (`15.18`).
    pub postgres_version: String,
    /// `server_version_num` (`150018`).
    pub postgres_version_num: u32,
    /// The timeline the backup started on.
    pub timeline: u32,
    /// Bytes per WAL segment.
    pub segment_size: u64,
    /// `pg_backup_start`'s LSN.
    pub start_lsn: Lsn,
    /// `pg_backup_stop`'s LSN: recovery must replay at least this far to be consistent.
    pub stop_lsn: Lsn,
    /// The first WAL file recovery needs.
    pub start_wal: String,
    /// The WAL file holding `stop_lsn`.
    pub stop_wal: String,
    /// When `pg_backup_start` returned.
    pub started_at: jiff::Timestamp,
    /// When `pg_backup_stop` returned.
    pub stopped_at: jiff::Timestamp,
    /// Compression of the data objects.
    pub compression: Compression,
    /// The data objects, in restore order.
    pub files: Vec<BackupFile>,
    /// Bytes of the data directory read.
    pub data_bytes: u64,
    /// Bytes stored (compressed).
    pub stored_bytes: u64,
    /// Data pages whose checksum was wrong when read (see the module docs); absent when
    /// checksums were not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_failures: Option<u64>,
    /// The first of those pages (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksum_failed_pages: Vec<BadPage>,
}

/// One data object of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupFile {
    /// Object name inside the backup's directory (`data.tar.zst`).
    pub name: String,
    /// Stored size in bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

/// A page whose checksum is wrong, as `backup.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BadPage {
    /// The segment file, relative to the data directory (`base/5/16384.1`; a tablespace's
    /// as `pg_tblspc/<oid>/PG_15_.../5/16400`).
    pub file: String,
    /// The page within that file (its offset / 8192), as `pg_basebackup` reports it; in the
    /// relation it is `segno × 131072 +` this.
    pub block: u32,
}
