#![allow(clippy::unwrap_used)]
use super::*;
use crate::archive::layout::{DEFAULT_SEGMENT_SIZE, WalName, parse_wal_name};

const SEG: u64 = DEFAULT_SEGMENT_SIZE;

fn id(name: &str) -> SegmentId {
    match parse_wal_name(name).unwrap() {
        WalName::Segment(s) => s,
        other => panic!("{other:?}"),
    }
}

fn set(names: &[&str]) -> BTreeSet<SegmentId> {
    names.iter().map(|n| id(n)).collect()
}

/// Timeline 5 branched from 4 at 0/20000000; 6 from 5 at 0/51000000 (a segment boundary).
fn six() -> Vec<Span> {
    let history =
        parse_history("1\t0/3000000\tno recovery target specified\n\n# c\n4\t0/20000000\tx\n5\t0/51000000\ty\n");
    path(6, &history.unwrap())
}

#[test]
fn history_files_parse_and_bad_lines_are_named() {
    let h = parse_history("1\t0/3000000\tno recovery target specified\n2\t1/A2000028\tat restore point\n").unwrap();
    assert_eq!(h, [Switch { timeline: 1, lsn: 0x300_0000 }, Switch { timeline: 2, lsn: 0x1_A200_0028 }]);
    let e = parse_history("x y z").unwrap_err();
    assert_eq!(e, HistoryError { line: "x y z".into() });
    assert!(e.to_string().contains("x y z"), "{e}");
    assert_eq!(lsn_text(0x1_A200_0028), "1/A2000028");
}

#[test]
fn the_path_follows_the_newest_history() {
    let p = six();
    assert_eq!(p.first(), Some(&Span { timeline: 1, begin: 0, end: Some(0x300_0000) }));
    assert_eq!(p.last(), Some(&Span { timeline: 6, begin: 0x5100_0000, end: None }));
    assert_eq!(path(1, &[]), [Span { timeline: 1, begin: 0, end: None }]);
}

#[test]
fn segment_numbers_round_trip() {
    let s = id("00000005000000010000003F");
    assert_eq!(segment_at(5, segno(s, SEG), SEG), s);
    assert_eq!(segno(id("000000050000000000000001"), SEG), 1);
}

#[test]
fn a_segment_wholly_before_a_branch_point_is_a_gap_naming_both_timelines() {
    let why = missing_reason(id("00000005000000000000003F"), SEG, &six(), None).unwrap();
    assert_eq!(
        why,
        "00000005000000000000003F is missing from the archive but timeline 6 branches from timeline 5 at \
         0/51000000: refusing to end recovery before it"
    );
    // The last whole segment before the switch too.
    assert!(missing_reason(id("000000050000000000000050"), SEG, &six(), None).is_some());
}

#[test]
fn the_end_of_the_archive_and_segments_past_a_switch_are_not_gaps() {
    // Past timeline 5's end: recovery reads timeline 6 there.
    assert_eq!(missing_reason(id("000000050000000000000051"), SEG, &six(), None), None);
    // Timeline 6 before it began: Postgres probes, nothing is missing.
    assert_eq!(missing_reason(id("000000060000000000000040"), SEG, &six(), None), None);
    // The newest timeline's next segment with nothing after it: the end.
    assert_eq!(missing_reason(id("000000060000000000000060"), SEG, &six(), None), None);
    // A timeline not on the newest one's path (a sibling) is not judged.
    assert_eq!(missing_reason(id("000000030000000000000010"), SEG, &six(), None), None);
}

#[test]
fn a_switch_in_the_middle_of_a_segment_leaves_that_segment_to_the_child() {
    let p = path(3, &parse_history("2\t0/3E01F270\tx\n").unwrap());
    assert_eq!(missing_reason(id("00000002000000000000003E"), SEG, &p, None), None);
    assert!(missing_reason(id("00000002000000000000003D"), SEG, &p, None).is_some());
}

#[test]
fn a_later_segment_of_the_newest_timeline_makes_a_gap() {
    let later = id("000000060000000000000062");
    let why = missing_reason(id("000000060000000000000060"), SEG, &six(), Some(later)).unwrap();
    assert!(why.contains("000000060000000000000060 is missing") && why.contains("(000000060000000000000062)"), "{why}");
}

#[test]
fn a_whole_archive_has_no_gap() {
    let p = path(2, &parse_history("1\t0/5000000\tx\n").unwrap());
    let archived = set(&["000000010000000000000003", "000000010000000000000004", "000000020000000000000005"]);
    let scan = scan(id("000000010000000000000003"), SEG, &p, &archived).unwrap();
    assert_eq!(scan.missing_count, 0, "{scan:?}");
    assert_eq!(scan.to, Some(id("000000020000000000000005")));
}

#[test]
fn the_failover_gap_is_found_up_to_the_branch_point() {
    // Timeline 5 archived up to 3E; 6 branches at 0/51000000 and has 51, 52.
    let mut names: Vec<String> = (0x30..=0x3E).map(|s| format!("0000000500000000000000{s:02X}")).collect();
    names.extend(["000000060000000000000051".into(), "000000060000000000000052".into()]);
    let archived: BTreeSet<SegmentId> = names.iter().map(|n| id(n)).collect();
    let scan = scan(id("000000050000000000000030"), SEG, &six(), &archived).unwrap();
    assert_eq!(scan.missing_count, 0x50 - 0x3F + 1);
    assert_eq!(scan.missing.first(), Some(&id("00000005000000000000003F")));
    assert_eq!(scan.missing.last(), Some(&id("000000050000000000000050")));
    // Even before timeline 6 archived anything: its history says timeline 5 went on to 0/51000000.
    let only_five: BTreeSet<SegmentId> = archived.iter().filter(|s| s.timeline == 5).copied().collect();
    let scan = super::scan(id("000000050000000000000030"), SEG, &six(), &only_five).unwrap();
    assert_eq!(scan.missing_count, 0x50 - 0x3F + 1);
}

#[test]
fn a_hole_in_one_timeline_is_found_and_the_switch_segment_belongs_to_the_child() {
    let p = path(3, &parse_history("2\t0/3E01F270\tx\n").unwrap());
    let archived = set(&[
        "00000002000000000000003B",
        "00000002000000000000003D",
        "00000003000000000000003E",
        "00000003000000000000003F",
    ]);
    let scan = scan(id("00000002000000000000003B"), SEG, &p, &archived).unwrap();
    assert_eq!(scan.missing, [id("00000002000000000000003C")]);
    // Without the child's copy of the switch segment, that one is missing (named on the child).
    let archived = set(&["00000002000000000000003D", "00000003000000000000003F"]);
    let scan = super::scan(id("00000002000000000000003D"), SEG, &p, &archived).unwrap();
    assert_eq!(scan.missing, [id("00000003000000000000003E")]);
}

#[test]
fn a_backup_off_the_newest_path_is_not_judged() {
    assert_eq!(scan(id("000000030000000000000010"), SEG, &six(), &BTreeSet::new()), None);
}
