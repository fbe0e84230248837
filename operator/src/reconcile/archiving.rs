//! The `ContinuousArchiving` condition (CloudNativePG's type and reasons), from the primary's
//! own `/status`: whether WAL reaches the backup store now. A cluster without a store has no
//! such condition. The message is stable while the state is (the WAL file names are not in it),
//! so a cluster archiving steadily writes no status; an unreadable primary keeps the previous
//! condition rather than flap.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use pgwarden_contract::{ArchiveStatus, InstanceStatus};

/// The condition's type.
pub const TYPE: &str = "ContinuousArchiving";

/// Why archiving fails now, if it does: the store is refused, or the last attempt failed after
/// the last success.
pub fn failing(a: &ArchiveStatus) -> Option<String> {
    if let Some(problem) = &a.store_problem {
        return Some(problem.clone());
    }
    let failed_last = a.last_failed_at.is_some_and(|f| a.last_archived_at.is_none_or(|ok| f > ok));
    let why = a.last_failure.as_deref().filter(|_| failed_last)?;
    Some(match &a.last_failed_wal {
        Some(wal) => format!("{wal}: {why}"),
        None => why.to_owned(),
    })
}

/// The condition from the primary's report (`None`: it could not be read), the previous one,
/// and the time now.
pub fn condition(
    primary: Option<&InstanceStatus>,
    previous: Option<&Condition>,
    now: &str,
    generation: Option<i64>,
) -> Option<Condition> {
    let Some(report) = primary else { return previous.cloned() };
    let archive = report.archive.as_ref()?;
    let (status, reason, message) = match failing(archive) {
        None => ("True", "ContinuousArchivingSuccess", format!("WAL is archived to {}", archive.destination)),
        Some(why) => {
            ("False", "ContinuousArchivingFailing", format!("WAL archiving to {} fails: {why}", archive.destination))
        }
    };
    let since = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now.parse().unwrap_or_default()),
    };
    Some(Condition {
        type_: TYPE.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    })
}
