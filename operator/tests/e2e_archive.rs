//! No hole in the WAL archive after a crash of the primary during a burst of WAL, on real pods
//! and a real S3 store. Runs with `KUBECONFIG`, `PGWARDEN_E2E_PODS=1` and `PGWARDEN_E2E_S3`
//! (see `e2e_day2.rs`), and where the kubelet runs on this machine (the crash is a SIGKILL of
//! the primary's instance manager, PID 1 of its container, from the node); it skips with a
//! message otherwise. CI has no cluster.
//!
//! `burst` (three instances, synchronous replication, a backup) commits rounds of rows, each
//! followed by `pg_switch_wal()`, through `-rw`. Mid-burst, with the operator stopped, the
//! primary's instance manager is killed and its pod deleted at once (no handover): a replica
//! takes over, and the operator, started again, re-creates the pod as a replica. Then:
//! - every acknowledged row is on the new primary;
//! - the `ContinuousArchiving` condition is not `ArchiveGap` once the new primary audited the
//!   archive;
//! - a new cluster restored from the archive to its end (a strict recovery: it refuses to end
//!   at a gap) has every acknowledged row and the new primary's first write.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::pods::{
    apply_s3_credentials, cluster_doc, connect, healthy, manager_pid_on_this_node, pods_enabled, status_when, store_of,
};
use common::{Operator, apply_doc, namespace, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use pgwarden_operator::crd::{BackupPhase, PostgresBackup, PostgresCluster};
use serde_json::json;

/// Rounds of (200 rows; `pg_switch_wal()`) through `-rw` as the superuser until one fails; the
/// highest id acknowledged is kept in `acked`. Returns the rounds done.
async fn burst(c: tokio_postgres::Client, acked: Arc<AtomicI64>) -> i64 {
    for round in 0..60_i64 {
        let (from, to) = (round * 200 + 1, round * 200 + 200);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&from, &to];
        let insert = c.execute("INSERT INTO t SELECT generate_series($1::int8, $2::int8)", &params);
        if tokio::time::timeout(Duration::from_secs(20), insert).await.map(|r| r.is_ok()) != Ok(true) {
            return round;
        }
        acked.store(to, Ordering::SeqCst);
        if c.query_one("SELECT pg_switch_wal()", &[]).await.is_err() {
            return round;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    60
}

#[tokio::test]
async fn a_crash_mid_burst_leaves_no_hole_in_the_archive() {
    if !pods_enabled("a crash and a restore") {
        return;
    }
    let Some(endpoint) = std::env::var("PGWARDEN_E2E_S3").ok().filter(|s| !s.is_empty()) else {
        eprintln!("SKIP: PGWARDEN_E2E_S3 is not set; the archive needs a store the pods reach");
        return;
    };
    let (client, ns, _cleanup) = namespace("pgwarden-archive").await;
    let mut operator = Some(Operator::start(&ns));
    apply_s3_credentials(&client, &ns).await;
    let pgc: Api<PostgresCluster> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let long = Duration::from_secs(600);

    let doc = cluster_doc("burst", 3, Some((&endpoint, &ns)), json!({"synchronous": {"number": 1}}));
    apply_doc(&client, &ns, &doc).await.expect("apply burst");
    status_when(&pgc, "burst", "three healthy instances", long, healthy(3)).await;
    let su = wait_for("a superuser connection", Duration::from_secs(60), || connect(&client, &ns, "burst", "postgres"))
        .await;
    su.batch_execute("CREATE TABLE t (id int8 primary key)").await.expect("the table");
    let backup = json!({"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresBackup",
        "metadata": {"name": "burst-base"}, "spec": {"cluster": {"name": "burst"}}});
    apply_doc(&client, &ns, &backup).await.expect("apply the PostgresBackup");
    let pgb: Api<PostgresBackup> = Api::namespaced(client.clone(), &ns);
    let done = wait_for("the backup to end", long, || async {
        pgb.get("burst-base").await.ok()?.status.filter(|s| s.phase().is_final())
    })
    .await;
    assert_eq!(done.phase(), BackupPhase::Completed, "{done:?}");

    let primary = pgc.get("burst").await.unwrap().status.unwrap().current_primary.expect("a primary");
    let Some(pid) = manager_pid_on_this_node(&ns, &primary) else {
        eprintln!("SKIP (crash): {primary}'s instance manager is not a process of this machine");
        return;
    };
    let acked = Arc::new(AtomicI64::new(0));
    let writer = tokio::spawn(burst(su, Arc::clone(&acked)));
    wait_for("8 rounds acknowledged", Duration::from_secs(120), || async {
        (acked.load(Ordering::SeqCst) >= 1600).then_some(())
    })
    .await;
    // The operator is stopped first: it would re-create the pod within a second, and the
    // restarted manager, finding the lease still its own, would carry on as the primary.
    drop(operator.take());
    let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
    assert!(killed.success());
    let gone = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    pods.delete(&primary, &gone).await.expect("delete the crashed primary's pod");
    let started = Instant::now();
    let rounds = tokio::time::timeout(Duration::from_secs(120), writer).await.expect("the writer stops").unwrap();
    let acked = acked.load(Ordering::SeqCst);
    assert!(rounds < 60, "the burst outlived the crash");

    // With the operator stopped the cluster's status stands still: the Lease says who leads.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let new = wait_for("the lease to move", long, || async {
        let holder = leases.get("burst-primary").await.ok()?.spec?.holder_identity?;
        (!holder.is_empty() && holder != primary).then_some(holder)
    })
    .await;
    eprintln!(
        "crash of {primary} after {rounds} rounds ({acked} rows acknowledged): {new} took over in {:?}",
        started.elapsed()
    );
    let _restarted = Operator::start(&ns);
    let c = wait_for("a connection to the new primary", Duration::from_secs(120), || async {
        let c = connect(&client, &ns, "burst", "postgres").await?;
        let in_recovery: bool = c.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?.get(0);
        (!in_recovery).then_some(c)
    })
    .await;
    let on_new: i64 = c.query_one("SELECT coalesce(max(id), 0) FROM t", &[]).await.unwrap().get(0);
    assert!(on_new >= acked, "the new primary has rows up to {on_new}, {acked} were acknowledged");
    c.execute("INSERT INTO t VALUES (1000000)", &[]).await.expect("the first write after the crash");
    let segment: String = c.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[]).await.unwrap().get(0);
    wait_for(&format!("{segment} archived"), Duration::from_secs(120), || async {
        let r = c.query_one("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", &[]).await.ok()?;
        (r.get::<_, String>(0).as_str() >= segment.as_str()).then_some(())
    })
    .await;
    status_when(&pgc, "burst", "healthy again", long, healthy(3)).await;

    // The new holder audits the archive soon after its promotion (and confirms a gap 15 s
    // later): give it that long, then the condition must not report a gap.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let s = pgc.get("burst").await.unwrap().status.unwrap();
    let archiving = s.conditions.iter().find(|c| c.type_ == "ContinuousArchiving").expect("the condition");
    assert_ne!(archiving.reason, "ArchiveGap", "{archiving:?}");

    // A strict restore to the end of the archive crosses the branch point.
    let restore = cluster_doc(
        "burst-restored",
        1,
        None,
        json!({"bootstrap": {"recovery": {"source": store_of(&endpoint, &ns), "sourceCluster": "burst"}}}),
    );
    apply_doc(&client, &ns, &restore).await.expect("apply burst-restored");
    let started = Instant::now();
    status_when(&pgc, "burst-restored", "one healthy instance", long, healthy(1)).await;
    let r = wait_for("a connection to burst-restored-rw", Duration::from_secs(60), || {
        connect(&client, &ns, "burst-restored", "postgres")
    })
    .await;
    let row = r.query_one("SELECT count(*) FILTER (WHERE id <= $1), max(id) FROM t", &[&acked]).await.unwrap();
    let (count, max): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(count, acked, "every acknowledged row restored");
    assert_eq!(max, 1_000_000, "the new primary's first write restored");
    eprintln!(
        "restore to the end of the archive: healthy in {:?}, {count} acknowledged rows and the marker",
        started.elapsed()
    );
}
