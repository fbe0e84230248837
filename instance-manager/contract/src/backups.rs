//! The documents of `POST /backup`, `GET /backups` and `DELETE /backups/{id}`. A backup itself
//! is its `backup.json` ([`BackupInfo`], camelCase like every document in the
//! store).

use serde::{Deserialize, Serialize};

use crate::BackupInfo;

/// Body of `POST /backup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupRequest {
    /// Take it on this replica. Refused on the primary (call a replica), and a backup without
    /// it is refused on a replica (call the primary): the caller chooses where.
    #[serde(default)]
    pub from_standby: bool,
    /// Answer when the backup is done, with its `backup.json` (the default); `false` answers
    /// `202` with its id at once.
    #[serde(default = "yes")]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

impl Default for BackupRequest {
    fn default() -> Self {
        Self { from_standby: false, wait: true }
    }
}

/// Answer of `POST /backup` with `wait: false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStarted {
    /// The backup's id.
    pub id: String,
}

/// Answer of `GET /backups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupList {
    /// The store (no credentials).
    pub destination: String,
    /// The retention policy in words, when one is configured.
    pub retention: Option<String>,
    /// Complete backups, oldest first.
    pub backups: Vec<ListedBackup>,
}

/// One backup of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedBackup {
    /// Its `backup.json`.
    #[serde(flatten)]
    pub info: BackupInfo,
    /// What retention would do with it now; absent without a policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionVerdict>,
}

/// What retention does with a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionVerdict {
    /// Kept.
    Keep,
    /// Deleted at the next run.
    Expired,
}
