#![allow(clippy::unwrap_used)]
//! Checksums against pages Postgres 15 wrote (`initdb --data-checksums`; a heap of
//! `md5(g::text)` rows, `VACUUM FREEZE`, `CHECKPOINT`, the server stopped, then blocks 0 and 8
//! of its file read with `dd`; `pg_checksums --check` found no bad page).

use std::path::Path;

use super::*;

/// Block 0 of the heap: `pd_lsn` 0/1814EE8, `pd_checksum` 0xFA94.
const BLOCK0: &[u8; BLCKSZ] = include_bytes!("testdata/heap-block0.page");
/// Block 8, the last (half full): `pd_checksum` 0x75B7.
const BLOCK8: &[u8; BLCKSZ] = include_bytes!("testdata/heap-block8.page");

#[test]
fn checksums_are_the_ones_postgres_wrote() {
    assert_eq!(u16_at(BLOCK0, CHECKSUM_AT), 0xFA94);
    assert_eq!(pg_checksum_page(BLOCK0, 0), 0xFA94);
    assert_eq!(u16_at(BLOCK8, CHECKSUM_AT), 0x75B7);
    assert_eq!(pg_checksum_page(BLOCK8, 8), 0x75B7);
    assert_eq!(page_lsn(BLOCK0), 0x1814EE8);
    // The block number is part of it: a page moved elsewhere does not verify.
    assert_ne!(pg_checksum_page(BLOCK8, 9), 0x75B7);
    assert_ne!(pg_checksum_page(BLOCK8, 8 + RELSEG_SIZE), 0x75B7);
    // The stored checksum itself is not.
    let mut page = *BLOCK0;
    page[CHECKSUM_AT] ^= 0xFF;
    assert_eq!(pg_checksum_page(&page, 0), 0xFA94);
}

#[test]
fn the_checksum_is_never_zero() {
    let mut page = [0xA5; BLCKSZ];
    for blkno in 0..2000 {
        page[100] = blkno as u8;
        assert_ne!(pg_checksum_page(&page, blkno), 0);
    }
}

#[test]
fn new_pages_and_pages_changed_since_the_start_are_skipped() {
    let start = 0x2000028;
    assert_eq!(check_page(BLOCK0, 0, start), PageVerdict::Valid);
    assert_eq!(check_page(&[0; BLCKSZ], 0, start), PageVerdict::Skipped, "all zeros: new");
    let mut page = *BLOCK0;
    page[UPPER_AT] = 0;
    page[UPPER_AT + 1] = 0;
    assert_eq!(check_page(&page, 0, start), PageVerdict::Skipped, "pd_upper 0: new");
    assert_eq!(check_page(BLOCK0, 0, 0x1814EE8), PageVerdict::Skipped, "written at the start");
    assert_eq!(check_page(BLOCK0, 0, 0x1814EE9), PageVerdict::Valid);
    let mut bad = *BLOCK0;
    bad[5000] ^= 1;
    let PageVerdict::Mismatch { stored, computed } = check_page(&bad, 0, start) else { panic!("not a mismatch") };
    assert_eq!(stored, 0xFA94);
    assert_ne!(computed, stored);
    // A page of a later segment uses its block number in the relation.
    assert!(matches!(check_page(BLOCK8, 8 + RELSEG_SIZE, start), PageVerdict::Mismatch { .. }));
}

#[test]
fn relation_segments_are_named_for_postgres_files() {
    for (path, in_tablespace, want) in [
        ("base/5/16384", false, Some(0)),
        ("base/5/16384.1", false, Some(1)),
        ("base/5/16384.12", false, Some(12)),
        ("base/5/16384_fsm", false, Some(0)),
        ("base/5/16384_vm", false, Some(0)),
        ("base/5/16384_init", false, Some(0)),
        ("base/5/16384_fsm.2", false, Some(2)),
        ("global/1262", false, Some(0)),
        ("pg_tblspc/16399/PG_15_202209061/5/16400", false, Some(0)),
        ("PG_15_202209061/5/16400.3", true, Some(3)),
        // Not relation files: Postgres' own exceptions, and anything else.
        ("global/pg_control", false, None),
        ("global/pg_filenode.map", false, None),
        ("base/5/pg_filenode.map", false, None),
        ("base/5/PG_VERSION", false, None),
        ("base/5/pg_internal.init", false, None),
        ("base/5/16384.0", false, None),
        ("base/5/16384.", false, None),
        ("base/5/16384_xyz", false, None),
        ("base/5/16384.old", false, None),
        ("base/5/_fsm", false, None),
        ("PG_15_202209061/5/PG_VERSION", true, None),
        // Outside the places relations live.
        ("pg_xact/0000", false, None),
        ("pg_multixact/offsets/0000", false, None),
        ("16384", false, None),
    ] {
        assert_eq!(relation_segment(Path::new(path), in_tablespace), want, "{path}");
    }
}

