//! End to end against a real Kubernetes API server: runs when `KUBECONFIG` is set and skips with
//! a message otherwise (CI has no cluster; what ran where is in the issue notes).
//!
//! It installs the CRDs, starts the operator binary on a namespace of its own, applies every
//! sample of `testdata/clusters/`, and checks every object and the status. The API server
//! itself refuses the bad specs (schema and CEL). Where pods can run (`PGWARDEN_E2E_PODS=1`:
//! a kubelet, the images loaded), it waits for `Ready=True`, deletes the primary's pod and sees
//! the failover in the status, and follows an on-demand `PostgresBackup` of `backed-up` to a
//! final phase. The namespace is deleted at the end, whatever happened.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::pods::manager_pid_on_this_node;
use common::{Operator, apply_doc, documents, enabled, refusal, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use pgwarden_operator::crd::{BackupPhase, PostgresBackup, PostgresCluster};

fn samples() -> Vec<(String, Vec<serde_json::Value>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/clusters");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("testdata/clusters").flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let name = path.file_name().expect("a name").to_string_lossy().into_owned();
            let stem = path.file_stem().expect("a name").to_string_lossy().into_owned();
            (stem, documents(&format!("clusters/{name}")))
        })
        .collect()
}

#[tokio::test]
async fn samples_become_objects_and_status_on_a_real_api_server() {
    if !enabled() {
        return;
    }
    let (client, ns, _cleanup) = common::namespace("pgwarden-e2e").await;
    let mut operator = Some(Operator::start(&ns));

    // The API server refuses what cannot work, with the CRD's messages.
    let bad = serde_json::json!({"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": "bad"}, "spec": {"instances": 0, "storage": {"size": "1Gi"}}});
    let e = refusal(apply_doc(&client, &ns, &bad).await.expect_err("instances 0 is refused"));
    assert!(e.contains("instances"), "{e}");
    let bad = serde_json::json!({"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": "bad"}, "spec": {"storage": {"size": "1Gi"},
        "ha": {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 9, "retryPeriodSeconds": 2, "fenceBudgetSeconds": 2}}});
    let e = refusal(apply_doc(&client, &ns, &bad).await.expect_err("bad timings are refused"));
    assert!(e.contains("renewDeadlineSeconds + fenceBudgetSeconds must be below leaseDurationSeconds"), "{e}");

    let applied = Instant::now();
    let mut clusters: BTreeMap<String, i32> = BTreeMap::new();
    for (_, docs) in samples() {
        for doc in &docs {
            apply_doc(&client, &ns, doc).await.unwrap_or_else(|e| panic!("apply {}: {e}", doc["metadata"]["name"]));
            if doc["kind"] == "PostgresCluster" {
                let n = doc["spec"]["instances"].as_i64().unwrap_or(1) as i32;
                clusters.insert(doc["metadata"]["name"].as_str().expect("a name").to_owned(), n);
            }
        }
    }

    let pgc: Api<PostgresCluster> = Api::namespaced(client.clone(), &ns);
    for (name, instances) in &clusters {
        let started = Instant::now();
        let cluster = wait_for(&format!("{name}'s status"), Duration::from_secs(120), || {
            let pgc = pgc.clone();
            async move {
                let c = pgc.get(name).await.ok()?;
                let s = c.status.as_ref()?;
                (s.observed_generation == c.metadata.generation && s.phase.is_some()).then_some(c)
            }
        })
        .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        for n in 1..=*instances {
            let pod = pods.get(&format!("{name}-{n}")).await.expect("the instance's pod");
            pvcs.get(&format!("{name}-{n}")).await.expect("the instance's PVC");
            let owner = pod.owner_references().first().map(|o| o.uid.clone());
            assert_eq!(owner, cluster.metadata.uid, "{name}-{n} is owned by its cluster");
        }
        let rw = services.get(&format!("{name}-rw")).await.expect("-rw");
        assert!(rw.spec.and_then(|s| s.selector).is_none(), "-rw has no selector");
        for s in ["ro", "r", "headless"] {
            services.get(&format!("{name}-{s}")).await.unwrap_or_else(|e| panic!("{name}-{s}: {e}"));
        }
        for s in ["replication", "api-token"] {
            secrets.get(&format!("{name}-{s}")).await.unwrap_or_else(|e| panic!("{name}-{s}: {e}"));
        }
        configmaps.get(&format!("{name}-config")).await.expect("the instances' configuration");
        eprintln!("{name}: every object and a status within {:?}", started.elapsed());
    }

    // A PostgresBackup's spec is fixed; one for a cluster without a store fails at once.
    let nowhere = serde_json::json!({"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresBackup",
        "metadata": {"name": "nowhere"}, "spec": {"cluster": {"name": "single"}}});
    apply_doc(&client, &ns, &nowhere).await.expect("apply a PostgresBackup");
    let moved = serde_json::json!({"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresBackup",
        "metadata": {"name": "nowhere"}, "spec": {"cluster": {"name": "sync"}}});
    let e = refusal(apply_doc(&client, &ns, &moved).await.expect_err("a new cluster is refused"));
    assert!(e.contains("spec is immutable"), "{e}");
    let pgb: Api<PostgresBackup> = Api::namespaced(client.clone(), &ns);
    let failed = wait_for("the backup of a cluster without a store to fail", Duration::from_secs(60), || {
        let pgb = pgb.clone();
        async move { pgb.get("nowhere").await.ok()?.status.filter(|s| s.phase() == BackupPhase::Failed) }
    })
    .await;
    assert!(failed.error.as_deref().is_some_and(|e| e.starts_with("cluster single has no backup.store")), "{failed:?}");

    // A shrinking volume is refused on update.
    let shrink = serde_json::json!({"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": "single"}, "spec": {"storage": {"size": "512Mi"}}});
    let e = refusal(apply_doc(&client, &ns, &shrink).await.expect_err("shrinking is refused"));
    assert!(e.contains("size cannot shrink"), "{e}");

    if std::env::var_os("PGWARDEN_E2E_PODS").is_none() {
        eprintln!(
            "SKIP (pods): set PGWARDEN_E2E_PODS=1 where a kubelet runs the images to wait for Ready and a failover"
        );
        return;
    }
    let ready = |name: &'static str| {
        let pgc = pgc.clone();
        async move {
            wait_for(&format!("{name} Ready=True"), Duration::from_secs(600), || {
                let pgc = pgc.clone();
                async move {
                    let c = pgc.get(name).await.ok()?;
                    let s = c.status?;
                    s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(s)
                }
            })
            .await
        }
    };
    // An on-demand backup of `backed-up`, whose store (a MinIO at minio.minio.svc) is not
    // there: it runs while the steps below stop and restart the operator, and is checked at
    // the end, completed or failed with its reason.
    for doc in documents("backups/on-demand.yaml") {
        apply_doc(&client, &ns, &doc).await.expect("apply the PostgresBackup");
    }
    let backup_applied = Instant::now();
    let status = ready("sync").await;
    eprintln!("sync: Ready=True {:?} after the samples were applied", applied.elapsed());
    let primary = status.current_primary.clone().expect("a primary");
    let reported = &status.instances_reported_state;
    assert!(reported.get(&primary).is_some_and(|r| r.is_primary), "the primary's own /status: {reported:?}");
    assert_eq!(reported.values().filter(|r| r.role.as_deref() == Some("replica")).count(), 2, "{reported:?}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        pods.get(&primary).await.expect("the primary's pod").labels().get("pgwarden.io/role").map(String::as_str),
        Some("primary")
    );
    routes_to(&client, &ns, &primary).await;

    // A planned failover with the operator stopped: the pod's SIGTERM hands the lease over.
    drop(operator.take());
    pods.delete(&primary, &DeleteParams::default()).await.expect("delete the primary's pod");
    let started = Instant::now();
    let new_primary = lease_moves_from(&client, &ns, &primary).await;
    routes_to(&client, &ns, &new_primary).await;
    eprintln!("operator stopped: {primary} -> {new_primary} in {:?}, and -rw follows", started.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        pods.get_opt(&primary).await.expect("a read").is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "nobody re-created it"
    );
    operator = Some(Operator::start(&ns));
    let after = wait_for("the operator to see the new primary", Duration::from_secs(120), || {
        let pgc = pgc.clone();
        let new_primary = new_primary.clone();
        async move { pgc.get("sync").await.ok()?.status?.current_primary.filter(|p| *p == new_primary) }
    })
    .await;
    ready("sync").await;
    eprintln!("operator back: status says {after}, {primary} re-created on its PVC, Ready=True again");
    nothing_the_instances_own_is_the_operators(&client, &ns).await;

    // A switchover asked for with an annotation: the operator calls the primary's API.
    let target = if after == "sync-3" { "sync-1" } else { "sync-3" };
    let patch = serde_json::json!({"metadata": {"annotations": {"pgwarden.io/switchover": target}}});
    pgc.patch("sync", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    let started = Instant::now();
    let outcome = wait_for("the switchover to be acknowledged", Duration::from_secs(120), || {
        let pgc = pgc.clone();
        async move {
            let c = pgc.get("sync").await.ok()?;
            let pending = c.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("pgwarden.io/switchover"));
            if pending {
                return None;
            }
            c.status?.requests.get("pgwarden.io/switchover").cloned()
        }
    })
    .await;
    assert_eq!(outcome.result, "Done", "{outcome:?}");
    assert_eq!(lease_moves_from(&client, &ns, &after).await, target);
    routes_to(&client, &ns, target).await;
    eprintln!(
        "switchover by annotation: {after} -> {target} acknowledged in {:?}: {}",
        started.elapsed(),
        outcome.message
    );
    let after = wait_for("the status to follow", Duration::from_secs(120), || {
        let pgc = pgc.clone();
        async move { pgc.get("sync").await.ok()?.status?.current_primary.filter(|p| p == target) }
    })
    .await;
    ready("sync").await;

    // A crash: SIGKILL of the primary's instance manager (PID 1 of its container) from the
    // node, where this test runs on the node (found by its environment); no handover. Either the
    // lease expires and a replica takes over, or the restarted manager finds the lease still its
    // own at the same term and resumes; both end with one primary and Ready=True.
    let crashed = after;
    match manager_pid_on_this_node(&ns, &crashed) {
        None => eprintln!("SKIP (crash): {crashed}'s instance manager is not a process of this machine"),
        Some(pid) => {
            let restarts = |p: &Pod| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .map_or(0, |c| c.iter().map(|c| c.restart_count).sum::<i32>())
            };
            let before = restarts(&pods.get(&crashed).await.expect("the pod"));
            let started = Instant::now();
            let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
            assert!(killed.success());
            wait_for("the kubelet to restart the container", Duration::from_secs(120), || {
                let pods = pods.clone();
                let crashed = crashed.clone();
                async move { pods.get(&crashed).await.ok().filter(|p| restarts(p) > before).map(|_| ()) }
            })
            .await;
            wait_for("every pod ready again", Duration::from_secs(300), || {
                let pods = pods.clone();
                async move {
                    let all =
                        pods.list(&kube::api::ListParams::default().labels("pgwarden.io/cluster=sync")).await.ok()?;
                    let ready = all
                        .items
                        .iter()
                        .filter(|p| {
                            p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                        })
                        .count();
                    (ready == 3).then_some(())
                }
            })
            .await;
            ready("sync").await;
            let holder = wait_for("a primary", Duration::from_secs(120), || {
                let pgc = pgc.clone();
                async move { pgc.get("sync").await.ok()?.status?.current_primary }
            })
            .await;
            eprintln!(
                "crash of {crashed}'s manager: {holder} is primary, Ready=True again after {:?}",
                started.elapsed()
            );
            nothing_the_instances_own_is_the_operators(&client, &ns).await;
        }
    }

    // Scale down to two and back to three: the highest instance goes (after a handover if it
    // is the primary), its PVCs with it, and comes back as a fresh clone.
    let scale = |n: i32| serde_json::json!({"spec": {"instances": n}});
    pgc.patch("sync", &PatchParams::default(), &Patch::Merge(&scale(2))).await.expect("scale down");
    let started = Instant::now();
    wait_for("sync-3 and its PVCs to go", Duration::from_secs(300), || {
        let (pods, client, ns) = (pods.clone(), client.clone(), ns.clone());
        async move {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client, &ns);
            let pod_gone = pods.get_opt("sync-3").await.ok()?.is_none();
            let pvc_gone = pvcs.get_opt("sync-3").await.ok()?.is_none_or(|p| p.metadata.deletion_timestamp.is_some());
            (pod_gone && pvc_gone).then_some(())
        }
    })
    .await;
    let status = wait_for("two ready instances", Duration::from_secs(300), || {
        let pgc = pgc.clone();
        async move {
            let s = pgc.get("sync").await.ok()?.status?;
            let ready = s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            (s.instances == 2 && s.ready_instances == 2 && ready).then_some(s)
        }
    })
    .await;
    eprintln!("scale 3 -> 2 in {:?}; primary {:?}", started.elapsed(), status.current_primary);
    pgc.patch("sync", &PatchParams::default(), &Patch::Merge(&scale(3))).await.expect("scale up");
    let started = Instant::now();
    let status = wait_for("three ready instances", Duration::from_secs(300), || {
        let pgc = pgc.clone();
        async move {
            let s = pgc.get("sync").await.ok()?.status?;
            (s.ready_instances == 3 && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                .then_some(s)
        }
    })
    .await;
    eprintln!("scale 2 -> 3 in {:?}; primary {:?}", started.elapsed(), status.current_primary);
    nothing_the_instances_own_is_the_operators(&client, &ns).await;

    // A rolling update (new resources: every pod must be re-created): replicas one at a time,
    // then the primary after a switchover.
    let old_primary = status.current_primary.clone().expect("a primary");
    let patch = serde_json::json!({"spec": {"resources": {"requests": {"cpu": "50m"}}}});
    pgc.patch("sync", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("new resources");
    let started = Instant::now();
    let status = wait_for("every pod re-created with the new resources, Ready=True", Duration::from_secs(600), || {
        let (pgc, pods) = (pgc.clone(), pods.clone());
        async move {
            let all = pods.list(&kube::api::ListParams::default().labels("pgwarden.io/cluster=sync")).await.ok()?;
            let updated = all.items.iter().filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.containers[0].resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .is_some_and(|r| r.get("cpu").is_some_and(|q| q.0 == "50m"))
            });
            if updated.count() != 3 {
                return None;
            }
            let s = pgc.get("sync").await.ok()?.status?;
            (s.phase.as_deref() == Some("Cluster in healthy state")).then_some(s)
        }
    })
    .await;
    eprintln!(
        "rolling update of 3 instances in {:?}; primary {old_primary} -> {:?}",
        started.elapsed(),
        status.current_primary
    );
    assert_ne!(
        status.current_primary.as_deref(),
        Some(old_primary.as_str()),
        "the primary was updated after a switchover"
    );
    nothing_the_instances_own_is_the_operators(&client, &ns).await;

    backup_ends(&client, &ns, backup_applied).await;
    drop(operator);
}

