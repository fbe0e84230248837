//! What `/status` shows about this instance's base backups: the one running, the newest and
//! oldest of the catalog, the last failure, the next scheduled one. Written by the backup jobs
//! (`jobs::backups`), read by the API and the metrics.

use std::sync::{Mutex, PoisonError};

use super::catalog::BackupInfo;
use crate::api::{BackupStatus, LastBackup};

/// The backups of this instance: the slot of the one running, and what `/status` shows.
#[derive(Debug, Default)]
pub struct Backups {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) running: Option<String>,
    last: Option<Newest>,
    /// When the oldest backup of the catalog ended (the first recoverability point).
    pub(crate) oldest_stopped_at: Option<jiff::Timestamp>,
    pub(crate) last_failure: Option<(String, jiff::Timestamp)>,
    pub(crate) failures_total: u64,
    pub(crate) retention_error: Option<String>,
    pub(crate) next_scheduled_at: Option<jiff::Timestamp>,
}

/// The newest backup of the catalog, as `/status` and the metrics show it.
#[derive(Debug, Clone)]
struct Newest {
    id: String,
    instance: String,
    stopped_at: jiff::Timestamp,
    data_bytes: u64,
    stored_bytes: u64,
    checksum_failures: Option<u64>,
}

impl From<&BackupInfo> for Newest {
    fn from(i: &BackupInfo) -> Self {
        Self {
            id: i.id.clone(),
            instance: i.instance.clone(),
            stopped_at: i.stopped_at,
            data_bytes: i.data_bytes,
            stored_bytes: i.stored_bytes,
            checksum_failures: i.checksum_failures,
        }
    }
}

impl Backups {
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `/status` shows.
    pub fn status(&self) -> BackupStatus {
        let s = self.state();
        let now = jiff::Timestamp::now();
        BackupStatus {
            last_backup: s.last.as_ref().map(|n| LastBackup {
                id: n.id.clone(),
                instance: n.instance.clone(),
                stopped_at: n.stopped_at,
                age_seconds: now.duration_since(n.stopped_at).as_secs().max(0) as u64,
                data_bytes: n.data_bytes,
                stored_bytes: n.stored_bytes,
                checksum_failures: n.checksum_failures,
            }),
            running: s.running.clone(),
            last_failure: s.last_failure.as_ref().map(|(e, _)| e.clone()),
            last_failed_at: s.last_failure.as_ref().map(|(_, t)| *t),
            retention_error: s.retention_error.clone(),
            next_scheduled_at: s.next_scheduled_at,
            failures_total: s.failures_total,
            first_recoverability_point: s.oldest_stopped_at,
        }
    }

    /// The backup running now.
    pub fn running(&self) -> Option<String> {
        self.state().running.clone()
    }

    pub(crate) fn note_backup(&self, info: &BackupInfo) {
        let mut s = self.state();
        if s.last.as_ref().is_none_or(|n| n.id <= info.id) {
            s.last = Some(info.into());
        }
        s.oldest_stopped_at.get_or_insert(info.stopped_at);
    }

    pub(crate) fn note_failure(&self, why: String) {
        let mut s = self.state();
        s.last_failure = Some((why, jiff::Timestamp::now()));
        s.failures_total += 1;
    }

    /// The newest and the oldest backup of the catalog (sorted oldest first).
    pub(crate) fn set_catalog(&self, all: &[BackupInfo]) {
        let mut s = self.state();
        s.last = all.last().map(Newest::from);
        s.oldest_stopped_at = all.first().map(|i| i.stopped_at);
    }
}
