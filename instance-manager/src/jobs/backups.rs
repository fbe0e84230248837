//! Backups of one instance: at most one at a time, each in a task of its own (a client that
//! gives up does not stop it), retention after each, the state `/status` shows, and the
//! schedule.
//!
//! ```text
//!   POST /backup ─┐                         ┌─▶ take ─▶ retention ─▶ last backup, failure
//!   schedule ─────┴─▶ start: store? role? ──┤
//!                     slot free? (else 409) └─▶ answer: the id (or wait for the task)
//! ```
//!
//! The schedule fires only on the instance that should write: the lease holder, or without
//! a lease the instance configured `role: primary`. Every other instance sleeps through it.
//! A missed firing (not the holder then, Postgres down) is skipped, not caught up.
//!
//! A backup that found data pages with wrong checksums is kept (it is published, and the
//! newest copy of everything else), but it counts as a failure, as `pg_basebackup` exits
//! non-zero then: `/status` shows it as the last failure, the failure count (and metric) goes
//! up, `POST /backup` answers an error, and retention does not run after it, so it never
//! pushes an older, clean backup out.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::api::{PostgresProcessState, Role};
use crate::archive::Store;
use crate::backup::catalog::BackupInfo;
use crate::backup::{retention, take};
use crate::instance::Instance;

/// How often the schedule task wakes up to re-read the configuration and the clock.
const SCHEDULE_TICK: Duration = Duration::from_secs(30);
/// How often the newest backup of the catalog is re-read for `/status`.
const CATALOG_REFRESH: Duration = Duration::from_secs(600);

/// Why a backup cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// No `backup.store`.
    #[error("no backup store is configured")]
    NotConfigured,
    /// Postgres does not run or answer.
    #[error("postgres is not running ({0})")]
    NotRunning(String),
    /// A standby backup was asked of the primary.
    #[error("this instance is the primary; a backup from a standby must be asked of a replica")]
    OnPrimary,
    /// A primary backup was asked of a replica.
    #[error("this instance is a replica; ask the primary, or ask for a backup from a standby (fromStandby)")]
    OnReplica,
    /// Another backup runs.
    #[error("backup {0} is already running on this instance")]
    Busy(String),
    /// The store cannot be read.
    #[error("the backup store: {0}")]
    Store(String),
}

/// A backup that started.
pub struct Started {
    /// Its id.
    pub id: String,
    /// Its end: its `backup.json`, or why it failed.
    pub done: JoinHandle<Result<BackupInfo, take::Error>>,
}

/// Clears the running slot when the backup task ends, however it ends.
struct Slot(Arc<Instance>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.backups.state().running = None;
    }
}

/// The backup store, when one is configured.
pub fn store(instance: &Instance) -> Option<Store> {
    instance.archiver.as_ref().map(|a| a.store().clone())
}

/// Starts a backup of `instance` (on a standby when `from_standby`), then retention.
pub async fn start(instance: &Arc<Instance>, from_standby: bool) -> Result<Started, StartError> {
    let store = store(instance).ok_or(StartError::NotConfigured)?;
    let v = instance.config();
    let spec = v.config.backup.clone().ok_or(StartError::NotConfigured)?;
    {
        let mut s = instance.backups.state();
        if let Some(id) = &s.running {
            return Err(StartError::Busy(id.clone()));
        }
        s.running = Some("(starting)".into());
    }
    let slot = Slot(Arc::clone(instance));
    let p = instance.process();
    if p.state != PostgresProcessState::Running {
        return Err(StartError::NotRunning(p.state.as_str().into()));
    }
    let observed = instance.observe().await.ok_or_else(|| StartError::NotRunning("it does not answer".into()))?;
    match (observed.in_recovery, from_standby) {
        (false, true) => return Err(StartError::OnPrimary),
        (true, false) => return Err(StartError::OnReplica),
        _ => {}
    }
    let id = free_id(&store).await?;
    instance.backups.state().running = Some(id.clone());
    let instance = Arc::clone(instance);
    let task_id = id.clone();
    let done = tokio::spawn(async move {
        let _slot = slot;
        let src = take::Source {
            db: &instance.db,
            data_dir: &instance.paths.data_dir,
            instance: &v.name,
            cluster: &v.cluster,
            archiver: instance.archiver.as_deref(),
        };
        let result = take::take(&src, &store, &spec.base, &task_id).await;
        let corrupt = match &result {
            Ok(info) => {
                instance.backups.note_backup(info);
                let corrupt = corrupt_pages(info);
                if let Some(why) = &corrupt {
                    instance.backups.note_failure(format!("{task_id}: {why}"));
                }
                corrupt.is_some()
            }
            Err(e) => {
                tracing::error!(backup = %task_id, error = %e, "base backup failed");
                instance.backups.note_failure(format!("{task_id}: {e}"));
                false
            }
        };
        if result.is_ok()
            && !corrupt
            && let Some(policy) = &spec.retention
        {
            run_retention(&instance, &store, policy).await;
        }
        result
    });
    Ok(Started { id, done })
}

