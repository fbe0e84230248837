//! The pure decision of a `PostgresBackup` pass: from its status, its cluster and what the
//! instances answered ([`Seen`]) to the new status, whether to ask for a backup, and the Event
//! to record ([`Decision`]). No I/O and no clock: `now` comes in.
//!
//! | phase | what is looked at | outcome |
//! |---|---|---|
//! | `New` | the cluster (exists? `backup.store`?), the Lease holder, its `/status` | ask it ([`Decision::start`]); or wait, for at most [`START_DEADLINE`] after creation |
//! | `Started`, no id | the asked instance's `/status` and the catalog | adopt what it runs or has taken since the request; fail on its failure; ask again when it has no trace of the request |
//! | `Started`, id | the catalog, the asked instance's `/status` and Pod | `Completed` once listed; wait while it runs; `Failed` when it failed, ended without being listed, lost its Pod, or has not answered for [`UNREACHABLE_DEADLINE`] |
//!
//! The rules that keep one resource to one backup are in the module docs of
//! [`super`] (idempotency).

use jiff::{SignedDuration, Timestamp};
use pgwarden_contract::ListedBackup;

use crate::crd::{BackupPhase, InstanceId, PostgresBackupStatus};

/// How long after its creation a backup may wait to start (no cluster yet, no primary, the
/// primary busy or unreachable) before it fails. A cluster applied with its first
/// PostgresBackup gets its primary well within it.
pub const START_DEADLINE: SignedDuration = SignedDuration::from_mins(5);
/// How long the instance taking a backup (or asked for one) may go without answering before
/// the backup is failed: it is down for longer than a restart, and its backup with it.
pub const UNREACHABLE_DEADLINE: SignedDuration = SignedDuration::from_mins(5);
/// How far the operator's clock and an instance's may disagree: a backup of the asked
/// instance that began at most this long before the request counts as the one asked for.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);
/// The id an instance reports while a backup is starting and has no id yet.
pub const STARTING: &str = "(starting)";

/// The cluster, as far as a backup cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterSeen {
    /// No such `PostgresCluster` in the backup's namespace.
    Missing,
    /// It has no `backup.store`: nowhere to put a backup.
    NoStore,
    /// It exists with a store; the holder of its primary Lease, if any.
    Ready {
        /// The Lease holder.
        primary: Option<String>,
    },
}

/// What an instance's `/status` says about backups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceView {
    /// Postgres runs out of recovery: it takes primary backups.
    pub is_primary: bool,
    /// The id of the backup it is taking ([`STARTING`] before it has one).
    pub running: Option<String>,
    /// Its last failed backup (`<id>: <why>` for a backup that started), and when.
    pub last_failure: Option<(String, Timestamp)>,
    /// Why WAL archiving fails now, if it does: a backup cannot end before its last WAL file
    /// is archived, so a person must see this beside the running backup.
    pub archive_failing: Option<String>,
}

/// One instance, as this pass saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSeen {
    /// Its name (its Pod's).
    pub name: String,
    /// Its Pod's uid; `None`: there is no Pod.
    pub pod_uid: Option<String>,
    /// Its `/status`, or why it could not be read.
    pub answer: Result<InstanceView, String>,
}

/// The store's catalog of complete backups, as an instance listed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    /// The store (no credentials).
    pub destination: String,
    /// Complete backups, oldest first.
    pub backups: Vec<ListedBackup>,
}

/// Everything one pass looked at.
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    /// The operator's clock.
    pub now: Timestamp,
    /// The backup's `creationTimestamp`.
    pub created: Option<Timestamp>,
    /// Its `metadata.generation`.
    pub generation: Option<i64>,
    /// Its status so far.
    pub status: &'a PostgresBackupStatus,
    /// The cluster's name (`spec.cluster.name`).
    pub cluster_name: &'a str,
    /// The cluster.
    pub cluster: ClusterSeen,
    /// The instance that matters: the one asked (`status.instanceID`) once there is one,
    /// the Lease holder before.
    pub instance: Option<InstanceSeen>,
    /// The catalog, read once an instance was asked (`None`: no instance could list it).
    pub catalog: Option<Result<Catalog, String>>,
}

