#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;

fn observed(initialized: bool, pg_wal: PgWal, staging_pg_wal: PgWal, content: Content) -> Observed {
    Observed { initialized, pg_wal, staging_pg_wal, content, foreign: None }
}

fn decide(o: &Observed) -> Result<Verdict, WalDirError> {
    verdict(Path::new("/data/pgdata"), Path::new("/wal/pg_wal"), o)
}

#[test]
fn without_a_data_directory_only_an_empty_or_orphaned_wal_dir_is_used() {
    use Content::*;
    for content in [Missing, Empty] {
        for staging in [PgWal::Missing, PgWal::LinkToWalDir, PgWal::NotALink] {
            let o = observed(false, PgWal::Missing, staging, content);
            assert_eq!(decide(&o).unwrap(), Verdict::Empty, "{o:?}");
        }
    }
    // Our own interrupted install or removal: the staging directory links to walDir.
    let o = observed(false, PgWal::Missing, PgWal::LinkToWalDir, Holds);
    assert_eq!(decide(&o).unwrap(), Verdict::Orphan);
    // Nothing links to it: maybe another instance's WAL, never deleted.
    for staging in [PgWal::Missing, PgWal::NotALink, PgWal::LinkElsewhere("/wal/.pg_wal.bootstrap".into())] {
        let o = observed(false, PgWal::Missing, staging, Holds);
        let e = decide(&o).unwrap_err();
        assert!(matches!(e, WalDirError::InUse { .. }), "{o:?}: {e:?}");
        assert!(e.to_string().contains("/wal/pg_wal holds files"), "{e}");
        assert!(e.hint().contains("empty or absent directory"), "{}", e.hint());
    }
    // Half a data directory links to it: neither deleted nor used.
    let o = observed(false, PgWal::LinkToWalDir, PgWal::LinkToWalDir, Holds);
    assert!(matches!(decide(&o).unwrap_err(), WalDirError::Damaged { .. }));
    let e = decide(&observed(false, PgWal::Missing, PgWal::LinkToWalDir, NotADirectory)).unwrap_err();
    assert!(matches!(e, WalDirError::NotADirectory { .. }), "{e:?}");
}

#[test]
fn a_data_directory_must_link_to_its_wal_dir() {
    let ok = observed(true, PgWal::LinkToWalDir, PgWal::Missing, Content::Holds);
    assert_eq!(decide(&ok).unwrap(), Verdict::InPlace);
    // An empty walDir is Postgres' to judge (a standby may get its WAL from the archive).
    let empty = observed(true, PgWal::LinkToWalDir, PgWal::Missing, Content::Empty);
    assert_eq!(decide(&empty).unwrap(), Verdict::InPlace);

    let inside = decide(&observed(true, PgWal::NotALink, PgWal::Missing, Content::Empty)).unwrap_err();
    assert!(matches!(inside, WalDirError::NotLinked { .. }), "{inside:?}");
    assert!(inside.to_string().contains("/data/pgdata/pg_wal is not a link to /wal/pg_wal"), "{inside}");
    assert!(inside.hint().contains("mv /data/pgdata/pg_wal /wal/pg_wal && ln -s /wal/pg_wal /data/pgdata/pg_wal"));

    let elsewhere = PgWal::LinkElsewhere("/old/wal".into());
    let e = decide(&observed(true, elsewhere, PgWal::Missing, Content::Holds)).unwrap_err();
    assert!(e.to_string().contains("links to /old/wal, not to /wal/pg_wal"), "{e}");
    assert!(e.hint().contains("set walDir to /old/wal"), "{}", e.hint());

    let unmounted = decide(&observed(true, PgWal::LinkToWalDir, PgWal::Missing, Content::Missing)).unwrap_err();
    assert!(matches!(unmounted, WalDirError::Missing { .. }), "{unmounted:?}");
    assert!(unmounted.hint().contains("mount the WAL volume"), "{}", unmounted.hint());

    let e = decide(&observed(true, PgWal::Missing, PgWal::Missing, Content::Holds)).unwrap_err();
    assert!(matches!(e, WalDirError::NoPgWal { .. }), "{e:?}");

    let mut foreign = ok.clone();
    foreign.foreign =
        Some(ForeignSegment { segment: "000000010000000000000003".into(), wal_system_id: 7, control_system_id: 9 });
    let e = decide(&foreign).unwrap_err();
    assert!(
        e.to_string().contains("000000010000000000000003 is WAL of another database system (system identifier 7"),
        "{e}"
    );
}