/// Waits until the PostgresBackup of `testdata/backups/on-demand.yaml` is final: `Completed`
/// with its id and LSNs, or `Failed` with an error naming the cluster or its instance and
/// saying what to do. At most the start deadline and the unreachable deadline (5 minutes
/// each), and the time the operator was stopped.
async fn backup_ends(client: &Client, ns: &str, applied: Instant) {
    let pgb: Api<PostgresBackup> = Api::namespaced(client.clone(), ns);
    let status = wait_for("the PostgresBackup to be Completed or Failed", Duration::from_secs(900), || {
        let pgb = pgb.clone();
        async move { pgb.get("backed-up-on-demand").await.ok()?.status.filter(|s| s.phase().is_final()) }
    })
    .await;
    match status.phase() {
        BackupPhase::Completed => {
            assert!(status.backup_id.is_some() && status.end_lsn.is_some(), "{status:?}");
            eprintln!("backup: completed {:?} after it was applied: {status:?}", applied.elapsed());
        }
        _ => {
            let error = status.error.clone().unwrap_or_default();
            assert!(error.contains("backed-up"), "the error names the cluster or its instance: {status:?}");
            assert!(error.contains("create a new PostgresBackup"), "the error says what to do: {status:?}");
            eprintln!(
                "backup: failed {:?} after it was applied, as it should without a store: {error}",
                applied.elapsed()
            );
        }
    }
}

