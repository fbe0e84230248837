//! The `ContinuousArchiving` condition (CloudNativePG's type and reasons), from the primary's
//! own `/status`: whether WAL reaches the backup store now, and (reason `ArchiveGap`, ours)
//! whether the primary's audit of the whole archive found segments a recovery to the end
//! would stop at. A cluster without a store has no such condition. The message is stable while the state is (the WAL file names are not in it),
//! so a cluster archiving steadily writes no status; an unreadable primary keeps the previous
//! condition rather than flap.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use pgwarden_contract::{ArchiveStatus, InstanceStatus};

/// The condition's type.
pub const TYPE: &str = "ContinuousArchiving";
/// WAL reaches the store, and the last audit found the archive whole.
pub const SUCCESS: &str = "ContinuousArchivingSuccess";
/// WAL does not reach the store now.
pub const FAILING: &str = "ContinuousArchivingFailing";
/// WAL reaches the store, but the archive lacks segments a recovery to the end needs.
pub const GAP: &str = "ArchiveGap";

/// The reason of a condition this module made, as a constant (for events).
pub fn reason_of(c: &Condition) -> &'static str {
    [SUCCESS, FAILING, GAP].into_iter().find(|r| *r == c.reason).unwrap_or(FAILING)
}

/// What the primary's last audit found missing, if anything.
pub fn gap(a: &ArchiveStatus) -> Option<String> {
    let audit = a.audit.as_ref().filter(|au| au.missing_segments > 0)?;
    Some(format!(
        "{} segment(s) missing from the archive, the first {}: a recovery to the end would stop there; \
         take a base backup now (a restore from it does not need them)",
        audit.missing_segments,
        audit.first_missing.as_deref().unwrap_or("unknown")
    ))
}

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
    let dest = &archive.destination;
    let (status, reason, message) = match (failing(archive), gap(archive)) {
        (Some(why), _) => ("False", FAILING, format!("WAL archiving to {dest} fails: {why}")),
        (None, Some(gap)) => ("False", GAP, format!("WAL is archived to {dest}, but {gap}")),
        (None, None) => ("True", SUCCESS, format!("WAL is archived to {dest}")),
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
