//! The archive checks of `diagnose`: the store is still this cluster's archive, and the last
//! audit found every segment a recovery to the end needs.

use super::Check;
use crate::api::InstanceStatus;

/// `archive store` and `archive gaps`; nothing without a backup store.
pub fn archive_checks(s: &InstanceStatus) -> Vec<Check> {
    let Some(a) = &s.archive else { return Vec::new() };
    let store = match &a.store_problem {
        Some(p) => Check::fail(
            "archive store",
            p.clone(),
            "put the archive back where backup.store points (WAL waits in pg_wal meanwhile), or restart \
             the manager to start a new archive there and take a base backup at once",
        ),
        None => Check::ok("archive store", format!("{} holds this cluster's archive", a.destination)),
    };
    let gaps = match &a.audit {
        None => Check::ok("archive gaps", "not audited by this instance (the lease holder audits the archive)"),
        Some(audit) => match (&audit.error, &audit.first_missing) {
            (Some(e), _) => {
                Check::fail("archive gaps", format!("the archive audit failed: {e}"), "see the manager's log")
            }
            (None, Some(first)) => Check::fail(
                "archive gaps",
                format!(
                    "{} segment(s) missing from the archive, the first {first}: a recovery to the end stops before it",
                    audit.missing_segments
                ),
                "copy the missing segments into the archive from a member's pg_wal if one still has them; \
                 otherwise take a base backup now (recoveries can start after the gap)",
            ),
            (None, None) => Check::ok(
                "archive gaps",
                match (&audit.from_wal, &audit.to_wal) {
                    (Some(from), Some(to)) => format!("every segment from {from} to {to} is archived"),
                    _ => format!("nothing to check yet ({} backup(s))", audit.backups),
                },
            ),
        },
    };
    vec![store, gaps]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::Outcome;
    use super::*;
    use crate::api::{ArchiveAudit, ArchiveStatus};

    fn status(archive: ArchiveStatus) -> InstanceStatus {
        let mut s = crate::cli::status::tests::primary_status();
        s.archive = Some(archive);
        s
    }

    #[test]
    fn a_gap_fails_naming_the_first_missing_segment() {
        let audit = ArchiveAudit {
            missing_segments: 18,
            first_missing: Some("00000005000000000000003F".into()),
            ..Default::default()
        };
        let checks = archive_checks(&status(ArchiveStatus { audit: Some(audit), ..Default::default() }));
        assert_eq!(checks[1].outcome, Outcome::Fail);
        assert!(checks[1].detail.contains("18 segment(s)") && checks[1].detail.contains("00000005000000000000003F"));
        assert_eq!(checks[0].outcome, Outcome::Ok);
    }

    #[test]
    fn a_lost_store_fails_with_a_hint_and_no_store_means_no_check() {
        let a = ArchiveStatus { store_problem: Some("file:///a lost its identity".into()), ..Default::default() };
        let checks = archive_checks(&status(a));
        assert_eq!(checks[0].outcome, Outcome::Fail);
        assert!(checks[0].hint.as_deref().unwrap().contains("put the archive back"));
        let mut s = status(ArchiveStatus::default());
        s.archive = None;
        assert!(archive_checks(&s).is_empty());
        let whole = ArchiveAudit { from_wal: Some("a".into()), to_wal: Some("b".into()), ..Default::default() };
        let checks = archive_checks(&status(ArchiveStatus { audit: Some(whole), ..Default::default() }));
        assert_eq!(checks[1].outcome, Outcome::Ok, "{checks:?}");
    }
}
