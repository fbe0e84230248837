//! The archive audit: the lease holder looks at the whole archive now and then and reports
//! what a recovery would miss, before anyone needs that recovery.
//!
//! - **Identity**: the store still holds this cluster's `cluster.json`
//!   ([`crate::archive::Archiver::check_identity`]; the archiver also checks it before every
//!   upload).
//! - **Catalog**: the backups did not all vanish since the last audit.
//! - **Gaps**: every segment from the oldest backup's `startWal` through the last archived
//!   one, following the timeline history ([`crate::archive::gaps::scan`]). Segments missing in
//!   one look are looked for again after [`CONFIRM_AFTER`] (parallel uploads land out of
//!   order); those still missing are reported.
//!
//! - **Unmarked segments**: before each audit, segments of earlier timelines that Postgres
//!   never marked for archiving (a branch point on a segment boundary) are marked and archived
//!   ([`crate::archive::unmarked`]), so the gap check finds them in place.
//!
//! - **Leftovers**: staged files of interrupted uploads in a `file://` store are removed.
//!
//! Bounded cost: one listing of the archive every [`AUDIT_EVERY`], and soon after this
//! instance becomes the holder or changes timeline (a promotion: the moment a failover may
//! have left a gap). Results go to `/status` (`archive.audit`, `archive.storeProblem`), the
//! metrics (`pgwarden_archive_gap_segments`, `pgwarden_archive_store_lost`) and `diagnose`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::api::ArchiveAudit;
use crate::archive::layout::{SegmentId, WalName, parse_wal_name};
use crate::archive::{Archiver, gaps, inventory, unmarked};
use crate::instance::Instance;

/// How often the lease holder audits the archive.
pub const AUDIT_EVERY: Duration = Duration::from_secs(180);
/// How often the loop looks at the lease and the timeline.
const TICK: Duration = Duration::from_secs(5);
/// How long an interrupted upload's staged file (`file://`) must be idle before it is removed.
const STAGED_IDLE: Duration = Duration::from_secs(600);
/// How long after a first look missing segments are looked for again.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(15);

/// Starts the audit loop of `instance`'s archive.
pub fn spawn(instance: Arc<Instance>, tasks: &crate::tasks::Tasks) {
    if let Some(archiver) = instance.archiver.clone() {
        tasks.spawn("archive audit", audit_loop(instance, archiver));
    }
}

async fn audit_loop(instance: Arc<Instance>, archiver: Arc<Archiver>) {
    let mut last: Option<(tokio::time::Instant, Option<u32>)> = None;
    let mut backups_before: Option<u64> = None;
    loop {
        tokio::time::sleep(TICK).await;
        if !super::backups::runs_schedule(&instance) {
            last = None;
            continue;
        }
        let Some(observed) = instance.observe().await else { continue };
        if observed.in_recovery {
            continue;
        }
        let due = last.is_none_or(|(at, tl)| at.elapsed() >= AUDIT_EVERY || tl != observed.timeline);
        if !due {
            continue;
        }
        last = Some((tokio::time::Instant::now(), observed.timeline));
        if let Some(timeline) = observed.timeline
            && let Err(e) = unmarked::archive_unmarked(&archiver, timeline).await
        {
            tracing::warn!(error = %e, "cannot look for unmarked segments of earlier timelines");
        }
        let audit = audit(&archiver, backups_before).await;
        if audit.error.is_none() {
            backups_before = Some(audit.backups);
        }
        archiver.set_audit(audit);
    }
}

/// One audit of `archiver`'s store. `backups_before`: the catalog's size at the last audit.
pub async fn audit(archiver: &Archiver, backups_before: Option<u64>) -> ArchiveAudit {
    let mut out = ArchiveAudit { checked_at: Some(jiff::Timestamp::now()), ..Default::default() };
    if let Err(e) = archiver.check_identity().await {
        out.error = Some(e.to_string());
        return out;
    }
    let store = archiver.store();
    store.sweep_staged(STAGED_IDLE);
    let backups = match crate::backup::catalog::list(store).await {
        Ok(b) => b,
        Err(e) => {
            out.error = Some(format!("cannot read the backup catalog: {e}"));
            return out;
        }
    };
    out.backups = backups.len() as u64;
    if backups.is_empty() && backups_before.is_some_and(|n| n > 0) {
        out.error = Some(format!(
            "the backup catalog of {} is empty but held {} backup(s) at the last audit: \
             the backups were moved or deleted; take a base backup",
            store.describe(),
            backups_before.unwrap_or(0)
        ));
        return out;
    }
    let Some(oldest) = backups.first() else { return out };
    let Some(WalName::Segment(start)) = parse_wal_name(&oldest.start_wal) else { return out };
    let first = match look(archiver, start, oldest.segment_size).await {
        Ok(scan) => scan,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let scan = if first.missing_count == 0 {
        first
    } else {
        tokio::time::sleep(CONFIRM_AFTER).await;
        match look(archiver, start, oldest.segment_size).await {
            Ok(again) => confirmed(&first, again),
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        }
    };
    report(&mut out, &scan);
    out
}

async fn look(
    archiver: &Archiver,
    start: SegmentId,
    segment_size: u64,
) -> Result<gaps::GapScan, inventory::InventoryError> {
    let (archived, spans) = inventory::segments(archiver.store()).await?;
    Ok(gaps::scan(start, segment_size, &spans, &archived).unwrap_or_default())
}

/// The second look, keeping only what was missing in the first too.
fn confirmed(first: &gaps::GapScan, mut again: gaps::GapScan) -> gaps::GapScan {
    let before: BTreeSet<SegmentId> = first.missing.iter().copied().collect();
    again.missing.retain(|s| before.contains(s));
    if again.missing_count as usize <= gaps::LISTED {
        again.missing_count = again.missing.len() as u64;
    }
    again
}

fn report(out: &mut ArchiveAudit, scan: &gaps::GapScan) {
    out.from_wal = scan.from.map(|s| s.file_name());
    out.to_wal = scan.to.map(|s| s.file_name());
    out.missing_segments = scan.missing_count;
    out.first_missing = scan.missing.first().map(SegmentId::file_name);
    if let Some(first) = &out.first_missing {
        tracing::error!(
            missing = scan.missing_count,
            first_missing = %first,
            last_missing = %scan.missing.last().map(SegmentId::file_name).unwrap_or_default(),
            "the WAL archive has a gap: a recovery to the end would stop before it"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn seg(s: u32) -> SegmentId {
        SegmentId { timeline: 1, log: 0, seg: s }
    }

    #[test]
    fn only_segments_missing_twice_are_reported() {
        let first = gaps::GapScan { missing: vec![seg(3), seg(9)], missing_count: 2, ..Default::default() };
        let again = gaps::GapScan { missing: vec![seg(3), seg(12)], missing_count: 2, ..Default::default() };
        let c = confirmed(&first, again);
        assert_eq!((c.missing, c.missing_count), (vec![seg(3)], 1));
        let mut out = ArchiveAudit::default();
        let c = confirmed(&first, gaps::GapScan::default());
        report(&mut out, &c);
        assert_eq!((out.missing_segments, out.first_missing), (0, None));
    }
}
