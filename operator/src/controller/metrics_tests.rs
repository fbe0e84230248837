//! The exposition text of [`Metrics`]: names, labels, and the phase gauge's bookkeeping.

use std::time::Duration;

use super::*;

/// The sample lines (not `#` comments) of the exposition.
fn samples(metrics: &Metrics) -> Vec<String> {
    metrics.encode().unwrap().lines().filter(|l| !l.starts_with('#')).map(str::to_owned).collect()
}

fn has(metrics: &Metrics, line: &str) -> bool {
    samples(metrics).iter().any(|l| l == line)
}

#[test]
fn a_fresh_registry_exposes_the_unlabelled_metrics_at_zero() {
    let metrics = Metrics::new();
    let text = metrics.encode().unwrap();
    for header in [
        "# TYPE pgwarden_operator_reconciles counter",
        "# TYPE pgwarden_operator_reconcile_duration_seconds histogram",
        "# UNIT pgwarden_operator_reconcile_duration_seconds seconds",
        "# TYPE pgwarden_operator_leader gauge",
    ] {
        assert!(text.contains(header), "missing {header:?} in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF:\n{text}");
    assert!(has(&metrics, "pgwarden_operator_reconciles_total 0"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_leader 0"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_reconcile_duration_seconds_count 0"), "{text}");
    // A labelled family appears with its first sample: no error kind or phase is known before.
    assert!(!text.contains("pgwarden_operator_reconcile_errors"), "{text}");
    assert!(!text.contains("pgwarden_operator_clusters"), "{text}");
    metrics.reconciled(Duration::from_millis(1), Some("kube"));
    metrics.phase("db", "pg", "Cluster in healthy state");
    let text = metrics.encode().unwrap();
    assert!(text.contains("# TYPE pgwarden_operator_reconcile_errors counter"), "{text}");
    assert!(text.contains("# TYPE pgwarden_operator_clusters gauge"), "{text}");
}

#[test]
fn reconciles_count_all_and_errors_count_by_kind() {
    let metrics = Metrics::new();
    metrics.reconciled(Duration::from_millis(3), None);
    metrics.reconciled(Duration::from_millis(30), Some("kube"));
    metrics.reconciled(Duration::from_secs(2), Some("kube"));
    metrics.reconciled(Duration::from_millis(1), Some("build"));
    let text = metrics.encode().unwrap();
    assert!(has(&metrics, "pgwarden_operator_reconciles_total 4"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_reconcile_errors_total{kind=\"kube\"} 2"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_reconcile_errors_total{kind=\"build\"} 1"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_reconcile_duration_seconds_count 4"), "{text}");
    // 1 ms and 3 ms fall in the first bucket (5 ms); 30 ms in le=0.04; 2 s only from le=2.56.
    assert!(has(&metrics, "pgwarden_operator_reconcile_duration_seconds_bucket{le=\"0.005\"} 2"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_reconcile_duration_seconds_bucket{le=\"0.04\"} 3"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_reconcile_duration_seconds_bucket{le=\"1.28\"} 3"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_reconcile_duration_seconds_bucket{le=\"2.56\"} 4"), "{text}");
}

#[test]
fn the_leader_gauge_follows_set_leader() {
    let metrics = Metrics::new();
    metrics.set_leader(true);
    assert!(has(&metrics, "pgwarden_operator_leader 1"));
    metrics.set_leader(false);
    assert!(has(&metrics, "pgwarden_operator_leader 0"));
}

#[test]
fn the_cluster_gauge_counts_each_cluster_once_in_its_current_phase() {
    let metrics = Metrics::new();
    metrics.phase("db", "a", "Setting up primary");
    metrics.phase("db", "b", "Setting up primary");
    metrics.phase("other", "a", "Cluster in healthy state");
    let text = metrics.encode().unwrap();
    assert!(has(&metrics, "pgwarden_operator_clusters{phase=\"Setting up primary\"} 2"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_clusters{phase=\"Cluster in healthy state\"} 1"), "{text}");

    // The same phase again changes nothing; a new phase moves the cluster.
    metrics.phase("db", "a", "Setting up primary");
    metrics.phase("db", "a", "Cluster in healthy state");
    let text = metrics.encode().unwrap();
    assert!(has(&metrics, "pgwarden_operator_clusters{phase=\"Setting up primary\"} 1"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_clusters{phase=\"Cluster in healthy state\"} 2"), "{text}");
    assert_eq!(
        metrics.clusters(),
        vec![("db".into(), "a".into()), ("db".into(), "b".into()), ("other".into(), "a".into())]
    );
}

#[test]
fn forget_removes_a_cluster_from_its_phase_once() {
    let metrics = Metrics::new();
    metrics.phase("db", "a", "Cluster in healthy state");
    metrics.phase("db", "b", "Cluster in healthy state");
    metrics.forget("db", "a");
    metrics.forget("db", "a");
    metrics.forget("db", "never-seen");
    let text = metrics.encode().unwrap();
    assert!(has(&metrics, "pgwarden_operator_clusters{phase=\"Cluster in healthy state\"} 1"), "{text}");
    metrics.forget("db", "b");
    let text = metrics.encode().unwrap();
    assert!(has(&metrics, "pgwarden_operator_clusters{phase=\"Cluster in healthy state\"} 0"), "{text}");
    assert!(metrics.clusters().is_empty());
}

#[test]
fn backup_reconciles_are_counted_apart_from_the_clusters() {
    let metrics = Metrics::new();
    assert!(has(&metrics, "pgwarden_operator_backup_reconciles_total 0"));
    metrics.backup_reconciled(None);
    metrics.backup_reconciled(Some("kube"));
    let text = metrics.encode().unwrap();
    assert!(has(&metrics, "pgwarden_operator_backup_reconciles_total 2"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_backup_reconcile_errors_total{kind=\"kube\"} 1"), "{text}");
    assert!(has(&metrics, "pgwarden_operator_reconciles_total 0"), "the clusters' count is apart: {text}");
}
