//! Reconcile: one `PostgresBackup` carried out (docs/operator.md, "Backups as resources").
//!
//! ```text
//!   New ──(the Lease holder is a primary, not busy)──▶ Started ──(listed in the catalog)──▶ Completed
//!    │   (status written first, then POST /backup)       │ (backupId from the answer)
//!    │                                                    │
//!    └─(no store; or blocked for START_DEADLINE)──▶ Failed ◀─(failed; ended unlisted; Pod lost;
//!                                                              no answer for UNREACHABLE_DEADLINE)
//! ```
//!
//! [`decide`] is the pure decision; [`observe`] gathers its inputs (reads only, and the one
//! `POST /backup`); [`reconcile`] is the shell: observe, decide, write the status, record the
//! Event, look again until the phase is final ([`next_look`]: every [`FOLLOW`] during a
//! backup's first [`FOLLOW_FOR`], most backups being done by then, else every [`POLL`]), then
//! never again.
//!
//! # One resource, one backup (idempotency)
//!
//! 1. **Written before asked.** The request is recorded first — phase `Started`, the instance
//!    (`instanceID`: its Pod and the Pod's uid), the time (`startedAt`), no `backupId` — and
//!    only then is `POST /backup` (`wait: false`) sent; the id it answers is written next.
//!    Every status write carries the `resourceVersion` the pass read: a pass working from a
//!    stale copy (the watch cache lagging the operator's own write) gets a conflict and asks
//!    nothing.
//! 2. **A request is never repeated while a trace of it may exist.** A pass that finds
//!    `Started` without an id (the operator stopped between the two writes, the answer was
//!    lost, the call timed out) looks the request up on the instance asked, and does not ask:
//!    the backup it is running is adopted; a backup of that instance in the catalog that
//!    began no earlier than [`decide::CLOCK_SKEW`] before the request is adopted (and
//!    completes); a failure it reports since then fails the resource. Only when the instance
//!    answers, is running nothing and reports no failure since, or its Pod is gone (taking
//!    any running backup with it), and the catalog (read after its status) holds nothing of
//!    it, is the request known not to have taken effect, and the backup goes back to `New`.
//!    While the instance or the catalog does not answer, nothing is asked (for at most
//!    [`decide::UNREACHABLE_DEADLINE`]).
//! 3. **An error answer started nothing.** The instances take one backup at a time each, and
//!    primary backups only on a primary. `409` (another backup runs there, or it is not the
//!    primary any more) and `503` (Postgres not running, the store unreadable) mean "not
//!    now": the backup goes back to `New` and the primary is asked again, within the start
//!    deadline. Any other error is a verdict (`Failed`, with the instance's words). Only no
//!    answer at all leaves the request in doubt (rule 2).
//!
//! So a PostgresBackup never has two backups running, and at most one of its requests can
//! reach the catalog. A backup adopted after a lost answer may be one the schedule started at
//! the same moment: it is a base backup of the cluster started when this one was asked.
//!
//! # Ownership
//!
//! A PostgresBackup has **no owner reference** to its cluster, as CloudNativePG's `Backup`:
//! deleting the cluster leaves the record of every backup taken (its id, LSNs and store),
//! which is what a restore into a new cluster names. Deleting a PostgresBackup deletes the
//! record only, never the backup in the store (retention does that).

pub mod decide;
pub mod observe;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::crd::{PostgresBackup, PostgresBackupStatus};
use crate::names::FIELD_MANAGER;
use crate::reconcile::act::{Https, InstanceApi};
use crate::reconcile::merge_patch;
use decide::{Decision, Notice, Seen};

/// How soon a backup that is not final is looked at again.
pub const POLL: Duration = Duration::from_secs(5);
/// How soon a backup that started less than [`FOLLOW_FOR`] ago is looked at again: a base
/// backup of a few GB ends within seconds, and its resource should say so within a second.
pub const FOLLOW: Duration = Duration::from_secs(1);
/// How long a started backup is followed every [`FOLLOW`].
pub const FOLLOW_FOR: Duration = Duration::from_secs(60);

/// When to look at a backup again, given its status after this pass: never once final; every
/// [`FOLLOW`] while `Started` less than [`FOLLOW_FOR`] ago; else every [`POLL`].
pub fn next_look(status: &PostgresBackupStatus, now: Timestamp) -> Option<Duration> {
    if status.phase().is_final() {
        return None;
    }
    let started = status.started_at.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    let recent = started.is_some_and(|t| now.duration_since(t).unsigned_abs() < FOLLOW_FOR);
    Some(if status.phase() == crate::crd::BackupPhase::Started && recent { FOLLOW } else { POLL })
}

