use std::collections::BTreeMap;

use super::*;
use crate::api::{LastBackup, TransitionCount};

fn certificate(not_after: &str, reloads: Option<(u64, u64)>) -> CertificateStatus {
    CertificateStatus {
        file: "/etc/pgwarden/tls/tls.crt".into(),
        key_file: Some("/etc/pgwarden/tls/tls.key".into()),
        serial: "2a".into(),
        not_before: "2025-01-01T00:00:00Z".parse().unwrap(),
        not_after: not_after.parse().unwrap(),
        reloads_total: reloads.map(|r| r.0),
        reload_failures_total: reloads.map(|r| r.1),
        last_reload_error: None,
    }
}

fn view() -> ManagerView {
    let now = jiff::Timestamp::now();
    ManagerView {
        name: "pg-1".into(),
        cluster: "main".into(),
        process: ProcessState { state: PostgresProcessState::Running, pid: Some(42), restarts: 3, last_exit: None },
        fenced: false,
        paused: true,
        lease: Some(LeaseStatus {
            store: "file /tmp/lease".into(),
            holder: Some("pg-1".into()),
            term: 7,
            held_by_me: true,
            renew_age_seconds: Some(0.4),
            expires_in_seconds: Some(14.0),
            sync_standbys: Vec::new(),
            eligible: true,
            not_eligible_because: None,
            last_decision: "renew".into(),
            last_error: None,
            last_transition: None,
            renewals_total: 120,
            renew_failures_total: 2,
            transitions: BTreeMap::from([(
                TransitionKind::Switchover,
                TransitionCount { total: 2, last_duration_ms: 850 },
            )]),
            highest_term: 7,
            store_failing_seconds: None,
            failsafe_confirmed_age_seconds: None,
            failsafe_refusal: None,
            failsafe_promised_to: None,
            routing_error: None,
            membership: None,
        }),
        archive: Some(ArchiveStatus {
            destination: "file:///archive".into(),
            last_archived_wal: Some("000000010000000000000003".into()),
            last_archived_at: Some(now - jiff::SignedDuration::from_secs(30)),
            archived_total: 12,
            failures_total: 1,
            last_failed_wal: None,
            last_failure: None,
            last_failed_at: Some(now),
            backlog: Some(2),
            store_problem: None,
            audit: Some(crate::api::ArchiveAudit { missing_segments: 3, ..Default::default() }),
        }),
        backup: Some(BackupStatus {
            last_backup: Some(LastBackup {
                id: "20250101T000000Z".into(),
                instance: "pg-1".into(),
                stopped_at: now,
                age_seconds: 5,
                data_bytes: 1000,
                stored_bytes: 300,
                checksum_failures: Some(2),
            }),
            running: Some("x".into()),
            failures_total: 4,
            next_scheduled_at: Some(now),
            last_failed_at: Some(now),
            retention_error: Some("boom".into()),
            ..BackupStatus::default()
        }),
        tls: BTreeMap::from([
            ("api".to_string(), certificate("2030-01-01T00:00:00Z", Some((2, 1)))),
            ("postgres".to_string(), certificate("2030-01-02T00:00:00Z", None)),
        ]),
        sync_expected: Some(1),
        uptime_seconds: 10.0,
    }
}

