#![allow(clippy::unwrap_used)]
//! The walk, the exclusions, the sizes, and page checksums verified on the way.
use super::checksum::{BadPage, pg_checksum_page};
use super::*;
use std::collections::BTreeMap;

#[test]
fn postgres_exclusions() {
    for (path, want) in [
        ("PG_VERSION", Verdict::Include),
        ("base/1/1259", Verdict::Include),
        ("base/1/1259_fsm", Verdict::Include),
        ("global/pg_control", Verdict::Include),
        ("postgresql.auto.conf", Verdict::Include),
        ("pg_wal", Verdict::EmptyDir),
        ("pg_replslot", Verdict::EmptyDir),
        ("pg_stat_tmp", Verdict::EmptyDir),
        ("pg_subtrans", Verdict::EmptyDir),
        ("pg_stat", Verdict::Include),
        ("postmaster.pid", Verdict::Skip),
        ("postmaster.opts", Verdict::Skip),
        ("standby.signal", Verdict::Skip),
        ("recovery.signal", Verdict::Skip),
        ("backup_label", Verdict::Skip),
        ("backup_label.old", Verdict::Skip),
        ("pgwarden-recovery.conf", Verdict::Skip),
        ("base/pgsql_tmp", Verdict::Skip),
        ("base/16384/pgsql_tmp1234.0", Verdict::Skip),
        ("base/16384/pg_internal.init", Verdict::Skip),
        ("global/pg_internal.init.1234", Verdict::Skip),
        ("base/16384/t3_16390", Verdict::Skip),
        ("base/16384/t3_16390_fsm", Verdict::Skip),
        ("base/16384/t3_16390.1", Verdict::Skip),
        ("base/16384/t3_x", Verdict::Include),
        ("base/16384/tx_1", Verdict::Include),
        // Only at the top level.
        ("base/postmaster.pid", Verdict::Include),
        ("base/pg_wal", Verdict::Include),
    ] {
        assert_eq!(verdict(Path::new(path)), want, "{path}");
    }
}

fn entries(archive: &[u8]) -> BTreeMap<String, (tar::EntryType, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for e in tar::Archive::new(archive).entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let kind = e.header().entry_type();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(path, (kind, data));
    }
    out
}

#[test]
fn a_data_directory_streams_without_what_postgres_excludes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["base/1", "global", "pg_wal/archive_status", "pg_replslot/slot", "pg_tblspc", "base/pgsql_tmp"] {
        fs::create_dir_all(d.join(sub)).unwrap();
    }
    let long = "x".repeat(150);
    for (f, content) in [
        ("PG_VERSION", "15\n"),
        ("base/1/1259", "relation"),
        ("global/pg_control", "control"),
        ("postmaster.pid", "123"),
        ("standby.signal", ""),
        ("pg_wal/000000010000000000000001", "wal"),
        ("pg_wal/archive_status/000000010000000000000001.done", ""),
        ("pg_replslot/slot/state", "slot"),
        ("base/pgsql_tmp/pgsql_tmp1.0", "tmp"),
    ] {
        fs::write(d.join(f), content).unwrap();
    }
    fs::write(d.join("base/1").join(&long), "long name").unwrap();
    let space = tempfile::tempdir().unwrap();
    fs::create_dir_all(space.path().join("PG_15_1/5")).unwrap();
    fs::write(space.path().join("PG_15_1/5/16400"), "in a tablespace").unwrap();
    std::os::unix::fs::symlink(space.path(), d.join("pg_tblspc/16399")).unwrap();

    let mut tar = DataDirTar::new(Vec::new(), d);
    tar.append_data_dir().unwrap();
    tar.append_bytes("backup_label", b"START WAL LOCATION: 0/2000028\n").unwrap();
    let (out, totals) = tar.finish().unwrap();
    let got = entries(&out);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    let long_path = format!("base/1/{long}");
    let mut want = vec![
        "PG_VERSION",
        "backup_label",
        "base",
        "base/1",
        "base/1/1259",
        long_path.as_str(),
        "global",
        "global/pg_control",
        "pg_replslot",
        "pg_tblspc",
        "pg_wal",
        "pg_wal/archive_status",
    ];
    want.sort();
    assert_eq!(names, want, "the tablespace link is left out");
    assert_eq!(got["backup_label"].1, b"START WAL LOCATION: 0/2000028\n");
    assert_eq!(totals.files, 4);
    // pg_control comes last, before the label appended after the walk.
    let order: Vec<String> = tar::Archive::new(out.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(&order[order.len() - 2..], ["global/pg_control", "backup_label"]);

    // The tablespace on its own.
    assert_eq!(tablespaces(d).unwrap(), [("16399".to_string(), space.path().to_path_buf())]);
    let mut tar = DataDirTar::new(Vec::new(), space.path());
    tar.append_tree().unwrap();
    let (out, totals) = tar.finish().unwrap();
    let got = entries(&out);
    assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), ["PG_15_1", "PG_15_1/5", "PG_15_1/5/16400"]);
    assert_eq!(got["PG_15_1/5/16400"].1, b"in a tablespace");
    assert_eq!(totals.files, 1);
}