/// An Event to record on the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// A Warning (else Normal).
    pub warning: bool,
    /// `BackupStarted`, `BackupCompleted`, `BackupFailed`.
    pub reason: &'static str,
    /// For a person.
    pub note: String,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The status to write (when it differs from the stored one).
    pub status: PostgresBackupStatus,
    /// Ask this instance for a backup (`POST /backup`), once `status` (which records the
    /// request) is written.
    pub start: Option<String>,
    /// The Event to record.
    pub notice: Option<Notice>,
}

/// How `POST /backup` went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAnswer {
    /// `202 {id}`: the backup runs.
    Accepted(String),
    /// The instance answered with an error: it started nothing. `409`: not now (another
    /// backup runs there, or it is not the primary any more); `503`: cannot now (Postgres
    /// not running, the store unreadable); anything else is its verdict.
    NotStarted {
        /// The HTTP status.
        status: http::StatusCode,
        /// The instance's words.
        message: String,
    },
    /// No answer, or one that could not be read: the request may or may not have arrived.
    NoAnswer(String),
}

/// The decision of one pass.
pub fn decide(seen: &Seen<'_>) -> Decision {
    let s = seen.status;
    let mut decision = match (s.phase(), &s.backup_id, &s.instance_id) {
        (phase, _, _) if phase.is_final() => return Decision { status: s.clone(), start: None, notice: None },
        (BackupPhase::Started, Some(id), Some(asked)) => follow(seen, id, asked),
        (BackupPhase::Started, None, Some(asked)) => look_up(seen, asked),
        _ => start_or_wait(seen),
    };
    decision.status.observed_generation = seen.generation.or(decision.status.observed_generation);
    decision
}

/// After `POST /backup` to `instance`: `asked` is the status written before it.
pub fn after_start(
    asked: &PostgresBackupStatus,
    instance: &str,
    answer: StartAnswer,
    created: Option<Timestamp>,
    now: Timestamp,
) -> Decision {
    match answer {
        StartAnswer::Accepted(id) => {
            let mut status = asked.clone();
            status.message = Some(format!("backup {id} is running on {instance}"));
            status.backup_id = Some(id.clone());
            let note = format!("base backup {id} started on {instance}");
            Decision { status, start: None, notice: Some(Notice { warning: false, reason: "BackupStarted", note }) }
        }
        StartAnswer::NotStarted { status, message } => {
            let not_now = matches!(status, http::StatusCode::CONFLICT | http::StatusCode::SERVICE_UNAVAILABLE);
            if not_now && !past(created, now, START_DEADLINE) {
                wait(renewed(asked, format!("{message}; asking the primary again")))
            } else if not_now {
                too_late(asked, &message)
            } else {
                fail(asked, format!("{message}; create a new PostgresBackup once that is resolved"))
            }
        }
        StartAnswer::NoAnswer(why) => {
            let mut status = asked.clone();
            status.message = Some(format!(
                "asked {instance} for a base backup and got no answer ({why}); it is looked up there before anything is asked again"
            ));
            wait(status)
        }
    }
}

