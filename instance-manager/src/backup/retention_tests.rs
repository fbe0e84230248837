#![allow(clippy::unwrap_used)]
use super::*;

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

/// A backup started on `timeline` in segment `seg` (log 0), stopped at `stopped`.
fn backup(id: &str, stopped: &str, timeline: u32, seg: u32) -> BackupInfo {
    let start_wal = SegmentId { timeline, log: 0, seg }.file_name();
    BackupInfo {
        timeline,
        start_lsn: format!("0/{seg:X}000028").parse().unwrap(),
        stop_wal: start_wal.clone(),
        start_wal,
        ..crate::backup::catalog::tests::info(id, stopped, &format!("0/{seg:X}000138"))
    }
}

fn count(n: u32) -> RetentionSpec {
    RetentionSpec { recovery_window_days: None, count: Some(n) }
}

fn window(days: u32) -> RetentionSpec {
    RetentionSpec { recovery_window_days: Some(days), count: None }
}

fn seg(timeline: u32, log: u32, seg: u32) -> String {
    SegmentId { timeline, log, seg }.file_name()
}

fn daily() -> Vec<BackupInfo> {
    // Taken at 03:00 on the 1st..5th, starting in segments 2, 4, 6, 8, 10.
    (1..=5).map(|d| backup(&format!("2026110{d}T030000Z"), &format!("2026-11-0{d}T03:10:00Z"), 1, 2 * d)).collect()
}

#[test]
fn count_keeps_the_newest_n() {
    let (keep, delete) = choose_backups(&count(2), &daily(), ts("2026-11-06T00:00:00Z"));
    assert_eq!(keep, ["20261104T030000Z", "20261105T030000Z"]);
    assert_eq!(delete, ["20261101T030000Z", "20261102T030000Z", "20261103T030000Z"]);
    let (keep, delete) = choose_backups(&count(10), &daily(), ts("2026-11-06T00:00:00Z"));
    assert_eq!((keep.len(), delete.len()), (5, 0));
}

#[test]
fn the_order_of_the_catalog_does_not_matter() {
    let mut shuffled = daily();
    shuffled.reverse();
    shuffled.swap(1, 3);
    assert_eq!(
        choose_backups(&count(2), &shuffled, ts("2026-11-06T00:00:00Z")),
        choose_backups(&count(2), &daily(), ts("2026-11-06T00:00:00Z"))
    );
}

#[test]
fn a_window_keeps_what_recovery_to_its_first_instant_needs() {
    // Now is the 5th at 12:00; a 2-day window starts on the 3rd at 12:00. Backups of the 4th
    // and 5th stopped inside it; the 3rd's is the newest before it: recovery to the 3rd at
    // 12:00 starts from it.
    let (keep, delete) = choose_backups(&window(2), &daily(), ts("2026-11-05T12:00:00Z"));
    assert_eq!(keep, ["20261103T030000Z", "20261104T030000Z", "20261105T030000Z"]);
    assert_eq!(delete, ["20261101T030000Z", "20261102T030000Z"]);
    // A backup that stopped exactly at the window's start is the one recovery starts from.
    let (keep, _) = choose_backups(&window(2), &daily(), ts("2026-11-05T03:10:00Z"));
    assert_eq!(keep, ["20261103T030000Z", "20261104T030000Z", "20261105T030000Z"]);
    let (keep, _) = choose_backups(&window(2), &daily(), ts("2026-11-05T03:10:01Z"));
    assert_eq!(keep, ["20261103T030000Z", "20261104T030000Z", "20261105T030000Z"]);
    let (keep, _) = choose_backups(&window(2), &daily(), ts("2026-11-05T03:09:59Z"));
    assert_eq!(keep, ["20261102T030000Z", "20261103T030000Z", "20261104T030000Z", "20261105T030000Z"]);
}

#[test]
fn the_newest_backup_is_never_deleted() {
    // Every backup is older than the window: the newest one stays (and only it).
    let (keep, delete) = choose_backups(&window(1), &daily(), ts("2026-12-30T00:00:00Z"));
    assert_eq!(keep, ["20261105T030000Z"]);
    assert_eq!(delete.len(), 4);
    // A count of 0 (refused by validation) still keeps one.
    let (keep, _) = choose_backups(&count(0), &daily(), ts("2026-11-06T00:00:00Z"));
    assert_eq!(keep, ["20261105T030000Z"]);
    // No policy: everything is kept.
    let none = RetentionSpec { recovery_window_days: None, count: None };
    assert_eq!(choose_backups(&none, &daily(), ts("2026-11-06T00:00:00Z")).1, Vec::<String>::new());
    assert_eq!(choose_backups(&count(1), &[], ts("2026-11-06T00:00:00Z")), (vec![], vec![]));
}

#[test]
fn wal_before_the_oldest_kept_backup_goes_on_its_timeline() {
    let names: Vec<String> = (1..=12).map(|s| seg(1, 0, s)).collect();
    let mut names = names;
    names.push(format!("{}.00000028.backup", seg(1, 0, 4)));
    names.push(format!("{}.00000028.backup", seg(1, 0, 6)));
    let p = plan(&count(3), &daily(), &[], &names, None, ts("2026-11-06T00:00:00Z"));
    assert_eq!(p.wal_horizon, Some(SegmentId { timeline: 1, log: 0, seg: 6 }));
    let mut want: Vec<String> = (1..=5).map(|s| seg(1, 0, s)).collect();
    want.push(format!("{}.00000028.backup", seg(1, 0, 4)));
    assert_eq!(p.delete_wal, want);
}

