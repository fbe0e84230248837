//! The status from what a reconcile saw: CloudNativePG's phases, `Ready`, the holder as
//! `currentPrimary`, and the Events for a change of primary or an instance that stops being
//! ready. Equal inputs give an equal status (the reconcile writes none then).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
use kube::api::ObjectMeta;
use pgwarden_contract::InstanceStatus;

use super::status::*;
use crate::crd::PostgresClusterStatus;
use crate::names::Names;

fn pod(name: &str, ready: bool, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        spec: Some(PodSpec { node_name: Some(node.into()), ..PodSpec::default() }),
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn lease(holder: Option<&str>, term: i32) -> Lease {
    Lease {
        metadata: ObjectMeta { name: Some("pg-primary".into()), ..ObjectMeta::default() },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_transitions: Some(term),
            ..LeaseSpec::default()
        }),
    }
}

fn switchover_report(to: &str) -> InstanceStatus {
    let mut doc: serde_json::Value =
        serde_json::from_str(crate::instances::instances_tests::REPLICA_STATUS).expect("json");
    doc["name"] = to.into();
    doc["role"] = "primary".into();
    doc["current_lsn"] = "0/5000000".into();
    doc["lease"] = serde_json::json!({"store": "kubernetes lease db/pg-primary", "holder": to, "term": 2, "highest_term": 2,
        "store_failing_seconds": null, "failsafe_confirmed_age_seconds": null, "failsafe_refusal": null,
        "failsafe_promised_to": null, "routing_error": null, "held_by_me": true, "renew_age_seconds": 0.1,
        "expires_in_seconds": 14.0, "sync_standbys": [], "eligible": true, "not_eligible_because": null,
        "last_decision": "renew", "last_error": null,
        "last_transition": {"kind": "switchover", "from": "pg-1", "to": to, "term": 2, "at": "2026-12-04T00:00:00Z", "duration_ms": 300},
        "renewals_total": 1, "renew_failures_total": 0, "transitions": {}});
    serde_json::from_value(doc).expect("a status")
}

struct Case {
    pods: Vec<Pod>,
    lease: Option<Lease>,
    reports: BTreeMap<String, Result<InstanceStatus, String>>,
    previous: Option<PostgresClusterStatus>,
    problems: Vec<String>,
}

impl Case {
    fn new(pods: Vec<Pod>, lease: Option<Lease>) -> Self {
        Self { pods, lease, reports: BTreeMap::new(), previous: None, problems: Vec::new() }
    }
    fn run(&self, now: &str) -> (PostgresClusterStatus, Vec<Notice>) {
        let names = Names::new("pg", "db");
        compute(&Inputs {
            names: &names,
            instances: 3,
            generation: Some(4),
            image: "pgwarden/postgres:15".into(),
            previous: self.previous.as_ref(),
            pods: &self.pods,
            lease: self.lease.as_ref(),
            reports: &self.reports,
            problems: &self.problems,
            server_not_after: None,
            volumes: BTreeMap::new(),
            requests: BTreeMap::new(),
            rolling: None,
            now,
        })
    }
}