/// `New`: ask the primary, or say what the backup waits for.
fn start_or_wait(seen: &Seen<'_>) -> Decision {
    let name = seen.cluster_name;
    let blocked = match &seen.cluster {
        ClusterSeen::Missing => format!("cluster {name} does not exist in this namespace"),
        ClusterSeen::NoStore => {
            return fail(
                seen.status,
                format!(
                    "cluster {name} has no backup.store: there is nowhere to put a base backup; set spec.backup.store on the cluster, then create a new PostgresBackup"
                ),
            );
        }
        ClusterSeen::Ready { primary: None } => format!("no instance of {name} holds the primary Lease"),
        ClusterSeen::Ready { primary: Some(p) } => match seen.instance.as_ref().filter(|i| i.name == *p) {
            None => format!("the primary {p} was not looked at"),
            Some(i) => match (&i.pod_uid, &i.answer) {
                (None, _) => format!("the primary {p} has no Pod"),
                (_, Err(e)) => format!("the primary {p} does not answer: {e}"),
                (_, Ok(v)) if !v.is_primary => format!("{p} holds the primary Lease but is not out of recovery yet"),
                (_, Ok(InstanceView { running: Some(other), .. })) if other == STARTING => {
                    format!("a backup is starting on {p} (one backup at a time per instance)")
                }
                (_, Ok(InstanceView { running: Some(other), .. })) => {
                    format!("backup {other} is running on {p} (one backup at a time per instance)")
                }
                (Some(uid), Ok(_)) => return ask(seen, p, uid),
            },
        },
    };
    if past(seen.created, seen.now, START_DEADLINE) {
        return too_late(seen.status, &blocked);
    }
    let mut status = seen.status.clone();
    status.phase = Some(BackupPhase::New);
    status.message = Some(format!("waiting: {blocked}"));
    wait(status)
}

/// Records the request to `instance` (written before it is sent).
fn ask(seen: &Seen<'_>, instance: &str, pod_uid: &str) -> Decision {
    let mut status = seen.status.clone();
    status.phase = Some(BackupPhase::Started);
    status.instance_id = Some(InstanceId { pod_name: instance.to_owned(), pod_uid: Some(pod_uid.to_owned()) });
    status.started_at = Some(seen.now.to_string());
    status.backup_id = None;
    status.message = Some(format!("asking {instance} for a base backup"));
    status.unreachable_since = None;
    Decision { status, start: Some(instance.to_owned()), notice: None }
}

/// `Started`, no id: the request was written, its answer was not. Never ask again while a
/// trace of it may exist.
fn look_up(seen: &Seen<'_>, asked: &InstanceId) -> Decision {
    let name = &asked.pod_name;
    let requested = seen.status.started_at.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    let since_request = |t: Timestamp| requested.is_none_or(|r| r.duration_since(t) <= CLOCK_SKEW);
    let at = seen.status.started_at.as_deref().unwrap_or("(unknown)");
    if let Some(Ok(catalog)) = &seen.catalog
        && let Some(listed) =
            catalog.backups.iter().find(|b| b.info.instance == *name && since_request(b.info.started_at))
    {
        return complete(seen, listed, &catalog.destination);
    }
    let instance = seen.instance.as_ref().filter(|i| i.name == *name);
    if let Some(i) = instance
        && i.pod_uid != asked.pod_uid
    {
        // Whatever the Pod ran is gone, but it may have completed first: only the catalog says.
        return match catalog_read(seen) {
            Ok(()) => again(
                seen,
                format!("{name}'s Pod was deleted or re-created before it confirmed the backup asked at {at}"),
            ),
            Err(e) => unreachable(seen, &e, &format!("cannot read the catalog to look up the backup asked of {name}")),
        };
    }
    match instance.map(|i| &i.answer) {
        Some(Ok(InstanceView { running: Some(id), .. })) if id != STARTING => {
            let mut status = seen.status.clone();
            status.backup_id = Some(id.clone());
            status.message = Some(format!("backup {id} is running on {name}"));
            status.unreachable_since = None;
            let note = format!("base backup {id} started on {name}");
            Decision { status, start: None, notice: Some(Notice { warning: false, reason: "BackupStarted", note }) }
        }
        Some(Ok(InstanceView { running: Some(_), .. })) => {
            let mut status = seen.status.clone();
            status.message = Some(format!("{name} is starting a backup"));
            status.unreachable_since = None;
            wait(status)
        }
        Some(Ok(InstanceView { last_failure: Some((why, when)), .. })) if since_request(*when) => {
            fail(seen.status, format!("the backup asked of {name} at {at} failed: {why}"))
        }
        Some(Ok(_)) => match catalog_read(seen) {
            Ok(()) => {
                again(seen, format!("{name} has no trace of the backup asked at {at} (the request did not reach it)"))
            }
            Err(e) => unreachable(seen, &e, &format!("cannot read the catalog to look up the backup asked of {name}")),
        },
        Some(Err(e)) => {
            unreachable(seen, e, &format!("cannot learn from {name} whether it started the backup asked at {at}"))
        }
        None => unreachable(seen, "it was not looked at", &format!("cannot reach {name}")),
    }
}