/// What every backup reconcile shares.
pub struct BackupContext {
    /// The API client.
    pub client: kube::Client,
    /// Events on the backups.
    pub recorder: Recorder,
    /// The instances' API (scripted in tests).
    pub instance_api: Arc<dyn InstanceApi>,
    /// The clock (set in tests).
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
}

impl BackupContext {
    /// A context on `client`, calling the real instances with the real clock.
    pub fn new(client: kube::Client) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            instance_api: Arc::new(Https),
            clock: Arc::new(Timestamp::now),
        }
    }
}

/// Why a backup reconcile failed; [`BackupError::kind`] is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The API server refused or failed a call.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// The object lacks what the API server always sets.
    #[error("the PostgresBackup has no metadata.{0}; it must be read from the API server")]
    Metadata(&'static str),
    /// The status could not be serialised.
    #[error("serialise the status: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl BackupError {
    /// A short, stable label for metrics: `kube`, `metadata`, `serialize`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Metadata(_) => "metadata",
            Self::Serialize(_) => "serialize",
        }
    }
}

/// Reconciles one backup. Returns when to look again: every [`POLL`] until it is final.
pub async fn reconcile(backup: Arc<PostgresBackup>, ctx: Arc<BackupContext>) -> Result<Action, BackupError> {
    let previous = backup.status.clone().unwrap_or_default();
    if previous.phase().is_final() {
        return Ok(Action::await_change());
    }
    let namespace = backup.metadata.namespace.as_deref().ok_or(BackupError::Metadata("namespace"))?;
    let name = backup.metadata.name.as_deref().ok_or(BackupError::Metadata("name"))?;
    let cluster_name = backup.spec.cluster.name.as_str();
    let now = (ctx.clock)();
    let observed = observe::observe(&ctx.client, ctx.instance_api.as_ref(), namespace, cluster_name, &previous).await?;
    let created = backup.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let decision = decide::decide(&Seen {
        now,
        created,
        generation: backup.metadata.generation,
        status: &previous,
        cluster_name,
        cluster: observed.cluster.clone(),
        instance: observed.instance.clone(),
        catalog: observed.catalog.clone(),
    });
    let mut writer = StatusWriter {
        api: Api::namespaced(ctx.client.clone(), namespace),
        name,
        resource_version: backup.metadata.resource_version.clone(),
        written: backup.status.clone(),
    };
    let decision = match decision.start.as_deref() {
        None => decision,
        Some(instance) => {
            // The request is on record before it is sent (rule 1 of the module docs).
            if !writer.write(&decision.status).await? {
                return Ok(Action::requeue(POLL));
            }
            tracing::info!(namespace, backup = name, instance, "asking for a base backup");
            let answer = observed.ask(ctx.instance_api.as_ref(), instance).await;
            decide::after_start(&decision.status, instance, answer, created, now)
        }
    };
    let Decision { status, notice, .. } = decision;
    if !writer.write(&status).await? {
        return Ok(Action::requeue(POLL));
    }
    if let Some(notice) = notice {
        publish(&ctx, &backup, notice).await;
    }
    Ok(next_look(&status, now).map_or_else(Action::await_change, Action::requeue))
}

/// Writes a backup's status as merge patches, each conditional on the `resourceVersion` the
/// last one left (or the pass read).
struct StatusWriter<'a> {
    api: Api<PostgresBackup>,
    name: &'a str,
    resource_version: Option<String>,
    written: Option<PostgresBackupStatus>,
}

impl StatusWriter<'_> {
    /// Writes `new` when it differs from what is stored. `false`: the object changed since it
    /// was read (409); nothing was written, and the pass must stop.
    async fn write(&mut self, new: &PostgresBackupStatus) -> Result<bool, BackupError> {
        if self.written.as_ref() == Some(new) {
            return Ok(true);
        }
        let old = serde_json::to_value(self.written.clone().unwrap_or_default())?;
        let mut patch = json!({"status": merge_patch(&old, &serde_json::to_value(new)?)});
        if let Some(version) = &self.resource_version {
            patch["metadata"] = json!({"resourceVersion": version});
        }
        match self.api.patch_status(self.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(stored) => {
                self.resource_version = stored.metadata.resource_version;
                self.written = Some(new.clone());
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::debug!(backup = self.name, "the backup changed since it was read; looking again");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

async fn publish(ctx: &BackupContext, backup: &PostgresBackup, notice: Notice) {
    let event = Event {
        type_: if notice.warning { EventType::Warning } else { EventType::Normal },
        reason: notice.reason.to_owned(),
        note: Some(notice.note),
        action: "Backup".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &backup.object_ref(&())).await {
        tracing::warn!(backup = %backup.name_any(), reason = notice.reason, error = %e, "could not record an event");
    }
}

#[cfg(test)]
mod decide_tests;

#[cfg(test)]
mod reconcile_tests;