/// Waits until the Lease `sync-primary` is held by someone else than `old`; the new holder.
async fn lease_moves_from(client: &Client, ns: &str, old: &str) -> String {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("the lease to move from {old}"), Duration::from_secs(120), || {
        let leases = leases.clone();
        let old = old.to_owned();
        async move {
            let holder = leases.get("sync-primary").await.ok()?.spec?.holder_identity?;
            (!holder.is_empty() && holder != old).then_some(holder)
        }
    })
    .await
}

/// Waits until the `-rw` EndpointSlice routes to `primary`'s pod IP.
async fn routes_to(client: &Client, ns: &str, primary: &str) {
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("-rw to route to {primary}"), Duration::from_secs(60), || {
        let (slices, pods) = (slices.clone(), pods.clone());
        async move {
            let ip = pods.get(primary).await.ok()?.status?.pod_ip?;
            let slice = slices.get("sync-rw").await.ok()?;
            let addresses: Vec<String> = slice.endpoints.iter().flat_map(|e| e.addresses.clone()).collect();
            (addresses == [ip]).then_some(())
        }
    })
    .await;
}

/// The Lease, the `-rw` EndpointSlice and the role labels carry no field of the operator's
/// field manager: it never wrote them.
async fn nothing_the_instances_own_is_the_operators(client: &Client, ns: &str) {
    let managers = |meta: &kube::api::ObjectMeta| -> Vec<(String, String)> {
        meta.managed_fields
            .iter()
            .flatten()
            .map(|m| {
                (
                    m.manager.clone().unwrap_or_default(),
                    m.fields_v1.as_ref().map(|f| f.0.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    };
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), ns)
        .get("sync-primary")
        .await
        .expect("the lease");
    assert!(managers(&lease.metadata).iter().all(|(m, _)| m != "pgwarden-operator"), "{:?}", managers(&lease.metadata));
    let slice = Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(client.clone(), ns)
        .get("sync-rw")
        .await
        .expect("the slice");
    assert!(managers(&slice.metadata).iter().all(|(m, _)| m != "pgwarden-operator"), "{:?}", managers(&slice.metadata));
    for pod in Api::<Pod>::namespaced(client.clone(), ns).list(&Default::default()).await.expect("pods") {
        for (m, fields) in managers(&pod.metadata) {
            assert!(
                !(m == "pgwarden-operator" && fields.contains("pgwarden.io/role")),
                "{}: the operator owns the role label: {fields}",
                pod.name_any()
            );
        }
    }
}