/// What is wrong with a backup that found data pages failing checksum verification.
pub fn corrupt_pages(info: &BackupInfo) -> Option<String> {
    let failures = info.checksum_failures.filter(|n| *n > 0)?;
    let first = info
        .checksum_failed_pages
        .first()
        .map(|p| format!(", the first in {} block {}", p.file, p.block))
        .unwrap_or_default();
    Some(format!(
        "{failures} data page(s) failed checksum verification{first}: the data directory is corrupt; \
         the backup is kept, with the pages in its backup.json (checksumFailedPages)"
    ))
}

/// A new backup id no backup of the store has: the start time, waiting for the next second
/// when this one is taken (two backups in one second).
async fn free_id(store: &Store) -> Result<String, StartError> {
    for _ in 0..3 {
        let id = crate::backup::catalog::new_id(jiff::Timestamp::now());
        let taken = store.list(&store.layout.backup_dir(&id)).await.map_err(|e| StartError::Store(e.to_string()))?;
        if taken.is_empty() {
            return Ok(id);
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    Err(StartError::Store("no free backup id (a backup directory exists for every recent second)".into()))
}

async fn run_retention(instance: &Instance, store: &Store, policy: &crate::api::RetentionSpec) {
    let result = retention::apply(store, policy, instance.backups.running().as_deref()).await;
    let deleted = result.is_ok();
    {
        let mut s = instance.backups.state();
        match result {
            Ok(_) => s.retention_error = None,
            Err(e) => {
                tracing::warn!(error = %e, "retention failed");
                s.retention_error = Some(e.to_string());
            }
        }
    }
    if deleted {
        // The oldest backups may be gone: the first recoverability point moved.
        refresh_last_backup(instance, store).await;
    }
}

/// Re-reads the newest backup of the catalog (for `/status`).
pub async fn refresh_last_backup(instance: &Instance, store: &Store) {
    match crate::backup::catalog::list(store).await {
        Ok(all) => instance.backups.set_catalog(&all),
        Err(e) => tracing::debug!(error = %e, "cannot read the backup catalog"),
    }
}

/// Whether this instance runs the schedule now: the lease holder, or without a lease the
/// configured primary.
pub fn runs_schedule(instance: &Instance) -> bool {
    let v = instance.config();
    if v.config.lease.is_some() {
        instance.lease_status().is_some_and(|l| l.held_by_me)
    } else {
        v.config.role == Role::Primary
    }
}

/// Starts the task that keeps the last backup fresh and runs the schedule, and the archive
/// audit, when a backup store is configured.
pub fn spawn(instance: Arc<Instance>, tasks: &crate::tasks::Tasks) {
    if let Some(store) = store(&instance) {
        super::audit::spawn(Arc::clone(&instance), tasks);
        tasks.spawn("backup schedule", schedule_loop(instance, store));
    }
}

async fn schedule_loop(instance: Arc<Instance>, store: Store) {
    let mut due: Option<(String, jiff::Timestamp)> = None;
    let mut refreshed: Option<tokio::time::Instant> = None;
    loop {
        if refreshed.is_none_or(|t| t.elapsed() >= CATALOG_REFRESH) {
            refresh_last_backup(&instance, &store).await;
            refreshed = Some(tokio::time::Instant::now());
        }
        let expr = instance.config().config.backup.as_ref().and_then(|b| b.schedule.clone());
        let now = jiff::Timestamp::now();
        due = match (expr, due) {
            (None, _) => None,
            (Some(e), Some((old, at))) if old == e => Some((e, at)),
            (Some(e), _) => match crate::backup::schedule::parse(&e) {
                Ok(s) => s.next_after(now).map(|at| (e, at)),
                Err(err) => {
                    tracing::warn!(error = %err, "backup schedule ignored");
                    None
                }
            },
        };
        instance.backups.state().next_scheduled_at = due.as_ref().filter(|_| runs_schedule(&instance)).map(|d| d.1);
        if let Some((e, at)) = due.clone()
            && now >= at
        {
            fire(&instance).await;
            due = crate::backup::schedule::parse(&e)
                .ok()
                .and_then(|s| s.next_after(jiff::Timestamp::now()))
                .map(|at| (e, at));
            continue;
        }
        let until = due
            .as_ref()
            .map(|(_, at)| at.duration_since(now).max(jiff::SignedDuration::ZERO).unsigned_abs())
            .unwrap_or(SCHEDULE_TICK);
        tokio::time::sleep(until.min(SCHEDULE_TICK)).await;
    }
}

async fn fire(instance: &Arc<Instance>) {
    if !runs_schedule(instance) {
        tracing::debug!("scheduled backup skipped: not the lease holder");
        return;
    }
    tracing::info!("scheduled base backup");
    match start(instance, false).await {
        Ok(started) => match started.done.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(backup = %started.id, error = %e, "scheduled backup failed"),
            Err(e) => tracing::warn!(backup = %started.id, error = %e, "scheduled backup task failed"),
        },
        Err(e) => {
            tracing::warn!(error = %e, "scheduled backup not started");
            instance.backups.note_failure(format!("scheduled backup: {e}"));
        }
    }
}
