//! The catalog of base backups: `base/<id>/backup.json` in the store (see `archive::layout`).
//!
//! A backup exists once its `backup.json` is written, and that is written last, after every
//! data object is complete: a backup interrupted midway leaves objects without a
//! description, which listing ignores and retention removes.
//!
//! A backup's data is one tar stream of the data directory (`data.tar[.zst|.lz4|.gz]`), with
//! the `backup_label` (and `tablespace_map`) that `pg_backup_stop` returned, and without
//! what Postgres recreates (`pg_wal` content, `postmaster.pid`, temporary files, the
//! `pg_tblspc` links). Each tablespace is a tar of its own, `tablespace-<oid>.tar[.ext]`,
//! listed after the data directory's and unpacked at the location `tablespace_map` gives for
//! `<oid>` (Postgres recreates the link from the map). Restoring needs the WAL from
//! `startWal` to `stopWal` from the archive.
//!
//! On a cluster with data checksums, `checksumFailures` counts the data pages whose checksum
//! was wrong when the backup read them (absent: not verified — no data checksums, or a
//! backup from before verification), and `checksumFailedPages` lists the first of them. Such
//! a backup is kept (its pages are stored as read), but it was reported as failed.

use crate::api::Lsn;
pub use crate::api::{BackupFile, BackupInfo};
use crate::archive::{Store, StoreError};

/// Why the catalog cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The store failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A `backup.json` that does not parse.
    #[error("backup {id}: backup.json: {source}")]
    Unreadable {
        /// The backup.
        id: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A description that cannot be written.
    #[error("backup {id}: cannot encode backup.json: {source}")]
    Encode {
        /// The backup.
        id: String,
        /// Why.
        source: serde_json::Error,
    },
    /// No backup fits: none by that id, or none before the recovery target.
    #[error("{0}")]
    NoneFits(String),
}

