#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::api::WalReceiver;
use crate::cli::status::tests::{primary_status, replica_status};

fn healthy(status: InstanceStatus) -> Facts {
    let path = PathBuf::from(&status.data_dir);
    let data_dir = DataDirFacts {
        path,
        inspect_error: None,
        exists: true,
        is_dir: true,
        mode: 0o700,
        owner_uid: 999,
        expected_owner_uid: 999,
        has_pg_version: true,
    };
    let disk = DiskFacts { total_bytes: 100 << 30, available_bytes: 60 << 30 };
    Facts {
        api_target: "unix:///run/pgwarden/manager.sock".into(),
        status: Ok(status),
        readyz: Some(200),
        data_dir: Some(data_dir),
        disk: Some(Ok(disk)),
        wal_disk: None,
        certificates: Vec::new(),
        now: jiff::Timestamp::now(),
    }
}

fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name}: {checks:#?}"))
}

#[test]
fn healthy_primary_passes_every_check() {
    let checks = evaluate_checks(&healthy(primary_status()));
    assert!(checks.iter().all(|c| c.outcome == Outcome::Ok && c.hint.is_none()), "{checks:#?}");
    assert_eq!(find(&checks, "replication").detail, "2 standbys connected: pg-1 streaming, pg-2-long-name streaming");
    assert_eq!(
        find(&checks, "disk space").detail,
        "40% used, 60.0 GiB free of 100.0 GiB under /var/lib/postgresql/data"
    );
    assert_eq!(CheckResult::from(checks).exit_code(), 0);
}

#[test]
fn replica_not_streaming_fails_with_a_hint() {
    let mut status = replica_status();
    status.wal_receiver = Some(WalReceiver { status: "waiting".into(), sender_host: None, sender_port: None });
    let checks = evaluate_checks(&healthy(status));
    let check = find(&checks, "replication");
    assert_eq!((check.outcome, check.detail.as_str()), (Outcome::Fail, "not streaming: waiting"));
    assert!(check.hint.as_deref().is_some_and(|h| h.contains("primary_conninfo")), "{check:?}");
    let result = CheckResult::from(checks);
    assert_eq!(result.exit_code(), 1);
    let table = result.render_table();
    let hint_line = table.lines().skip_while(|l| !l.starts_with("replication")).nth(1).unwrap_or_default();
    assert!(hint_line.starts_with(&format!("{:31}hint: check primary_conninfo", "")), "{table}");
}

#[test]
fn replica_lag_and_pending_restart_warn_config_error_fails() {
    let mut status = replica_status();
    (status.replay_lag_seconds, status.config_error) = (Some(75.0), Some("invalid work_mem".into()));
    status.pending_restart = vec!["shared_buffers".into()];
    let checks = evaluate_checks(&healthy(status));
    assert_eq!(find(&checks, "replication").outcome, Outcome::Ok);
    assert_eq!(find(&checks, "replay lag").outcome, Outcome::Warn);
    let pending = find(&checks, "pending restart");
    assert!(pending.outcome == Outcome::Warn && pending.detail.ends_with("shared_buffers"), "{pending:?}");
    assert!(pending.hint.as_deref().is_some_and(|h| h.contains("restart the pod")), "{pending:?}");
    let config = find(&checks, "configuration");
    assert_eq!((config.outcome, config.detail.as_str()), (Outcome::Fail, "invalid work_mem"));
}

#[test]
fn primary_without_standbys_warns() {
    let mut status = primary_status();
    status.replication.clear();
    let check = evaluate_checks(&healthy(status)).into_iter().find(|c| c.name == "replication");
    assert_eq!(check.map(|c| c.outcome), Some(Outcome::Warn));
}

#[test]
fn nearly_full_disk_fails() {
    let mut facts = healthy(primary_status());
    facts.disk = Some(Ok(DiskFacts { total_bytes: 100 << 30, available_bytes: 4 << 30 }));
    let checks = evaluate_checks(&facts);
    let disk = find(&checks, "disk space");
    assert_eq!(disk.outcome, Outcome::Fail, "{disk:?}");
    assert!(disk.detail.starts_with("96% used"), "{disk:?}");
    facts.disk = Some(Ok(DiskFacts { total_bytes: 100, available_bytes: 15 }));
    assert_eq!(find(&evaluate_checks(&facts), "disk space").outcome, Outcome::Warn);
}

#[test]
fn open_data_dir_mode_fails_with_chmod() {
    let mut facts = healthy(primary_status());
    if let Some(dir) = &mut facts.data_dir {
        dir.mode = 0o755;
    }
    let checks = evaluate_checks(&facts);
    let dir = find(&checks, "data directory");
    assert_eq!(dir.outcome, Outcome::Fail);
    assert!(dir.detail.contains("mode 0755"), "{dir:?}");
    assert_eq!(dir.hint.as_deref(), Some("chmod 0700 /var/lib/postgresql/data"));
}