#[test]
fn system_identifiers_are_read_from_pg_control_and_segment_headers() {
    let id: u64 = 7_412_345_678_901_234_567;
    let mut control = id.to_ne_bytes().to_vec();
    control.extend([0u8; 300]);
    assert_eq!(control_system_identifier(&control), Some(id));
    assert_eq!(control_system_identifier(&[1, 2, 3]), None);

    let mut head = vec![0u8; LONG_HEADER_LEN];
    head[0..2].copy_from_slice(&0xD110u16.to_ne_bytes());
    head[2..4].copy_from_slice(&(XLP_LONG_HEADER | 0x0004).to_ne_bytes());
    head[SYSID_OFFSET..SYSID_OFFSET + 8].copy_from_slice(&id.to_ne_bytes());
    assert_eq!(segment_system_identifier(&head), Some(id));
    assert_eq!(segment_system_identifier(&head[..30]), None, "too short");
    assert_eq!(segment_system_identifier(&[0u8; LONG_HEADER_LEN]), None, "a pre-allocated segment");
    head[2..4].copy_from_slice(&0u16.to_ne_bytes());
    assert_eq!(segment_system_identifier(&head), None, "not a long header");

    assert!(is_segment_name("000000010000000A000000FF"));
    for name in ["00000002.history", "000000010000000000000001.partial", "000000010000000a000000ff", "archive_status"] {
        assert!(!is_segment_name(name), "{name}");
    }
}

/// A data directory (fake, enough for `is_initialized`) under `root`, its `pg_wal` a link to
/// `wal`, and a segment of system `id` in `wal`.
fn fake_cluster(root: &Path, wal: &Path, id: u64) -> std::path::PathBuf {
    let data = root.join("pgdata");
    std::fs::create_dir_all(data.join("global")).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(data.join("global/pg_control"), id.to_ne_bytes()).unwrap();
    std::fs::create_dir_all(wal.join("archive_status")).unwrap();
    std::os::unix::fs::symlink(wal, data.join("pg_wal")).unwrap();
    write_segment(wal, "000000010000000000000001", id);
    data
}

fn write_segment(wal: &Path, name: &str, id: u64) {
    let mut head = vec![0u8; 8192];
    head[2..4].copy_from_slice(&XLP_LONG_HEADER.to_ne_bytes());
    head[SYSID_OFFSET..SYSID_OFFSET + 8].copy_from_slice(&id.to_ne_bytes());
    std::fs::write(wal.join(name), head).unwrap();
}

fn paths(root: &Path) -> Paths {
    Paths::new(&root.join("pgdata"), &root.join("run")).with_wal_dir(Some(&root.join("walvol/pg_wal")))
}

#[test]
fn observe_reads_links_content_and_foreign_segments() {
    let d = tempfile::tempdir().unwrap();
    let p = paths(d.path());
    let wal = p.wal_dir.clone().unwrap();
    std::fs::create_dir_all(wal.parent().unwrap()).unwrap();
    assert_eq!(inspect(&p).unwrap(), Some(Verdict::Empty), "nothing there yet");

    fake_cluster(d.path(), &wal, 42);
    assert_eq!(inspect(&p).unwrap(), Some(Verdict::InPlace));
    // Zero-filled (pre-allocated) segments and other files say nothing.
    std::fs::write(wal.join("000000010000000000000002"), vec![0u8; 8192]).unwrap();
    std::fs::write(wal.join("00000002.history"), "1\t0/3000000\tno recovery target specified\n").unwrap();
    assert_eq!(inspect(&p).unwrap(), Some(Verdict::InPlace));

    write_segment(&wal, "000000010000000000000003", 43);
    let e = inspect(&p).unwrap_err();
    assert!(matches!(&e, WalDirError::Foreign { foreign, .. } if foreign.wal_system_id == 43), "{e:?}");
    std::fs::remove_file(wal.join("000000010000000000000003")).unwrap();

    // The same directory through a link of its parent is the same walDir.
    let alias = d.path().join("alias");
    std::os::unix::fs::symlink(wal.parent().unwrap(), &alias).unwrap();
    let through_alias = Paths::new(&p.data_dir, &p.run_dir).with_wal_dir(Some(&alias.join("pg_wal")));
    assert_eq!(inspect(&through_alias).unwrap(), Some(Verdict::InPlace));

    // A relative link is relative to the data directory.
    std::fs::remove_file(p.data_dir.join("pg_wal")).unwrap();
    std::os::unix::fs::symlink("../walvol/pg_wal", p.data_dir.join("pg_wal")).unwrap();
    assert_eq!(inspect(&p).unwrap(), Some(Verdict::InPlace));

    std::fs::remove_file(p.data_dir.join("pg_wal")).unwrap();
    std::fs::create_dir(p.data_dir.join("pg_wal")).unwrap();
    assert!(matches!(inspect(&p), Err(WalDirError::NotLinked { .. })));
}

