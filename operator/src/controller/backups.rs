//! The kube-runtime [`Controller`] on `PostgresBackup`, wrapped around
//! [`crate::backup_reconcile::reconcile`]: counted like the cluster controller's reconciles
//! (`pgwarden_operator_backup_reconciles_total`, `..._backup_reconcile_errors_total{kind}`),
//! and retried with the same per-object backoff after a failure.
//!
//! It watches the backups only: a backup that is not final asks to be looked at again
//! (`backup_reconcile::next_look`: every second for a minute after it started, then every few
//! seconds; it follows instances, which no watch reports), and a final one is never looked at
//! again. The operator's own status writes come back as watch events; they are debounced by
//! [`DEBOUNCE`], and a pass that changes nothing writes nothing, so they do not loop.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::backoff::{ClusterKey, ErrorBackoff};
use super::metrics::Metrics;
use super::reconciler::api;
use crate::backup_reconcile::{self, BackupContext, BackupError};
use crate::crd::PostgresBackup;

/// Backup reconciles running at once: each is a few reads and one or two calls to an
/// instance.
const CONCURRENCY: u16 = 4;

/// Watch events of one backup closer together than this are reconciled once.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_secs(1);

/// What every backup reconcile of the runtime shares.
pub struct BackupReconciler {
    ctx: Arc<BackupContext>,
    metrics: Arc<Metrics>,
    backoff: ErrorBackoff,
}

/// One item of the backup controller's output stream.
pub type Outcome = Result<(ObjectRef<PostgresBackup>, Action), controller::Error<BackupError, watcher::Error>>;

impl BackupReconciler {
    /// A reconciler calling the API with `client`, reporting to `metrics`.
    pub fn new(client: kube::Client, metrics: Arc<Metrics>) -> Self {
        Self { ctx: Arc::new(BackupContext::new(client)), metrics, backoff: ErrorBackoff::default() }
    }

    /// Runs the reconcile of `backup`, counting it.
    pub async fn reconcile(backup: Arc<PostgresBackup>, this: Arc<Self>) -> Result<Action, BackupError> {
        let key = key(&backup);
        let result = backup_reconcile::reconcile(backup, this.ctx.clone()).await;
        this.metrics.backup_reconciled(result.as_ref().err().map(BackupError::kind));
        if result.is_ok() {
            this.backoff.succeeded(&key);
        }
        result
    }

    /// The error policy: log the failure with the backup, retry after its backoff.
    pub fn error_policy(backup: Arc<PostgresBackup>, error: &BackupError, this: Arc<Self>) -> Action {
        let key = key(&backup);
        let (failures, retry_in) = this.backoff.failed(&key);
        tracing::warn!(namespace = %key.0, backup = %key.1, kind = error.kind(), error = %error, failures,
            retry_in_seconds = retry_in.as_secs(), "backup reconcile failed");
        Action::requeue(retry_in)
    }

    /// Takes note of one item of the controller's stream.
    pub fn after(&self, outcome: &Outcome, store: &Store<PostgresBackup>) {
        match outcome {
            Ok((object, action)) => tracing::debug!(backup = %object, ?action, "reconciled"),
            Err(controller::Error::ReconcilerFailed(..)) => {}
            Err(controller::Error::ObjectNotFound(object)) => tracing::debug!(backup = %object, "backup deleted"),
            Err(controller::Error::QueueError(e)) => {
                tracing::warn!(error = %e, "backup watch failed; kube-runtime retries it with backoff");
            }
            Err(e @ controller::Error::RunnerError(_)) => {
                tracing::error!(error = %e, "backup controller runner failed")
            }
        }
        self.backoff.retain(|(namespace, name)| store.get(&ObjectRef::new(name).within(namespace)).is_some());
    }
}

/// The controller: the backups in `namespace` (all when `None`).
pub fn controller(client: &kube::Client, namespace: Option<&str>) -> Controller<PostgresBackup> {
    Controller::new(api::<PostgresBackup>(client, namespace), watcher::Config::default())
        .with_config(controller::Config::default().concurrency(CONCURRENCY).debounce(DEBOUNCE))
}

fn key(backup: &PostgresBackup) -> ClusterKey {
    (backup.namespace().unwrap_or_default(), backup.name_any())
}
