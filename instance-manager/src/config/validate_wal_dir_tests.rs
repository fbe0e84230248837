#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;
use crate::config::{parse, validate};

/// Every problem with `walDir`, as `field: message (fix: hint)`.
fn wal_dir_problems(root: &Path, wal_dir: &str) -> Vec<String> {
    let text = format!(
        "name: pg-1\ndataDir: {0}/pgdata\nrunDir: {0}/run\nbinDir: /usr/lib/postgresql/15/bin\nwalDir: {wal_dir}\n",
        root.display()
    );
    match validate(parse(&text, Path::new("t")).unwrap()) {
        Ok(_) => Vec::new(),
        Err(p) => p.0.into_iter().map(|p| format!("{}: {} (fix: {})", p.field, p.message, p.hint)).collect(),
    }
}

fn one(problems: &[String]) -> &str {
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with("walDir: "), "{problems:#?}");
    &problems[0]
}

/// Gives `path` (and what is under it) to Postgres' OS user, as the manager would.
fn give(path: &Path) {
    let user = crate::osuser::OsUser::for_postgres("postgres").unwrap();
    for entry in walk(path) {
        user.lchown(&entry).unwrap();
    }
}

fn walk(path: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![path.to_path_buf()];
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

#[test]
fn a_wal_dir_on_its_own_volume_is_accepted() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("walvol")).unwrap();
    let wal = format!("{}/walvol/pg_wal", d.path().display());
    assert!(wal_dir_problems(d.path(), &wal).is_empty());
    // An existing empty directory too.
    std::fs::create_dir(d.path().join("walvol/pg_wal")).unwrap();
    assert!(wal_dir_problems(d.path(), &wal).is_empty());
}

#[test]
fn a_relative_or_overlapping_wal_dir_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = one(&wal_dir_problems(d.path(), "wal/pg_wal")).to_string();
    assert!(p.contains("is not an absolute path") && p.contains("fix: use an absolute path"), "{p}");

    let root = d.path().display();
    for (wal, says) in [
        (format!("{root}/pgdata"), "is dataDir itself"),
        (format!("{root}/pgdata/pg_wal"), "is inside dataDir"),
        (format!("{root}/pgdata/../pgdata/wal"), "is inside dataDir"),
        (root.to_string(), "contains dataDir"),
        (format!("{root}/./"), "contains dataDir"),
    ] {
        let problems = wal_dir_problems(d.path(), &wal);
        let p = one(&problems);
        assert!(p.contains(says) && p.contains("fix: give the WAL a directory of its own"), "{wal}: {p}");
    }
    // Through a symbolic link of an ancestor.
    std::fs::create_dir(d.path().join("pgdata")).unwrap();
    std::os::unix::fs::symlink(d.path().join("pgdata"), d.path().join("alias")).unwrap();
    let problems = wal_dir_problems(d.path(), &format!("{root}/alias/wal"));
    assert!(one(&problems).contains("is inside dataDir"), "{problems:?}");
}

#[test]
fn a_wal_dir_without_its_volume_or_that_is_not_a_plain_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().display();
    let problems = wal_dir_problems(d.path(), &format!("{root}/walvol/pg_wal"));
    let p = one(&problems);
    assert!(
        p.contains("parent directory") && p.contains("does not exist") && p.contains("mount the WAL volume"),
        "{p}"
    );

    std::fs::write(d.path().join("file"), "x").unwrap();
    let problems = wal_dir_problems(d.path(), &format!("{root}/file"));
    assert!(one(&problems).contains("is not a directory"), "{problems:?}");

    std::fs::create_dir(d.path().join("real")).unwrap();
    std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
    let problems = wal_dir_problems(d.path(), &format!("{root}/link"));
    assert!(one(&problems).contains("is a symbolic link"), "{problems:?}");

    // /proc is a mount point (and not ours to own).
    let problems = wal_dir_problems(d.path(), "/proc");
    assert!(
        problems.iter().any(|p| p.contains("/proc is a mount point") && p.contains("subdirectory")),
        "{problems:?}"
    );
}

#[test]
fn wal_that_no_data_directory_links_to_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let wal = d.path().join("walvol/pg_wal");
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::write(wal.join("000000010000000000000001"), b"someone's WAL").unwrap();
    give(&wal);
    let problems = wal_dir_problems(d.path(), &wal.display().to_string());
    let p = one(&problems);
    assert!(p.contains("holds files, and no data directory of this instance links to it"), "{p}");
}

#[test]
fn a_data_directory_keeping_its_wal_inside_is_refused_with_the_commands_that_move_it() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("pgdata");
    std::fs::create_dir_all(data.join("global")).unwrap();
    std::fs::create_dir_all(data.join("pg_wal")).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(data.join("global/pg_control"), 42u64.to_ne_bytes()).unwrap();
    give(&data);
    std::fs::create_dir(d.path().join("walvol")).unwrap();
    let wal = d.path().join("walvol/pg_wal");
    let problems = wal_dir_problems(d.path(), &wal.display().to_string());
    let p = one(&problems);
    assert!(p.contains(&format!("{}/pg_wal is not a link to {}", data.display(), wal.display())), "{p}");
    assert!(p.contains("remove walDir from the configuration, or move the WAL"), "{p}");
}

#[test]
fn overlap_is_lexical_and_resolved() {
    let root = Path::new("/nonexistent-pgwarden");
    assert!(overlap(&root.join("data"), &root.join("wal")).is_none());
    assert!(overlap(&root.join("data"), &root.join("data-wal")).is_none(), "a common prefix is not containment");
    assert!(overlap(&root.join("data"), &root.join("data/../wal")).is_none());
    assert!(overlap(&root.join("data"), &root.join("wal/../data/x")).is_some());
}