#[test]
fn every_family_is_listed_and_values_come_from_the_snapshots() {
    let mut sheet = Sheet::default();
    render(&mut sheet, &view(), Some(false), jiff::Timestamp::now());
    let text = sheet.encode();
    let names: std::collections::BTreeSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    for n in &names {
        assert!(FAMILIES.contains(n), "{n} is not in FAMILIES");
    }
    assert!(names.len() >= 28, "{names:?}");
    for want in [
        "pgwarden_instance_role{role=\"primary\"} 1.0",
        "pgwarden_instance_role{role=\"replica\"} 0.0",
        "pgwarden_paused 1.0",
        "pgwarden_postgres_restarts_total 3.0",
        "pgwarden_lease_term 7.0",
        "pgwarden_lease_holder{holder=\"pg-1\"} 1.0",
        "pgwarden_lease_renewals_total 120.0",
        "pgwarden_lease_renew_failures_total 2.0",
        "pgwarden_primary_transitions_total{kind=\"switchover\"} 2.0",
        "pgwarden_primary_transitions_total{kind=\"failover\"} 0.0",
        "pgwarden_primary_transition_last_duration_seconds{kind=\"switchover\"} 0.85",
        "pgwarden_wal_archive_archived_total 12.0",
        "pgwarden_wal_archive_backlog_files 2.0",
        "pgwarden_archive_gap_segments 3.0",
        "pgwarden_archive_store_lost 0.0",
        "pgwarden_backup_last_size_bytes 1000.0",
        "pgwarden_backup_last_checksum_failures 2.0",
        "pgwarden_backup_running 1.0",
        "pgwarden_backup_failures_total 4.0",
        "pgwarden_backup_retention_failing 1.0",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
    let age = text
        .lines()
        .find_map(|l| l.strip_prefix("pgwarden_wal_archive_last_archived_age_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("archive age");
    assert!((29.0..40.0).contains(&age), "{age}");
    assert!(!text.contains("pgwarden_primary_transition_last_duration_seconds{kind=\"failover\"}"));
}

#[test]
fn certificates_expose_their_expiry_and_the_api_its_rotations() {
    let mut sheet = Sheet::default();
    render(&mut sheet, &view(), Some(false), jiff::Timestamp::now());
    let text = sheet.encode();
    for want in [
        "# TYPE pgwarden_tls_certificate_expiration_timestamp_seconds gauge",
        // 2030-01-01T00:00:00Z and a day later.
        "pgwarden_tls_certificate_expiration_timestamp_seconds{purpose=\"api\"} 1893456000.0",
        "pgwarden_tls_certificate_expiration_timestamp_seconds{purpose=\"postgres\"} 1893542400.0",
        "# TYPE pgwarden_tls_certificate_reloads_total counter",
        "pgwarden_tls_certificate_reloads_total{purpose=\"api\"} 2",
        "pgwarden_tls_certificate_reload_failures_total{purpose=\"api\"} 1",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
    assert!(!text.contains("reloads_total{purpose=\"postgres\"}"), "Postgres' rotations are not counted:\n{text}");
    let v = ManagerView { tls: BTreeMap::new(), ..view() };
    let mut sheet = Sheet::default();
    render(&mut sheet, &v, Some(false), jiff::Timestamp::now());
    assert!(!sheet.encode().contains("pgwarden_tls_"), "no TLS, no families");
}

#[test]
fn the_role_follows_process_recovery_and_fencing() {
    let mut v = view();
    assert_eq!(v.role(Some(true)), "replica");
    assert_eq!(v.role(Some(false)), "primary");
    assert_eq!(v.role(None), "starting", "running but not answering");
    v.process.state = PostgresProcessState::Stopped;
    assert_eq!(v.role(None), "stopped");
    v.fenced = true;
    assert_eq!(v.role(None), "fenced");
    v.process.state = PostgresProcessState::Crashed;
    assert_eq!(v.role(None), "fenced");
    for r in ["primary", "replica", "starting", "stopped", "fenced"] {
        assert!(ROLES.iter().any(|role| role == r));
    }
}

#[test]
fn without_lease_archive_or_backup_their_families_are_absent() {
    let v = ManagerView { lease: None, archive: None, backup: None, ..view() };
    let mut sheet = Sheet::default();
    render(&mut sheet, &v, None, jiff::Timestamp::now());
    let text = sheet.encode();
    assert!(
        !text.contains("pgwarden_lease_")
            && !text.contains("pgwarden_wal_archive_")
            && !text.contains("pgwarden_backup_")
    );
    assert!(
        text.contains("pgwarden_build_info{version=\"")
            && text.contains("pgwarden_instance_role{role=\"starting\"} 1.0")
    );
}