fn ready_condition(s: &PostgresClusterStatus) -> (&str, &str) {
    let c = s.conditions.iter().find(|c| c.type_ == "Ready").expect("a Ready condition");
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn a_new_cluster_is_setting_up_its_primary() {
    let (s, notices) = Case::new(vec![pod("pg-1", false, "n1")], None).run("2026-12-04T00:00:00Z");
    assert_eq!(s.phase.as_deref(), Some(PHASE_SETTING_UP));
    assert_eq!(ready_condition(&s), ("False", "ClusterIsNotReady"));
    assert!(notices.is_empty());
}

#[test]
fn all_ready_with_a_holder_is_healthy_and_stays_equal() {
    let pods = vec![pod("pg-1", true, "n1"), pod("pg-2", true, "n2"), pod("pg-3", true, "n3")];
    let mut case = Case::new(pods, Some(lease(Some("pg-1"), 1)));
    let (first, notices) = case.run("2026-12-04T00:00:00Z");
    assert_eq!(first.phase.as_deref(), Some(PHASE_HEALTHY));
    assert_eq!(ready_condition(&first), ("True", "ClusterIsReady"));
    assert_eq!(first.current_primary.as_deref(), Some("pg-1"));
    assert_eq!(first.ready_instances, 3);
    assert_eq!(first.topology.nodes_used, 3);
    assert!(first.topology.success_fully_spread);
    assert_eq!(first.observed_generation, Some(4));
    assert_eq!(notices.len(), 1, "the first election is announced: {notices:?}");
    // A later reconcile with the same inputs computes the same status: nothing to write.
    case.previous = Some(first.clone());
    let (second, notices) = case.run("2026-12-04T00:05:00Z");
    assert_eq!(second, first);
    assert!(notices.is_empty());
}

#[test]
fn a_free_lease_after_a_primary_is_a_failover_and_a_new_holder_is_announced() {
    let healthy = {
        let c = Case::new(
            vec![pod("pg-1", true, "n1"), pod("pg-2", true, "n2"), pod("pg-3", true, "n3")],
            Some(lease(Some("pg-1"), 1)),
        );
        c.run("2026-12-04T00:00:00Z").0
    };
    let mut during = Case::new(vec![pod("pg-2", true, "n2"), pod("pg-3", true, "n3")], Some(lease(None, 1)));
    during.previous = Some(healthy.clone());
    let (s, _) = during.run("2026-12-04T00:01:00Z");
    assert_eq!(s.phase.as_deref(), Some(PHASE_FAILING_OVER));
    assert_eq!(ready_condition(&s).0, "False");

    let mut after = Case::new(vec![pod("pg-2", true, "n2"), pod("pg-3", true, "n3")], Some(lease(Some("pg-2"), 2)));
    after.previous = Some(healthy);
    let (s, notices) = after.run("2026-12-04T00:01:10Z");
    assert_eq!(s.current_primary.as_deref(), Some("pg-2"));
    assert_eq!(s.current_primary_timestamp.as_deref(), Some("2026-12-04T00:01:10Z"));
    assert_eq!(s.primary_term, Some(2));
    assert_eq!(s.phase.as_deref(), Some(PHASE_CREATING_REPLICA), "pg-1's pod is gone and will be re-created");
    assert!(
        notices.iter().any(|n| n.reason == "FailoverDetected" && n.warning && n.note.contains("pg-1 to pg-2")),
        "{notices:?}"
    );
    assert!(!notices.iter().any(|n| n.reason == "InstanceNotReady"));
}

#[test]
fn a_switchover_is_told_apart_by_the_new_primarys_own_account() {
    let healthy = Case::new(
        vec![pod("pg-1", true, "n1"), pod("pg-2", true, "n2"), pod("pg-3", true, "n3")],
        Some(lease(Some("pg-1"), 1)),
    )
    .run("2026-12-04T00:00:00Z")
    .0;
    let mut after = Case::new(
        vec![pod("pg-1", false, "n1"), pod("pg-2", false, "n2"), pod("pg-3", true, "n3")],
        Some(lease(Some("pg-2"), 2)),
    );
    after.reports.insert("pg-2".into(), Ok(switchover_report("pg-2")));
    after.previous = Some(healthy);
    let (s, notices) = after.run("2026-12-04T00:01:00Z");
    assert_eq!(s.phase.as_deref(), Some(PHASE_SWITCHOVER));
    assert!(notices.iter().any(|n| n.reason == "SwitchoverDetected" && !n.warning), "{notices:?}");
    assert!(notices.iter().any(|n| n.reason == "InstanceNotReady" && n.note.contains("pg-1")), "{notices:?}");
    let reported = &s.instances_reported_state["pg-2"];
    assert!(reported.is_primary);
    assert_eq!(reported.lsn.as_deref(), Some("0/5000000"));
}

#[test]
fn a_missing_provided_secret_is_the_phase_and_its_reason() {
    let mut case = Case::new(vec![], None);
    case.problems = vec!["Secret mine (named in the spec) does not exist".into()];
    let (s, _) = case.run("2026-12-04T00:00:00Z");
    assert_eq!(s.phase.as_deref(), Some(PHASE_CANNOT_CREATE));
    assert!(s.phase_reason.as_deref().is_some_and(|r| r.contains("Secret mine")), "{s:?}");
    assert_eq!(ready_condition(&s).0, "False");
}

#[test]
fn the_ready_condition_keeps_its_transition_time_while_it_does_not_change() {
    let mut case = Case::new(vec![pod("pg-1", false, "n1")], None);
    let (first, _) = case.run("2026-12-04T00:00:00Z");
    case.previous = Some(first.clone());
    let (second, _) = case.run("2026-12-04T00:10:00Z");
    assert_eq!(first.conditions[0].last_transition_time, second.conditions[0].last_transition_time);
}

#[test]
fn the_last_and_next_backup_come_from_the_primarys_own_account() {
    let mut report = switchover_report("pg-1");
    report.backup = Some(
        serde_json::from_value(serde_json::json!({
            "last_backup": {"id": "20261204T020000", "instance": "pg-1", "stopped_at": "2026-12-04T02:00:05Z", "age_seconds": 60},
            "running": null, "last_failure": null, "last_failed_at": null, "retention_error": null,
            "next_scheduled_at": "2026-12-05T02:00:00Z", "failures_total": 0, "first_recoverability_point": null
        }))
        .expect("a backup status"),
    );
    let mut case = Case::new(vec![pod("pg-1", true, "n1")], Some(lease(Some("pg-1"), 1)));
    case.reports.insert("pg-1".into(), Ok(report));
    let (s, _) = case.run("2026-12-04T03:00:00Z");
    assert_eq!(s.last_successful_backup.as_deref(), Some("2026-12-04T02:00:05Z"));
    assert_eq!(s.last_successful_backup_id.as_deref(), Some("20261204T020000"));
    assert_eq!(s.next_scheduled_backup.as_deref(), Some("2026-12-05T02:00:00Z"));
}

fn archive(failing: Option<&str>) -> pgwarden_contract::ArchiveStatus {
    serde_json::from_value(serde_json::json!({
        "destination": "s3://b/p", "last_archived_wal": "000000010000000000000005",
        "last_archived_at": "2026-12-04T02:00:00Z", "archived_total": 5, "failures_total": 1,
        "last_failed_wal": failing.map(|_| "000000010000000000000006"), "last_failure": failing,
        "last_failed_at": failing.map(|_| "2026-12-04T02:00:09Z"), "backlog": 1, "store_problem": null, "audit": null
    }))
    .expect("an archive status")
}

#[test]
fn continuous_archiving_follows_the_primarys_archive_and_is_announced_when_it_changes() {
    let mut report = switchover_report("pg-1");
    let mut case = Case::new(vec![pod("pg-1", true, "n1")], Some(lease(Some("pg-1"), 1)));
    // No store: no condition.
    case.reports.insert("pg-1".into(), Ok(report.clone()));
    assert!(case.run("2026-12-04T03:00:00Z").0.conditions.iter().all(|c| c.type_ != "ContinuousArchiving"));

    report.archive = Some(archive(None));
    case.reports.insert("pg-1".into(), Ok(report.clone()));
    let (s, notices) = case.run("2026-12-04T03:00:00Z");
    let c = s.conditions.iter().find(|c| c.type_ == "ContinuousArchiving").expect("the condition");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "ContinuousArchivingSuccess"));
    assert!(notices.iter().all(|n| !n.reason.starts_with("ContinuousArchiving")), "nothing to announce: {notices:?}");

    report.archive = Some(archive(Some("s3://b/p belongs to another cluster")));
    case.reports.insert("pg-1".into(), Ok(report.clone()));
    case.previous = Some(s);
    let (s, notices) = case.run("2026-12-04T03:01:00Z");
    let c = s.conditions.iter().find(|c| c.type_ == "ContinuousArchiving").expect("the condition");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ContinuousArchivingFailing"));
    assert_eq!(
        c.message,
        "WAL archiving to s3://b/p fails: 000000010000000000000006: s3://b/p belongs to another cluster"
    );
    let warned: Vec<&Notice> = notices.iter().filter(|n| n.reason == "ContinuousArchivingFailing").collect();
    assert!(warned.len() == 1 && warned[0].warning, "{notices:?}");

    // The primary cannot be read: the condition stays as it was, and nothing is announced.
    case.previous = Some(s.clone());
    case.reports.insert("pg-1".into(), Err("timed out".into()));
    let (again, notices) = case.run("2026-12-04T03:02:00Z");
    assert_eq!(again.conditions, s.conditions);
    assert!(notices.iter().all(|n| !n.reason.starts_with("ContinuousArchiving")));

    // Archiving works again but the audit found a gap: still False, with its own reason and a
    // warning naming the first missing segment.
    let mut with_gap = archive(None);
    with_gap.audit = Some(pgwarden_contract::ArchiveAudit {
        missing_segments: 1,
        first_missing: Some("000000010000000000000016".into()),
        ..Default::default()
    });
    report.archive = Some(with_gap);
    case.reports.insert("pg-1".into(), Ok(report.clone()));
    let (s, notices) = case.run("2026-12-04T03:03:00Z");
    let c = s.conditions.iter().find(|c| c.type_ == "ContinuousArchiving").expect("the condition");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ArchiveGap"));
    assert!(c.message.contains("1 segment(s) missing") && c.message.contains("000000010000000000000016"), "{c:?}");
    let warned: Vec<&Notice> = notices.iter().filter(|n| n.reason == "ArchiveGap").collect();
    assert!(warned.len() == 1 && warned[0].warning, "{notices:?}");

    // The gap closed (a segment found its way in): True again, announced once.
    case.previous = Some(s);
    report.archive = Some(archive(None));
    case.reports.insert("pg-1".into(), Ok(report));
    let (s, notices) = case.run("2026-12-04T03:04:00Z");
    let c = s.conditions.iter().find(|c| c.type_ == "ContinuousArchiving").expect("the condition");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "ContinuousArchivingSuccess"));
    assert!(notices.iter().any(|n| n.reason == "ContinuousArchivingSuccess" && !n.warning), "{notices:?}");
}
