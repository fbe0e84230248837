//! What to keep: a pure planner ([`plan`]) over the catalog and the archive's names, and
//! [`apply`], which lists the store, plans and deletes.
//!
//! - **By count** N: the newest N complete backups are kept.
//! - **By recovery window** D days: every backup needed to recover to any point of the last
//!   D days — those that stopped inside the window, and the newest one that stopped before it
//!   starts, or right at its start (recovery to the window's first instant starts from it).
//! - The newest backup is never deleted, whatever the policy.
//! - Archived WAL older than the oldest kept backup's `startWal` is deleted: on that backup's
//!   timeline, the segments before it; of older timelines, only a timeline whose segments all
//!   precede it (a timeline that goes on past it branched off inside what is kept, and stays
//!   whole). Later timelines and every `.history` file are kept. Without any complete backup,
//!   no WAL is deleted.
//! - A backup directory without `backup.json` (an interrupted backup) is deleted once its
//!   newest object is a day old, unless it is the backup in progress here. A directory whose
//!   `backup.json` exists but cannot be read is never touched.
//!
//! Backups are deleted before WAL, so a failure midway never leaves a kept backup without
//! its WAL.

use std::collections::BTreeMap;

use object_store::path::Path;

use super::catalog::{self, BackupInfo, CatalogError};
use crate::api::RetentionSpec;
use crate::archive::{SegmentId, Store, StoreError, WalName, parse_wal_name};

/// How old an interrupted backup's newest object must be before it is removed.
pub const INCOMPLETE_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// A backup directory in the store, complete or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDir {
    /// The backup id (the directory's name).
    pub id: String,
    /// Whether it holds a `backup.json` object (readable or not).
    pub has_description: bool,
    /// When its newest object was written.
    pub newest: jiff::Timestamp,
}

/// What retention keeps and deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Complete backups kept, oldest first.
    pub keep: Vec<String>,
    /// Complete backups deleted, oldest first.
    pub delete: Vec<String>,
    /// Interrupted backup directories deleted.
    pub delete_incomplete: Vec<String>,
    /// The oldest kept backup's first WAL segment: WAL before it goes.
    pub wal_horizon: Option<SegmentId>,
    /// Archived WAL files deleted, by name.
    pub delete_wal: Vec<String>,
}

/// Which complete backups `policy` keeps at `now`: `(keep, delete)`, ids oldest first.
/// `backups` may be in any order.
pub fn choose_backups(
    policy: &RetentionSpec,
    backups: &[BackupInfo],
    now: jiff::Timestamp,
) -> (Vec<String>, Vec<String>) {
    let mut sorted: Vec<&BackupInfo> = backups.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let newest = sorted.last().map(|b| b.id.clone());
    let kept = |b: &BackupInfo| -> bool {
        if Some(&b.id) == newest.as_ref() {
            return true;
        }
        if let Some(days) = policy.recovery_window_days {
            let start = now - jiff::SignedDuration::from_hours(24 * i64::from(days));
            let base = sorted.iter().filter(|o| o.stopped_at <= start).max_by_key(|o| (o.stopped_at, o.id.clone()));
            return b.stopped_at >= start || base.is_some_and(|o| o.id == b.id);
        }
        if let Some(count) = policy.count {
            let count = count.max(1) as usize;
            return sorted.iter().rev().take(count).any(|o| o.id == b.id);
        }
        true
    };
    let (keep, delete): (Vec<&BackupInfo>, Vec<&BackupInfo>) = sorted.iter().partition(|b| kept(b));
    (keep.into_iter().map(|b| b.id.clone()).collect(), delete.into_iter().map(|b| b.id.clone()).collect())
}

/// The archived WAL files (by name) older than `horizon`, as the module documentation says.
pub fn wal_before(horizon: SegmentId, names: &[String]) -> Vec<String> {
    let position = |s: &SegmentId| (s.log, s.seg);
    let segment_of = |name: &str| match parse_wal_name(name)? {
        WalName::Segment(s) | WalName::Partial(s) | WalName::BackupHistory(s) => Some(s),
        WalName::History(_) => None,
    };
    // Older timelines: deleted whole, only when every file precedes the horizon.
    let mut older_done: BTreeMap<u32, bool> = BTreeMap::new();
    for s in names.iter().filter_map(|n| segment_of(n)).filter(|s| s.timeline < horizon.timeline) {
        let before = position(&s) < position(&horizon);
        older_done.entry(s.timeline).and_modify(|all| *all &= before).or_insert(before);
    }
    names
        .iter()
        .filter(|n| {
            segment_of(n).is_some_and(|s| {
                if s.timeline == horizon.timeline {
                    position(&s) < position(&horizon)
                } else {
                    s.timeline < horizon.timeline && older_done.get(&s.timeline).copied().unwrap_or(false)
                }
            })
        })
        .cloned()
        .collect()
}