#[test]
fn older_timelines_go_only_when_wholly_before_the_horizon() {
    // Timeline 1 ended in segment 7; timeline 2 started there (promotion), timeline 3 at 0x20.
    // A divergent ex-primary left timeline 2 going on past 0x20 (up to 0x22).
    let mut names = vec!["00000002.history".to_string(), "00000003.history".to_string()];
    names.extend((1..=7).map(|s| seg(1, 0, s)));
    names.push(format!("{}.partial", seg(1, 0, 7)));
    names.extend((7..=0x22).map(|s| seg(2, 0, s)));
    names.extend((0x20..=0x30).map(|s| seg(3, 0, s)));
    names.extend((0x0..=0x2).map(|s| seg(4, 1, s)));
    let horizon = SegmentId { timeline: 3, log: 0, seg: 0x28 };
    let gone = wal_before(horizon, &names);
    // Timeline 1: all before 0x28, deleted (the partial too); timeline 2 goes past 0x22 < 0x28:
    // all before, deleted. Timeline 3 before 0x28, deleted. History files and timeline 4 stay.
    let mut want: Vec<String> = (1..=7).map(|s| seg(1, 0, s)).collect();
    want.push(format!("{}.partial", seg(1, 0, 7)));
    want.extend((7..=0x22).map(|s| seg(2, 0, s)));
    want.extend((0x20..0x28).map(|s| seg(3, 0, s)));
    let mut sorted_gone = gone.clone();
    sorted_gone.sort();
    want.sort();
    assert_eq!(sorted_gone, want);

    // Horizon inside timeline 2's divergent tail: timeline 2 goes on past it, stays whole.
    let horizon = SegmentId { timeline: 3, log: 0, seg: 0x21 };
    let gone = wal_before(horizon, &names);
    assert!(gone.iter().all(|n| !n.starts_with("00000002")), "{gone:?}");
    assert!(gone.contains(&seg(1, 0, 3)) && gone.contains(&seg(3, 0, 0x20)) && !gone.contains(&seg(3, 0, 0x21)));
}

#[test]
fn the_horizon_compares_log_and_segment() {
    let names = vec![seg(1, 0, 0xFF), seg(1, 1, 0), seg(1, 1, 1), seg(1, 2, 0)];
    assert_eq!(wal_before(SegmentId { timeline: 1, log: 1, seg: 1 }, &names), [seg(1, 0, 0xFF), seg(1, 1, 0)]);
}

#[test]
fn no_backup_no_wal_deleted() {
    let names: Vec<String> = (1..=5).map(|s| seg(1, 0, s)).collect();
    let p = plan(&count(1), &[], &[], &names, None, ts("2026-11-06T00:00:00Z"));
    assert_eq!(p, Plan::default());
}

#[test]
fn an_unreadable_start_wal_deletes_no_wal() {
    let mut backups = daily();
    backups[3].start_wal = "garbage".into();
    let names: Vec<String> = (1..=12).map(|s| seg(1, 0, s)).collect();
    let p = plan(&count(2), &backups, &[], &names, None, ts("2026-11-06T00:00:00Z"));
    assert_eq!(p.keep.len(), 2);
    assert!(p.delete_wal.is_empty() && p.wal_horizon.is_none());
}

#[test]
fn interrupted_backups_go_after_a_day_but_not_the_one_in_progress() {
    let now = ts("2026-11-06T00:00:00Z");
    let dir =
        |id: &str, newest: &str, has_description| BackupDir { id: id.into(), has_description, newest: ts(newest) };
    let dirs = [
        dir("20261101T030000Z", "2026-11-01T03:10:00Z", true), // complete (or unreadable): never
        dir("20261102T030000Z", "2026-11-02T03:05:00Z", false), // interrupted long ago
        dir("20261105T030000Z", "2026-11-05T03:05:00Z", false), // interrupted, too recent
        dir("20261103T030000Z", "2026-11-03T03:05:00Z", false), // old, but running here
    ];
    assert_eq!(incomplete_to_delete(&dirs, Some("20261103T030000Z"), now), ["20261102T030000Z"]);
    // A backup in progress does not move the WAL horizon: it is not in the catalog.
    let names: Vec<String> = (1..=12).map(|s| seg(1, 0, s)).collect();
    let p = plan(&count(1), &daily(), &dirs, &names, Some("20261103T030000Z"), now);
    assert_eq!(p.keep, ["20261105T030000Z"]);
    assert_eq!(p.delete_wal, (1..10).map(|s| seg(1, 0, s)).collect::<Vec<_>>());
    assert_eq!(p.delete_incomplete, ["20261102T030000Z"]);
}

#[test]
fn backups_across_timelines_keep_the_oldest_kept_ones_wal() {
    // A failover between the 3rd and 4th: backups 4 and 5 are on timeline 2.
    let mut backups = daily();
    backups[3] = backup("20261104T030000Z", "2026-11-04T03:10:00Z", 2, 8);
    backups[4] = backup("20261105T030000Z", "2026-11-05T03:10:00Z", 2, 10);
    let mut names: Vec<String> = (1..=7).map(|s| seg(1, 0, s)).collect();
    names.push("00000002.history".into());
    names.extend((7..=11).map(|s| seg(2, 0, s)));
    let p = plan(&count(3), &backups, &[], &names, None, ts("2026-11-06T00:00:00Z"));
    // The oldest kept backup (the 3rd) started on timeline 1 in segment 6.
    assert_eq!(p.wal_horizon, Some(SegmentId { timeline: 1, log: 0, seg: 6 }));
    assert_eq!(p.delete_wal, (1..=5).map(|s| seg(1, 0, s)).collect::<Vec<_>>());
    let p = plan(&count(2), &backups, &[], &names, None, ts("2026-11-06T00:00:00Z"));
    let mut want: Vec<String> = (1..=7).map(|s| seg(1, 0, s)).collect();
    want.push(seg(2, 0, 7));
    assert_eq!(p.delete_wal, want);
}