/// Every complete backup in `store`, oldest first. Directories without a readable
/// `backup.json` (an interrupted backup) are skipped.
pub async fn list(store: &Store) -> Result<Vec<BackupInfo>, CatalogError> {
    let objects = store.list(&store.layout.base_dir()).await?;
    let mut out = Vec::new();
    for meta in objects.iter().filter(|m| m.location.filename() == Some("backup.json")) {
        if let Some(bytes) = store.get(&meta.location).await? {
            match serde_json::from_slice::<BackupInfo>(&bytes) {
                Ok(info) => out.push(info),
                Err(e) => tracing::warn!(object = %meta.location, error = %e, "unreadable backup description skipped"),
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The backup `id`.
pub async fn get(store: &Store, id: &str) -> Result<Option<BackupInfo>, CatalogError> {
    match store.get(&store.layout.backup_json(id)).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| CatalogError::Unreadable { id: id.to_string(), source }),
    }
}

/// Writes `backup.json`, the step that makes a backup exist.
pub async fn publish(store: &Store, info: &BackupInfo) -> Result<(), CatalogError> {
    let body =
        serde_json::to_vec_pretty(info).map_err(|source| CatalogError::Encode { id: info.id.clone(), source })?;
    Ok(store.overwrite(&store.layout.backup_json(&info.id), body.into()).await?)
}

/// Deletes backup `id`: its description first (so it stops existing at once), then its data.
pub async fn delete(store: &Store, id: &str) -> Result<(), CatalogError> {
    store.delete(&store.layout.backup_json(id)).await?;
    let objects = store.list(&store.layout.backup_dir(id)).await?;
    for meta in objects {
        store.delete(&meta.location).await?;
    }
    Ok(())
}

/// A new backup id for a backup starting at `t`.
pub fn new_id(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// The backup to restore for a recovery target: `id` when given; else the latest whose end
/// is before the target time or LSN (any backup ends before an xid or name target is
/// reached, as far as can be known: the latest one).
pub fn choose<'a>(
    backups: &'a [BackupInfo],
    id: Option<&str>,
    target: Option<&crate::api::RecoveryTarget>,
) -> Result<&'a BackupInfo, CatalogError> {
    if let Some(id) = id {
        return backups
            .iter()
            .find(|b| b.id == id)
            .ok_or_else(|| CatalogError::NoneFits(format!("there is no backup {id}")));
    }
    let time = target.and_then(|t| t.time.as_deref()).and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let lsn = target.and_then(|t| t.lsn.as_deref()).and_then(|l| l.parse::<Lsn>().ok());
    backups
        .iter()
        .rev()
        .find(|b| time.is_none_or(|t| b.stopped_at <= t) && lsn.is_none_or(|l| b.stop_lsn <= l))
        .ok_or_else(|| {
            CatalogError::NoneFits(match (time, lsn) {
                (Some(t), _) => format!("no backup ended before {t}"),
                (_, Some(_)) => "no backup ended before the target LSN".to_string(),
                _ => "there is no backup".to_string(),
            })
        })
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::{BadPage, Compression, RecoveryTarget};

    pub(crate) fn info(id: &str, stopped: &str, stop_lsn: &str) -> BackupInfo {
        BackupInfo {
            id: id.into(),
            cluster: "main".into(),
            instance: "pg-1".into(),
            from_standby: false,
            system_identifier: "1".into(),
            postgres_version: "15.18".into(),
            postgres_version_num: 150018,
            timeline: 1,
            segment_size: 16 << 20,
            start_lsn: "0/2000028".parse().unwrap(),
            stop_lsn: stop_lsn.parse().unwrap(),
            start_wal: "000000010000000000000002".into(),
            stop_wal: "000000010000000000000002".into(),
            started_at: stopped.parse().unwrap(),
            stopped_at: stopped.parse().unwrap(),
            compression: Compression::Zstd,
            files: vec![],
            data_bytes: 0,
            stored_bytes: 0,
            checksum_failures: None,
            checksum_failed_pages: vec![],
        }
    }

    fn target(time: Option<&str>, lsn: Option<&str>) -> RecoveryTarget {
        RecoveryTarget {
            time: time.map(Into::into),
            lsn: lsn.map(Into::into),
            xid: None,
            name: None,
            immediate: false,
            inclusive: true,
        }
    }

    #[test]
    fn the_latest_backup_before_the_target_is_chosen() {
        let all = [
            info("a", "2026-11-30T10:00:00Z", "0/3000000"),
            info("b", "2026-11-30T11:00:00Z", "0/5000000"),
            info("c", "2026-11-30T12:00:00Z", "0/7000000"),
        ];
        assert_eq!(choose(&all, None, None).unwrap().id, "c");
        assert_eq!(choose(&all, None, Some(&target(Some("2026-11-30T11:30:00Z"), None))).unwrap().id, "b");
        assert_eq!(choose(&all, None, Some(&target(None, Some("0/5000000")))).unwrap().id, "b");
        assert_eq!(choose(&all, Some("a"), None).unwrap().id, "a");
        assert!(
            choose(&all, None, Some(&target(Some("2026-11-30T09:00:00Z"), None)))
                .unwrap_err()
                .to_string()
                .contains("no backup")
        );
        assert!(choose(&all, Some("zz"), None).unwrap_err().to_string().contains("zz"));
    }

    #[test]
    fn checksum_failures_are_optional_in_backup_json() {
        let mut b = info("a", "2026-11-30T10:00:00Z", "0/3000000");
        let old = serde_json::to_value(&b).unwrap();
        assert!(old.get("checksumFailures").is_none() && old.get("checksumFailedPages").is_none(), "{old}");
        assert_eq!(serde_json::from_value::<BackupInfo>(old).unwrap(), b, "a backup.json without them parses");
        b.checksum_failures = Some(1);
        b.checksum_failed_pages = vec![BadPage { file: "base/5/16384".into(), block: 3 }];
        let new = serde_json::to_value(&b).unwrap();
        assert_eq!(new["checksumFailures"], 1);
        assert_eq!(new["checksumFailedPages"], serde_json::json!([{"file": "base/5/16384", "block": 3}]));
        assert_eq!(serde_json::from_value::<BackupInfo>(new).unwrap(), b);
    }

    #[test]
    fn ids_sort_by_time() {
        let a = new_id("2026-11-30T09:05:01Z".parse().unwrap());
        let b = new_id("2026-11-30T10:00:00Z".parse().unwrap());
        assert_eq!(a, "20261130T090501Z");
        assert!(a < b);
    }
}