/// Interrupted backup directories to delete at `now` (never `in_progress`).
pub fn incomplete_to_delete(dirs: &[BackupDir], in_progress: Option<&str>, now: jiff::Timestamp) -> Vec<String> {
    dirs.iter()
        .filter(|d| !d.has_description && Some(d.id.as_str()) != in_progress && now - INCOMPLETE_GRACE > d.newest)
        .map(|d| d.id.clone())
        .collect()
}

/// The whole plan: backups by `policy`, interrupted directories, and the WAL in `wal`
/// (archived file names) that the oldest kept backup does not need.
pub fn plan(
    policy: &RetentionSpec,
    backups: &[BackupInfo],
    dirs: &[BackupDir],
    wal: &[String],
    in_progress: Option<&str>,
    now: jiff::Timestamp,
) -> Plan {
    let (keep, delete) = choose_backups(policy, backups, now);
    let horizon = keep.first().and_then(|id| backups.iter().find(|b| &b.id == id)).and_then(|b| {
        match parse_wal_name(&b.start_wal) {
            Some(WalName::Segment(s)) => Some(s),
            _ => {
                tracing::warn!(backup = %b.id, start_wal = %b.start_wal, "unreadable start WAL: no WAL is deleted");
                None
            }
        }
    });
    Plan {
        delete_wal: horizon.map(|h| wal_before(h, wal)).unwrap_or_default(),
        delete_incomplete: incomplete_to_delete(dirs, in_progress, now),
        wal_horizon: horizon,
        keep,
        delete,
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Backups deleted.
    pub backups: Vec<String>,
    /// Interrupted backup directories deleted.
    pub incomplete: Vec<String>,
    /// WAL objects deleted.
    pub wal_objects: usize,
}

/// Why retention could not be applied: nothing after the failed step was deleted, and the
/// next run starts again.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The catalog could not be read, or a backup not deleted.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The store failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The backup directories in the store, from a listing of `base/`.
pub async fn backup_dirs(store: &Store) -> Result<Vec<BackupDir>, StoreError> {
    let base = store.layout.base_dir();
    let objects = store.list(&base).await?;
    let mut dirs: BTreeMap<String, BackupDir> = BTreeMap::new();
    for meta in objects {
        let Some(rest) = meta.location.prefix_match(&base) else { continue };
        let parts: Vec<String> = rest.map(|p| p.as_ref().to_string()).collect();
        let [id, ..] = parts.as_slice() else { continue };
        let newest = jiff::Timestamp::from_millisecond(meta.last_modified.timestamp_millis()).unwrap_or_default();
        let is_description = parts.len() == 2 && parts[1] == "backup.json";
        let dir = dirs.entry(id.clone()).or_insert(BackupDir { id: id.clone(), has_description: false, newest });
        dir.has_description |= is_description;
        dir.newest = dir.newest.max(newest);
    }
    Ok(dirs.into_values().collect())
}

/// Applies `policy` to `store` now; `in_progress` is a backup being taken here.
pub async fn apply(
    store: &Store,
    policy: &RetentionSpec,
    in_progress: Option<&str>,
) -> Result<Applied, RetentionError> {
    let backups = catalog::list(store).await?;
    let dirs = backup_dirs(store).await?;
    let wal_objects = store.list(&store.layout.wal_dir()).await?;
    let mut by_name: BTreeMap<String, Vec<Path>> = BTreeMap::new();
    for meta in wal_objects {
        let layout = &store.layout;
        if let Some(name) =
            layout.wal_name_of(&meta.location).map(|(n, _)| n).or_else(|| layout.diverged_of(&meta.location))
        {
            by_name.entry(name).or_default().push(meta.location);
        }
    }
    let names: Vec<String> = by_name.keys().cloned().collect();
    let plan = plan(policy, &backups, &dirs, &names, in_progress, jiff::Timestamp::now());
    let mut applied = Applied::default();
    for id in &plan.delete {
        catalog::delete(store, id).await?;
        tracing::info!(backup = %id, "retention deleted a backup");
        applied.backups.push(id.clone());
    }
    for id in &plan.delete_incomplete {
        for meta in store.list(&store.layout.backup_dir(id)).await? {
            store.delete(&meta.location).await?;
        }
        tracing::info!(backup = %id, "retention deleted an interrupted backup");
        applied.incomplete.push(id.clone());
    }
    for name in &plan.delete_wal {
        for path in by_name.get(name).into_iter().flatten() {
            store.delete(path).await?;
            applied.wal_objects += 1;
        }
    }
    if applied.wal_objects > 0 {
        tracing::info!(
            deleted = applied.wal_objects,
            horizon = %plan.wal_horizon.map(|h| h.file_name()).unwrap_or_default(),
            "retention deleted WAL older than the oldest kept backup"
        );
    }
    Ok(applied)
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