#[test]
fn a_file_is_checked_across_reads_of_any_size() {
    // A file of four pages: good, bad, new, good (block 8's content as block 3).
    let mut bad = *BLOCK0;
    bad[7000] ^= 0x10;
    let mut file = Vec::new();
    for page in [BLOCK0, &bad, &[0; BLCKSZ]] {
        file.extend_from_slice(page);
    }
    let mut block3 = *BLOCK8;
    let sum = pg_checksum_page(&block3, 3).to_ne_bytes();
    block3[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&sum);
    file.extend_from_slice(&block3);
    file.extend_from_slice(&[1; 100]);
    let start = 0x2000028;
    for read in [1usize, 3000, 8192, 10_000, 1 << 20] {
        let mut tally = ChecksumTally::default();
        let mut check = FileCheck::new("base/5/16384".into(), 0, start);
        let mut reread = |offset: u64, page: &mut [u8; BLCKSZ]| {
            assert_eq!(offset, 8192, "only the bad page is read again");
            page.copy_from_slice(&bad);
            Ok(true)
        };
        for chunk in file.chunks(read) {
            check.feed(chunk, &mut reread, &mut tally);
        }
        check.finish();
        assert_eq!(tally.verified, 3, "read {read}");
        assert_eq!(tally.failures, 1, "read {read}");
        assert_eq!(tally.listed, [BadPage { file: "base/5/16384".into(), block: 1 }], "read {read}");
    }
}

#[test]
fn a_page_read_while_postgres_wrote_it_is_judged_on_the_second_read() {
    // Torn: the old LSN, part of the new content. Read again: the new page, changed after
    // the start, not checked.
    let mut torn = *BLOCK0;
    torn[6000] ^= 0xFF;
    let mut rewritten = *BLOCK0;
    rewritten[0] = 0x01;
    let mut tally = ChecksumTally::default();
    let mut check = FileCheck::new("base/5/16384".into(), 0, 0x2000028);
    check.feed(
        &torn,
        &mut |_, page| {
            page.copy_from_slice(&rewritten);
            Ok(true)
        },
        &mut tally,
    );
    assert_eq!((tally.verified, tally.failures), (0, 0));
    // Truncated meanwhile: gone, not bad.
    let mut check = FileCheck::new("base/5/16384".into(), 0, 0x2000028);
    check.feed(&torn, &mut |_, _| Ok(false), &mut tally);
    assert_eq!((tally.verified, tally.failures), (0, 0));
    // A later segment counts its blocks from segno × RELSEG_SIZE.
    let mut check = FileCheck::new("base/5/16384.1".into(), 1, 0x2000028);
    check.feed(BLOCK0, &mut rereads_as(BLOCK0), &mut tally);
    assert_eq!(tally.failures, 1, "block 0 of segment 1 is block 131072");
    assert_eq!(tally.listed[0], BadPage { file: "base/5/16384.1".into(), block: 0 });
}

/// A second read that finds `page`.
fn rereads_as(page: &[u8; BLCKSZ]) -> impl FnMut(u64, &mut [u8; BLCKSZ]) -> std::io::Result<bool> + '_ {
    move |_, out| {
        out.copy_from_slice(page);
        Ok(true)
    }
}

#[test]
fn tallies_add_up_and_list_at_most_the_first_hundred() {
    let page = |n: u32| BadPage { file: format!("base/5/{n}"), block: n };
    let mut all = ChecksumTally { verified: 10, failures: 60, listed: (0..60).map(page).collect() };
    all.add(ChecksumTally { verified: 5, failures: 70, listed: (60..130).map(page).collect() });
    assert_eq!((all.verified, all.failures, all.listed.len()), (15, 130, MAX_LISTED));
    assert_eq!(all.listed.last(), Some(&page(99)));
}