fn me() -> OsUser {
    OsUser {
        name: "me".into(),
        uid: nix::unistd::Uid::effective().as_raw(),
        gid: nix::unistd::Gid::effective().as_raw(),
        switch: false,
    }
}

/// Builds what initdb would: a staging directory whose `pg_wal` links to the staging WAL
/// directory, holding a segment.
fn build(p: &Paths) -> crate::pgdata::Staging {
    let staging = crate::pgdata::Staging { data: p.staging_dir(), wal: p.wal_staging_dir() };
    let wal = staging.wal.clone().unwrap();
    std::fs::create_dir_all(staging.data.join("global")).unwrap();
    std::fs::write(staging.data.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(staging.data.join("global/pg_control"), 42u64.to_ne_bytes()).unwrap();
    std::fs::create_dir_all(wal.join("archive_status")).unwrap();
    std::os::unix::fs::symlink(&wal, staging.data.join("pg_wal")).unwrap();
    write_segment(&wal, "000000010000000000000001", 42);
    staging
}

#[test]
fn an_install_interrupted_anywhere_is_cleaned_up_or_complete() {
    let d = tempfile::tempdir().unwrap();
    let p = paths(d.path());
    let wal_dir = p.wal_dir.clone().unwrap();
    std::fs::create_dir_all(wal_dir.parent().unwrap()).unwrap();

    // Crash after the re-link, before the WAL moved: walDir is still empty.
    let staging = build(&p);
    let link = staging.data.join("pg_wal");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&wal_dir, &link).unwrap();
    assert_eq!(inspect(&p).unwrap(), Some(Verdict::Empty));
    staging.discard();

    // Crash after the WAL moved, before the data directory did: an orphan, deleted.
    let staging = build(&p);
    install(&staging.data, staging.wal.as_ref().unwrap(), &wal_dir, &me()).unwrap();
    assert_eq!(std::fs::read_link(&link).unwrap(), wal_dir, "re-linked to walDir");
    assert!(wal_dir.join("000000010000000000000001").is_file());
    assert_eq!(inspect(&p).unwrap(), Some(Verdict::Orphan));
    clear_orphan(&p).unwrap();
    assert!(!wal_dir.exists(), "the orphaned WAL is gone");
    staging.discard();

    // The whole install: the data directory links to walDir.
    let staging = build(&p);
    crate::pgdata::install_staging(&me(), &p, &staging).unwrap();
    assert_eq!(std::fs::read_link(p.data_dir.join("pg_wal")).unwrap(), wal_dir);
    assert_eq!(inspect(&p).unwrap(), Some(Verdict::InPlace));
    clear_orphan(&p).unwrap();
    assert!(wal_dir.join("000000010000000000000001").is_file(), "a data directory's WAL is never an orphan");

    // Removal: the WAL goes with the data directory.
    crate::pgdata::remove_data_dir(&p).unwrap();
    assert!(!p.data_dir.exists() && !p.staging_dir().exists() && !wal_dir.exists());
}

#[test]
fn wal_nobody_links_to_is_never_deleted() {
    let d = tempfile::tempdir().unwrap();
    let p = paths(d.path());
    let wal_dir = p.wal_dir.clone().unwrap();
    std::fs::create_dir_all(&wal_dir).unwrap();
    write_segment(&wal_dir, "000000010000000000000001", 42);
    let e = clear_orphan(&p).unwrap_err();
    assert!(e.needs_person(), "{e:?}");
    assert!(e.to_string().starts_with("walDir: "), "{e}");
    assert!(e.to_string().contains("(fix: "), "{e}");
    // Not even when a staging directory is there that links elsewhere (the tools' WAL staging).
    let staging = build(&p);
    assert!(clear_orphan(&p).is_err());
    assert!(wal_dir.join("000000010000000000000001").is_file());
    staging.discard();
}

#[test]
fn a_restored_pg_wal_becomes_a_link_and_wal_in_it_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let staging = d.path().join("staging");
    let wal = d.path().join("walvol/.pg_wal.bootstrap");
    std::fs::create_dir_all(staging.join("pg_wal/archive_status")).unwrap();
    std::fs::create_dir_all(&wal).unwrap();
    link_restored(&staging, &wal, &me()).unwrap();
    assert_eq!(std::fs::read_link(staging.join("pg_wal")).unwrap(), wal);
    assert!(wal.join("archive_status").is_dir());

    let other = d.path().join("other");
    std::fs::create_dir_all(other.join("pg_wal")).unwrap();
    std::fs::write(other.join("pg_wal/000000010000000000000001"), b"wal").unwrap();
    assert!(link_restored(&other, &d.path().join("w2"), &me()).is_err());
    assert!(other.join("pg_wal/000000010000000000000001").is_file(), "WAL in a restored pg_wal is kept");
}