#[test]
fn unreachable_manager_still_checks_local_files() {
    let mut facts = healthy(primary_status());
    facts.status = Err("the instance manager at unix:///x.sock is not reachable: connection refused".into());
    let checks = evaluate_checks(&facts);
    let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
    assert_eq!(names, ["manager reachable", "data directory", "disk space"]);
    assert_eq!(checks[0].outcome, Outcome::Fail);
    assert!(checks[0].hint.as_deref().is_some_and(|h| h.contains("--api URL")), "{:?}", checks[0]);
    facts.data_dir = None;
    facts.disk = None;
    let checks = evaluate_checks(&facts);
    assert_eq!(find(&checks, "data directory").hint.as_deref(), Some("pass --data-dir PATH"));
}

#[test]
fn checks_serialise_in_snake_case() {
    let check = Check::fail("disk space", "96% used", "grow it");
    let json = serde_json::to_value(CheckResult::from(vec![check])).unwrap();
    let expected =
        serde_json::json!([{"name": "disk space", "outcome": "fail", "detail": "96% used", "hint": "grow it"}]);
    assert_eq!(json, expected);
}

#[test]
fn inspects_a_real_directory() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
    let facts = inspect_data_dir(dir.path());
    assert!(facts.exists && facts.is_dir && facts.has_pg_version && facts.inspect_error.is_none(), "{facts:?}");
    assert_eq!((facts.mode, facts.owner_uid), (0o750, facts.expected_owner_uid));
    assert!(!inspect_data_dir(&dir.path().join("missing")).exists);
    let disk = filesystem_space(dir.path()).unwrap();
    assert!(disk.total_bytes > 0 && disk.available_bytes <= disk.total_bytes, "{disk:?}");
}

#[test]
fn a_wal_volume_of_its_own_is_checked_too() {
    let mut facts = healthy(primary_status());
    let wal = PathBuf::from("/var/lib/postgresql/wal/pg_wal");
    facts.wal_disk = Some((wal.clone(), Ok(DiskFacts { total_bytes: 10 << 30, available_bytes: 1 << 29 })));
    let checks = evaluate_checks(&facts);
    assert_eq!(find(&checks, "disk space").outcome, Outcome::Ok, "the data volume is fine");
    let check = find(&checks, "WAL disk space");
    assert_eq!(check.outcome, Outcome::Fail, "{check:?}");
    assert!(check.detail.starts_with("95% used") && check.detail.ends_with("under /var/lib/postgresql/wal/pg_wal"));
    facts.wal_disk = Some((wal, Err("statvfs /var/lib/postgresql/data/pgdata/pg_wal: ENOENT".into())));
    assert_eq!(find(&evaluate_checks(&facts), "WAL disk space").outcome, Outcome::Warn);
}

#[test]
fn only_a_pg_wal_link_to_another_filesystem_is_a_wal_volume() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pgdata");
    std::fs::create_dir_all(data.join("pg_wal")).unwrap();
    assert!(wal_volume_space(&data).is_none(), "pg_wal inside");
    std::fs::remove_dir(data.join("pg_wal")).unwrap();
    std::fs::create_dir(dir.path().join("wal")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("wal"), data.join("pg_wal")).unwrap();
    assert!(wal_volume_space(&data).is_none(), "a link on the same filesystem");
    std::fs::remove_file(data.join("pg_wal")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("unmounted"), data.join("pg_wal")).unwrap();
    let (path, space) = wal_volume_space(&data).expect("a dangling link is reported");
    assert_eq!(path, dir.path().join("unmounted"));
    assert!(space.is_err(), "{space:?}");
}

#[test]
fn an_instance_left_out_of_members_warns_with_a_hint() {
    let membership = |listed: bool, pending: &[&str]| {
        let mut s = primary_status();
        s.lease = Some(
            serde_json::from_value(serde_json::json!({
                "store": "file /l", "holder": "pg-0", "term": 2, "held_by_me": true, "sync_standbys": [],
                "eligible": true, "last_decision": "renew",
                "membership": {"members": ["pg-0", "pg-1"], "listed": listed, "pending": pending}
            }))
            .unwrap(),
        );
        evaluate_checks(&healthy(s))
    };
    let checks = membership(true, &[]);
    assert_eq!(find(&checks, "membership").outcome, Outcome::Ok);
    let checks = membership(false, &[]);
    let check = find(&checks, "membership");
    assert_eq!(check.outcome, Outcome::Warn);
    assert!(check.hint.as_deref().is_some_and(|h| h.contains("switch over")), "{check:?}");
    let checks = membership(true, &["pg-2: removed; still asked in failsafe rounds until the lease store answers"]);
    assert!(find(&checks, "membership").detail.contains("pg-2: removed"));
}