/// `Started`, id known: follow it to the catalog.
fn follow(seen: &Seen<'_>, id: &str, asked: &InstanceId) -> Decision {
    let name = &asked.pod_name;
    if let Some(Ok(catalog)) = &seen.catalog
        && let Some(listed) = catalog.backups.iter().find(|b| b.info.id == id)
    {
        return complete(seen, listed, &catalog.destination);
    }
    let instance = seen.instance.as_ref().filter(|i| i.name == *name);
    if let Some(i) = instance
        && i.pod_uid != asked.pod_uid
    {
        let what = if i.pod_uid.is_none() { "deleted" } else { "re-created" };
        // It may have completed just before: only the catalog says.
        return match catalog_read(seen) {
            Ok(()) => fail(
                seen.status,
                format!(
                    "{name}'s Pod was {what} while it took backup {id}: the backup ended with it (a failover or a restart during a backup ends it); create a new PostgresBackup"
                ),
            ),
            Err(e) => unreachable(seen, &e, &format!("cannot read the catalog to find backup {id}")),
        };
    }
    match instance.map(|i| &i.answer) {
        Some(Ok(v)) if v.running.as_deref() == Some(id) => {
            let mut status = seen.status.clone();
            status.message = Some(match &v.archive_failing {
                None => format!("backup {id} is running on {name}"),
                Some(why) => format!(
                    "backup {id} is running on {name}, and cannot end until its WAL is archived: archiving fails: {why}"
                ),
            });
            status.unreachable_since = None;
            wait(status)
        }
        Some(Ok(v)) => {
            let prefix = format!("{id}:");
            if let Some((why, _)) = v.last_failure.as_ref().filter(|(why, _)| why.starts_with(&prefix)) {
                let why = why.trim_start_matches(&prefix).trim();
                return fail(
                    seen.status,
                    format!(
                        "backup {id} failed on {name}: {why}; see {name}'s log, fix the cause and create a new PostgresBackup"
                    ),
                );
            }
            match catalog_read(seen) {
                Ok(()) => fail(
                    seen.status,
                    format!(
                        "backup {id} is neither running on {name} nor in the catalog: it ended without completing (its instance manager restarted, or Postgres stopped or was demoted during it); create a new PostgresBackup"
                    ),
                ),
                Err(e) => unreachable(seen, &e, &format!("cannot read the catalog to find backup {id}")),
            }
        }
        Some(Err(e)) => unreachable(seen, e, &format!("{name}, taking backup {id}, does not answer")),
        None => unreachable(seen, "it was not looked at", &format!("cannot reach {name}, taking backup {id}")),
    }
}

