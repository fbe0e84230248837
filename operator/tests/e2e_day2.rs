//! Day-2 operations end to end on real pods. Runs with `KUBECONFIG` and `PGWARDEN_E2E_PODS=1`
//! (a kubelet runs the images), and skips with a message otherwise; CI has no cluster.
//!
//! `PGWARDEN_E2E_S3` is the endpoint of an S3-compatible store the pods reach, holding the
//! bucket `pgwarden-test` with the test server's keys — `pgwarden-test-s3 --dir … --listen
//! <address the pods reach>:9000` (a binary of the instance manager, feature `testkit`). With
//! it, the cluster archives and backs up there and the backup steps run; without it they are
//! skipped, with a message.
//!
//! One cluster, `day2`, starts with one instance. A durability probe commits through the `-rw`
//! Service all along (a client of its ClusterIP with the application Secret) and every
//! commit it saw acknowledged is there at the end. In order:
//! 1. a `PostgresBackup` completes (with a store);
//! 2. scale 1 → 3: the new replicas clone (from the backup, with a store) and stream;
//! 3. a larger `storage.size` grows every PVC;
//! 4. a replica's PVC is lost: a new PVC and pod, a fresh clone, the cluster whole again;
//! 5. a new image rolls every instance, the primary after a switchover;
//! 6. the primary's pod is deleted: the lease moves, the operator re-creates the pod;
//! 7. scale 3 → 1;
//! 8. (with a store) a new cluster restores `day2`'s backups to a point in time between two
//!    batches of rows: it has the first, not the second.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pods::{
    apply_s3_credentials, cluster_doc, connect, healthy, pod_ready, pods_enabled, status_when, store_of,
};
use common::{Operator, apply_doc, namespace, wait_for};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use pgwarden_operator::crd::{BackupPhase, PostgresBackup, PostgresCluster};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Commits numbered rows through `-rw` until stopped; the ids acknowledged.
struct Probe {
    acked: Arc<Mutex<Vec<i64>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    fn start(client: Client, ns: String, cluster: &str) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (a, s, cluster) = (acked.clone(), stop.clone(), cluster.to_owned());
        let task = tokio::spawn(async move {
            let mut id = 0i64;
            let mut conn: Option<tokio_postgres::Client> = None;
            while !s.is_cancelled() {
                if conn.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
                    conn = connect(&client, &ns, &cluster, "app").await;
                    if let Some(c) = &conn {
                        let _ = c.batch_execute("CREATE TABLE IF NOT EXISTS probe (id bigint primary key)").await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
                id += 1;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                let insert = conn.as_ref().unwrap().execute("INSERT INTO probe VALUES ($1)", &params);
                match tokio::time::timeout(Duration::from_secs(5), insert).await {
                    Ok(Ok(_)) => a.lock().unwrap().push(id),
                    _ => conn = None,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { acked, stop, task }
    }

    async fn stop(self) -> Vec<i64> {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.acked.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn day_two_operations_on_real_pods() {
    if !pods_enabled("day-2 operations") {
        return;
    }
    let store = std::env::var("PGWARDEN_E2E_S3").ok().filter(|s| !s.is_empty());
    if store.is_none() {
        eprintln!(
            "SKIP (backups): PGWARDEN_E2E_S3 is not set; no backup, no clone from a backup, no point-in-time restore"
        );
    }
    let (client, ns, _cleanup) = namespace("pgwarden-day2").await;
    let _operator = Operator::start(&ns);
    apply_s3_credentials(&client, &ns).await;
    let pgc: Api<PostgresCluster> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let long = Duration::from_secs(600);

    let store = store.map(|endpoint| (endpoint, ns.clone()));
    let store_ref = store.as_ref().map(|(e, p)| (e.as_str(), p.as_str()));
    apply_doc(&client, &ns, &cluster_doc("day2", 1, store_ref, json!({}))).await.expect("apply day2");
    let started = Instant::now();
    status_when(&pgc, "day2", "one healthy instance", long, healthy(1)).await;
    eprintln!("day2: 1 instance healthy in {:?}", started.elapsed());
    let probe = Probe::start(client.clone(), ns.clone(), "day2");

    // 1. A backup by resource.
    if store.is_some() {
        let backup = json!({"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresBackup",
            "metadata": {"name": "day2-first"}, "spec": {"cluster": {"name": "day2"}}});
        apply_doc(&client, &ns, &backup).await.expect("apply the PostgresBackup");
        let started = Instant::now();
        let pgb: Api<PostgresBackup> = Api::namespaced(client.clone(), &ns);
        let status = wait_for("the PostgresBackup to end", long, || async {
            pgb.get("day2-first").await.ok()?.status.filter(|s| s.phase().is_final())
        })
        .await;
        assert_eq!(status.phase(), BackupPhase::Completed, "{status:?}");
        assert!(status.backup_id.is_some() && status.end_lsn.is_some(), "{status:?}");
        eprintln!("backup by resource: Completed in {:?}: {:?}", started.elapsed(), status.backup_id);
    }

    // 2. Scale 1 -> 3.
    let patch = |v: serde_json::Value| {
        let pgc = pgc.clone();
        async move { pgc.patch("day2", &PatchParams::default(), &Patch::Merge(&json!({"spec": v}))).await.expect("patch") }
    };
    patch(json!({"instances": 3})).await;
    let started = Instant::now();
    status_when(&pgc, "day2", "three healthy instances", long, healthy(3)).await;
    eprintln!("scale 1 -> 3 in {:?}", started.elapsed());
    if store.is_some() {
        let logs = pods.logs("day2-3", &Default::default()).await.expect("day2-3's log");
        assert!(logs.contains("replica data restored from a base backup"), "day2-3 cloned from the backup");
    }

    // 3. A larger volume.
    patch(json!({"storage": {"size": "2Gi"}})).await;
    let started = Instant::now();
    wait_for("every PVC at 2Gi", long, || async {
        let all = pvcs.list(&ListParams::default().labels("pgwarden.io/cluster=day2")).await.ok()?;
        let grown = all.items.iter().all(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage"))
                .is_some_and(|q| q.0 == "2Gi")
        });
        (grown && all.items.len() == 3).then_some(())
    })
    .await;
    status_when(&pgc, "day2", "no resize in progress", long, |s| s.volume_resizes.is_empty()).await;
    eprintln!("volumes grown to 2Gi in {:?}", started.elapsed());

    // 4. A replica's PVC is lost (deleted; it goes once its pod is gone).
    let primary =
        status_when(&pgc, "day2", "a primary", long, |s| s.current_primary.is_some()).await.current_primary.unwrap();
    let lost = if primary == "day2-3" { "day2-2" } else { "day2-3" };
    let old_uid = pvcs.get(lost).await.expect("the PVC").uid();
    pvcs.delete(lost, &DeleteParams::default()).await.expect("delete the PVC");
    pods.delete(lost, &DeleteParams::default()).await.expect("delete its pod");
    let started = Instant::now();
    wait_for(&format!("a new PVC for {lost}"), long, || async {
        let p = pvcs.get(lost).await.ok()?;
        (p.uid() != old_uid && p.metadata.deletion_timestamp.is_none()).then_some(())
    })
    .await;
    wait_for(&format!("{lost} ready again"), long, || async { pods.get(lost).await.ok().filter(pod_ready) }).await;
    status_when(&pgc, "day2", "three healthy instances", long, healthy(3)).await;
    eprintln!("lost PVC of {lost}: a fresh clone, healthy again in {:?}", started.elapsed());

    // 5. A new image: every pod re-created, the primary after a switchover.
    let next_image = format!("pgwarden/postgres:15-{}", env!("CARGO_PKG_VERSION"));
    patch(json!({"image": next_image})).await;
    let started = Instant::now();
    wait_for("every pod on the new image, healthy", long, || async {
        let all = pods.list(&ListParams::default().labels("pgwarden.io/cluster=day2")).await.ok()?;
        let updated = all
            .items
            .iter()
            .filter(|p| p.spec.as_ref().is_some_and(|s| s.containers[0].image.as_deref() == Some(next_image.as_str())))
            .count();
        let s = pgc.get("day2").await.ok()?.status?;
        (updated == 3 && healthy(3)(&s)).then_some(())
    })
    .await;
    eprintln!("image rolled to {next_image} over 3 instances in {:?}", started.elapsed());

    // 6. The primary's pod is deleted.
    let primary = pgc.get("day2").await.unwrap().status.unwrap().current_primary.unwrap();
    pods.delete(&primary, &DeleteParams::default()).await.expect("delete the primary's pod");
    let started = Instant::now();
    let new_primary =
        status_when(&pgc, "day2", "a new primary", long, |s| s.current_primary.as_ref().is_some_and(|p| *p != primary))
            .await
            .current_primary
            .unwrap();
    status_when(&pgc, "day2", "three healthy instances", long, healthy(3)).await;
    eprintln!("primary's pod deleted: {primary} -> {new_primary}, healthy again in {:?}", started.elapsed());

    // 7. Scale 3 -> 1.
    patch(json!({"instances": 1})).await;
    let started = Instant::now();
    let last = status_when(&pgc, "day2", "one healthy instance", long, healthy(1)).await;
    eprintln!("scale 3 -> 1 in {:?}; primary {:?}", started.elapsed(), last.current_primary);

    // Every commit the probe saw acknowledged is there.
    let acked = probe.stop().await;
    assert!(acked.len() > 100, "the probe committed through every step: {}", acked.len());
    let c = wait_for("a connection to day2-rw", Duration::from_secs(60), || connect(&client, &ns, "day2", "app")).await;
    let ids: std::collections::BTreeSet<i64> =
        c.query("SELECT id FROM probe", &[]).await.expect("read the probe").iter().map(|r| r.get(0)).collect();
    let missing: Vec<&i64> = acked.iter().filter(|i| !ids.contains(i)).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged commits lost: {missing:?}", missing.len(), acked.len());
    eprintln!("durability probe: {} acknowledged commits, all present", acked.len());

    // 8. A point-in-time restore into a new cluster.
    let Some((endpoint, prefix)) = store else { return };
    let su = connect(&client, &ns, "day2", "postgres").await.expect("a superuser connection");
    su.batch_execute(
        "CREATE TABLE IF NOT EXISTS pitr (batch int); INSERT INTO pitr SELECT 1 FROM generate_series(1, 100)",
    )
    .await
    .expect("batch 1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let target: String = su
        .query_one("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", &[])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    su.batch_execute("INSERT INTO pitr SELECT 2 FROM generate_series(1, 50)").await.expect("batch 2");
    let segment: String = su.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[]).await.unwrap().get(0);
    wait_for(&format!("{segment} archived"), Duration::from_secs(120), || async {
        let r = su.query_one("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", &[]).await.ok()?;
        let last: String = r.get(0);
        (last.as_str() >= segment.as_str()).then_some(())
    })
    .await;
    let restore = cluster_doc(
        "day2-pitr",
        1,
        None,
        json!({"bootstrap": {"recovery": {"source": store_of(&endpoint, &prefix), "sourceCluster": "day2", "target": {"time": target}}}}),
    );
    apply_doc(&client, &ns, &restore).await.expect("apply day2-pitr");
    let started = Instant::now();
    status_when(&pgc, "day2-pitr", "one healthy instance", long, healthy(1)).await;
    let r = wait_for("a connection to day2-pitr-rw", Duration::from_secs(60), || {
        connect(&client, &ns, "day2-pitr", "postgres")
    })
    .await;
    let batches: Vec<(i32, i64)> = r
        .query("SELECT batch, count(*) FROM pitr GROUP BY batch ORDER BY batch", &[])
        .await
        .expect("the restored rows")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(batches, [(1, 100)], "restored to {target}: the first batch, not the second");
    eprintln!("point-in-time restore to {target}: healthy in {:?}, the first batch only", started.elapsed());
}