#[test]
fn files_that_shrink_or_grow_keep_their_declared_size() {
    let dir = tempfile::tempdir().unwrap();
    let (shrinks, grows) = (dir.path().join("shrinks"), dir.path().join("grows"));
    fs::write(&shrinks, vec![7u8; 3000]).unwrap();
    fs::write(&grows, vec![8u8; 700]).unwrap();
    let mut tar = DataDirTar::new(Vec::new(), dir.path());
    // Opened and measured, then changed before it is read.
    let mut file = File::open(&shrinks).unwrap();
    let meta = file.metadata().unwrap();
    fs::OpenOptions::new().write(true).open(&shrinks).unwrap().set_len(1000).unwrap();
    tar.append_content(&mut file, &meta, Path::new("shrinks"), &shrinks).unwrap();
    let mut file = File::open(&grows).unwrap();
    let meta = file.metadata().unwrap();
    fs::OpenOptions::new().append(true).open(&grows).unwrap().write_all(&[9u8; 5000]).unwrap();
    tar.append_content(&mut file, &meta, Path::new("grows"), &grows).unwrap();
    tar.append_file(&dir.path().join("vanished"), Path::new("vanished")).unwrap();
    let (out, totals) = tar.finish().unwrap();
    let got = entries(&out);
    let data = &got["shrinks"].1;
    assert_eq!(data.len(), 3000);
    assert!(data[..1000].iter().all(|b| *b == 7) && data[1000..].iter().all(|b| *b == 0));
    assert_eq!(got["grows"].1, vec![8u8; 700]);
    assert!(!got.contains_key("vanished"));
    assert_eq!(totals, Totals { data_bytes: 3700, files: 2, ..Totals::default() });
}

/// A page Postgres wrote (block 0 of a heap, `pd_lsn` 0/1814EE8).
const PAGE: &[u8; BLCKSZ] = include_bytes!("testdata/heap-block0.page");

/// `PAGE` with its checksum for block `blkno`.
fn page_for(blkno: u32) -> [u8; BLCKSZ] {
    let mut page = *PAGE;
    let sum = pg_checksum_page(&page, blkno);
    page[8..10].copy_from_slice(&sum.to_ne_bytes());
    page
}

#[test]
fn relation_pages_are_verified_as_they_are_read_and_stored_as_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["base/5", "global", "pg_xact"] {
        fs::create_dir_all(d.join(sub)).unwrap();
    }
    let mut bad = page_for(1);
    bad[6000] ^= 0x40;
    let relation: Vec<u8> = [page_for(0), bad, [0; BLCKSZ]].concat();
    fs::write(d.join("base/5/16384"), &relation).unwrap();
    // Segment 1: its first page is block 131072 of the relation.
    fs::write(d.join("base/5/16384.1"), page_for(checksum::RELSEG_SIZE)).unwrap();
    fs::write(d.join("base/5/16384_fsm"), page_for(1)).unwrap();
    // Not relation files: never checked, whatever they hold.
    for f in ["global/pg_control", "base/5/pg_filenode.map", "pg_xact/0000", "base/5/PG_VERSION"] {
        fs::write(d.join(f), PAGE).unwrap();
    }
    let checks = PageChecks { start_lsn: 0x2000028, in_tablespace: false, report_prefix: PathBuf::new() };
    let mut tar = DataDirTar::new(Vec::new(), d).verify_pages(checks.clone());
    tar.append_data_dir().unwrap();
    let (out, totals) = tar.finish().unwrap();
    assert_eq!(totals.pages.verified, 4, "two pages of 16384 (the third is new), one of 16384.1, one of the FSM");
    assert_eq!(totals.pages.failures, 2);
    assert_eq!(
        totals.pages.listed,
        [BadPage { file: "base/5/16384".into(), block: 1 }, BadPage { file: "base/5/16384_fsm".into(), block: 0 }]
    );
    assert_eq!(entries(&out)["base/5/16384"].1, relation, "a bad page is stored as read");

    // In a tablespace, named under pg_tblspc/<oid>; a backup started before the pages'
    // LSN does not check them.
    let space = tempfile::tempdir().unwrap();
    fs::create_dir_all(space.path().join("PG_15_202209061/5")).unwrap();
    fs::write(space.path().join("PG_15_202209061/5/16400"), bad).unwrap();
    let in_space = PageChecks { in_tablespace: true, report_prefix: "pg_tblspc/16399".into(), ..checks };
    let mut tar = DataDirTar::new(Vec::new(), space.path()).verify_pages(in_space.clone());
    tar.append_tree().unwrap();
    let (_, totals) = tar.finish().unwrap();
    assert_eq!(totals.pages.listed, [BadPage { file: "pg_tblspc/16399/PG_15_202209061/5/16400".into(), block: 0 }]);
    let mut tar =
        DataDirTar::new(Vec::new(), space.path()).verify_pages(PageChecks { start_lsn: 0x1814EE8, ..in_space });
    tar.append_tree().unwrap();
    let (_, totals) = tar.finish().unwrap();
    assert_eq!(totals.pages, ChecksumTally::default(), "changed since the start: not checked");

    // Without verification, nothing is checked.
    let mut tar = DataDirTar::new(Vec::new(), d);
    tar.append_data_dir().unwrap();
    assert_eq!(tar.finish().unwrap().1.pages, ChecksumTally::default());
}