/// The backup is in the catalog: its record fills the status. A backup that found data pages
/// failing checksum verification is kept in the store but fails, as the instance counts it.
fn complete(seen: &Seen<'_>, listed: &ListedBackup, destination: &str) -> Decision {
    let info = &listed.info;
    let mut status = seen.status.clone();
    status.backup_id = Some(info.id.clone());
    let pod_uid = status.instance_id.as_ref().filter(|i| i.pod_name == info.instance).and_then(|i| i.pod_uid.clone());
    status.instance_id = Some(InstanceId { pod_name: info.instance.clone(), pod_uid });
    status.started_at = Some(info.started_at.to_string());
    status.stopped_at = Some(info.stopped_at.to_string());
    status.begin_lsn = Some(info.start_lsn.to_string());
    status.end_lsn = Some(info.stop_lsn.to_string());
    status.begin_wal = Some(info.start_wal.clone());
    status.end_wal = Some(info.stop_wal.clone());
    status.timeline = Some(i64::from(info.timeline));
    status.size_bytes = i64::try_from(info.data_bytes).ok();
    status.stored_bytes = i64::try_from(info.stored_bytes).ok();
    status.destination_path = Some(destination.to_owned());
    status.unreachable_since = None;
    status.message = None;
    if let Some(bad) = info.checksum_failures.filter(|n| *n > 0) {
        let first = info
            .checksum_failed_pages
            .first()
            .map(|p| format!(", the first in {} block {}", p.file, p.block))
            .unwrap_or_default();
        return fail(
            &status,
            format!(
                "backup {} found {bad} data page(s) failing checksum verification{first}: the data directory is corrupt; the backup is kept in the store with the pages in its backup.json; repair the relations, then create a new PostgresBackup",
                info.id
            ),
        );
    }
    status.phase = Some(BackupPhase::Completed);
    let took = info.stopped_at.duration_since(info.started_at).as_secs();
    let note = format!(
        "base backup {} completed on {}: {} bytes stored in {took} s, restorable from {}",
        info.id, info.instance, info.stored_bytes, info.stop_lsn
    );
    Decision { status, start: None, notice: Some(Notice { warning: false, reason: "BackupCompleted", note }) }
}

/// Whether the catalog was read, or why not.
fn catalog_read(seen: &Seen<'_>) -> Result<(), String> {
    match &seen.catalog {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(e.clone()),
        None => Err("no instance answered to list it".into()),
    }
}

/// No answer: wait, for at most [`UNREACHABLE_DEADLINE`] from the first pass without one.
fn unreachable(seen: &Seen<'_>, why: &str, context: &str) -> Decision {
    let since = seen.status.unreachable_since.as_deref().and_then(|t| t.parse::<Timestamp>().ok()).unwrap_or(seen.now);
    if seen.now.duration_since(since) > UNREACHABLE_DEADLINE {
        return fail(
            seen.status,
            format!(
                "{context}: no answer for {} minutes ({why}); create a new PostgresBackup once the instance is back",
                UNREACHABLE_DEADLINE.as_mins()
            ),
        );
    }
    let mut status = seen.status.clone();
    status.unreachable_since = Some(since.to_string());
    status.message = Some(format!("{context}: {why}"));
    wait(status)
}

/// The request left no trace: back to `New`, to ask the primary again, unless the backup has
/// waited too long to start already.
fn again(seen: &Seen<'_>, why: String) -> Decision {
    if past(seen.created, seen.now, START_DEADLINE) {
        return too_late(seen.status, &why);
    }
    wait(renewed(seen.status, format!("{why}; asking the primary again")))
}

/// `status` back at `New`: nothing asked.
fn renewed(status: &PostgresBackupStatus, message: String) -> PostgresBackupStatus {
    PostgresBackupStatus {
        phase: Some(BackupPhase::New),
        message: Some(message),
        observed_generation: status.observed_generation,
        ..PostgresBackupStatus::default()
    }
}

/// Failed: it could not start within [`START_DEADLINE`], because of `why`.
fn too_late(status: &PostgresBackupStatus, why: &str) -> Decision {
    let minutes = START_DEADLINE.as_mins();
    fail(
        status,
        format!(
            "the backup could not start within {minutes} minutes of its creation: {why}; create a new PostgresBackup once that is resolved"
        ),
    )
}

fn fail(status: &PostgresBackupStatus, error: String) -> Decision {
    let mut status = status.clone();
    status.phase = Some(BackupPhase::Failed);
    status.message = None;
    status.unreachable_since = None;
    status.error = Some(error.clone());
    Decision { status, start: None, notice: Some(Notice { warning: true, reason: "BackupFailed", note: error }) }
}

fn wait(status: PostgresBackupStatus) -> Decision {
    Decision { status, start: None, notice: None }
}

/// Whether more than `limit` has passed since `from` (never, without `from`).
fn past(from: Option<Timestamp>, now: Timestamp, limit: SignedDuration) -> bool {
    from.is_some_and(|f| now.duration_since(f) > limit)
}
