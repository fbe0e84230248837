//! Reconcile scenarios against the scripted API server ([`crate::testkit::FakeApi`]): from
//! nothing; an unchanged cluster sends no write; existing and provided Secrets are adopted,
//! never regenerated; a failover while the operator was down is observed without writing
//! anything the instances own; errors come back typed; a renewal rewrites only the certificate.

use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use serde_json::json;

use super::{Context, NoObserver, reconcile};
use crate::build::golden_tests::sample;
use crate::crd::PostgresCluster;
use crate::names::ROLE_LABEL;
use crate::testkit::{FakeApi, RecordedRequest};

fn context(api: &FakeApi) -> Arc<Context> {
    let mut ctx = Context::new(api.client(), Arc::new(NoObserver));
    ctx.read_instances = false;
    Arc::new(ctx)
}

/// The cluster `name` of `testdata/clusters/<name>.yaml`, stored in the fake, as the API
/// server would hand it to the reconcile (its uid and status included).
fn seeded(api: &FakeApi, sample_name: &str) -> PostgresCluster {
    let mut c = sample(sample_name);
    c.metadata.uid = None;
    api.insert(&c);
    current(api, &c)
}

fn current(api: &FakeApi, c: &PostgresCluster) -> PostgresCluster {
    api.get_as::<PostgresCluster>("db", &c.name_any()).expect("the cluster is stored")
}

async fn pass(api: &FakeApi, c: &PostgresCluster) {
    reconcile(Arc::new(current(api, c)), context(api)).await.expect("a reconcile");
}

/// What the instances do once they run: their pods are ready, scheduled, labelled with their
/// role, and `holder` holds the Lease at `term`.
fn instances_run(api: &FakeApi, cluster: &str, n: i32, holder: i32, term: i32) {
    for k in 1..=n {
        let name = format!("{cluster}-{k}");
        api.modify_as::<Pod>("db", &name, |p| {
            let role = if k == holder { "primary" } else { "replica" };
            p.metadata.labels.get_or_insert_default().insert(ROLE_LABEL.into(), role.into());
            let status = p.status.get_or_insert_default();
            status.phase = Some("Running".into());
            status.pod_ip = Some(format!("10.0.0.{k}"));
            status.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]);
            p.spec.get_or_insert_default().node_name = Some(format!("node-{k}"));
        });
    }
    for pvc in api.list_as::<k8s_openapi::api::core::v1::PersistentVolumeClaim>() {
        let name = pvc.name_any();
        api.modify_as::<k8s_openapi::api::core::v1::PersistentVolumeClaim>("db", &name, |p| {
            // Bound, at the size asked for.
            let asked =
                p.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.clone()).unwrap_or_default();
            let status = p.status.get_or_insert_default();
            status.phase = Some("Bound".into());
            if status.capacity.is_none() {
                status.capacity = Some(asked);
            }
        });
    }
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": format!("{cluster}-primary"), "namespace": "db"},
        "spec": {"holderIdentity": format!("{cluster}-{holder}"), "leaseDurationSeconds": 15, "leaseTransitions": term}
    }))
    .expect("a lease");
    api.insert(&lease);
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{cluster}-rw"), "namespace": "db",
                     "labels": {"kubernetes.io/service-name": format!("{cluster}-rw")},
                     "annotations": {"pgwarden.io/term": term.to_string()}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [format!("10.0.0.{holder}")]}],
        "ports": [{"name": "postgres", "port": 5432}]
    }))
    .expect("a slice");
    api.insert(&slice);
}

/// `testdata/clusters/three-sync.yaml` reconciled, its instances running with `sync-1` as the
/// primary, and reconciled again: a healthy cluster.
async fn running_sync() -> (FakeApi, PostgresCluster) {
    let api = FakeApi::new();
    let c = seeded(&api, "three-sync");
    pass(&api, &c).await;
    instances_run(&api, "sync", 3, 1, 1);
    pass(&api, &c).await;
    (api, c)
}

fn names_of(writes: &[RecordedRequest]) -> Vec<String> {
    writes
        .iter()
        .map(|w| {
            format!("{} {}/{}", w.method, w.plural.clone().unwrap_or_default(), w.name.clone().unwrap_or_default())
        })
        .collect()
}

#[tokio::test]
async fn from_nothing_every_object_is_created() {
    let api = FakeApi::new();
    let c = seeded(&api, "three-sync");
    pass(&api, &c).await;
    for s in ["sync-superuser", "sync-app", "sync-replication", "sync-api-token", "sync-ca", "sync-server"] {
        assert!(api.get_as::<Secret>("db", s).is_some(), "{s}");
    }
    for (plural, n) in [
        ("configmaps", 1),
        ("serviceaccounts", 1),
        ("roles", 1),
        ("rolebindings", 1),
        ("services", 4),
        ("poddisruptionbudgets", 2),
        ("persistentvolumeclaims", 6),
        ("pods", 3),
    ] {
        assert_eq!(api.list(plural).len(), n, "{plural}");
    }
    for w in api.writes().iter().filter(|w| w.plural.as_deref() != Some("events") && w.subresource.is_none()) {
        assert_eq!(w.field_manager(), Some("pgwarden-operator"), "{w}");
        assert!(w.is_apply(), "server-side apply: {w}");
    }
    let status = current(&api, &c).status.expect("a status");
    assert_eq!(status.phase.as_deref(), Some(super::status::PHASE_SETTING_UP));
    assert_eq!(status.instances, 0, "observed before the pods existed");
    assert!(!api.writes_to("events").is_empty(), "Created events");
}

#[tokio::test]
async fn an_unchanged_cluster_sends_no_write() {
    let api = FakeApi::new();
    let c = seeded(&api, "three-sync");
    pass(&api, &c).await;
    instances_run(&api, "sync", 3, 1, 1);
    pass(&api, &c).await; // the pods and the primary appear in the status
    api.clear_log();
    pass(&api, &c).await;
    assert!(api.writes().is_empty(), "the steady-state reconcile wrote: {:#?}", names_of(&api.writes()));
    let reads = api.requests();
    // One list per owned kind (9) and the Lease: the whole cost of a steady-state pass.
    assert_eq!(reads.len(), 10, "{:#?}", reads.iter().map(ToString::to_string).collect::<Vec<_>>());
    let status = current(&api, &c).status.expect("a status");
    assert_eq!(status.phase.as_deref(), Some(super::status::PHASE_HEALTHY));
    assert_eq!(status.current_primary.as_deref(), Some("sync-1"));
    assert_eq!(status.ready_instances, 3);
}

#[tokio::test]
async fn a_spec_change_rewrites_only_what_it_changes() {
    let (api, c) = running_sync().await;
    api.modify_as::<PostgresCluster>("db", "sync", |c| {
        c.spec.postgresql.parameters.insert("work_mem".into(), "8MB".into());
    });
    api.clear_log();
    pass(&api, &c).await;
    let writes: Vec<String> = names_of(&api.writes()).into_iter().filter(|w| !w.contains("events/")).collect();
    assert_eq!(
        writes,
        vec!["PATCH configmaps/sync-config".to_owned(), "PATCH postgresclusters/sync".to_owned()],
        "the ConfigMap and the status (observedGeneration)"
    );
    let cm = api.get("v1", "configmaps", "db", "sync-config").expect("the ConfigMap");
    assert!(cm["data"]["instance.yaml"].as_str().expect("yaml").contains("work_mem: 8MB"));
}

#[tokio::test]
async fn existing_and_provided_secrets_are_used_as_they_are() {
    let api = FakeApi::new();
    let mine = Secret {
        metadata: ObjectMeta { name: Some("mine".into()), namespace: Some("db".into()), ..ObjectMeta::default() },
        data: Some(
            [
                ("username".to_owned(), ByteString(b"postgres".to_vec())),
                ("password".to_owned(), ByteString(b"MyOwn".to_vec())),
            ]
            .into(),
        ),
        ..Secret::default()
    };
    api.insert(&mine);
    let existing_app = Secret {
        metadata: ObjectMeta {
            name: Some("single-app".into()),
            namespace: Some("db".into()),
            labels: Some([("pgwarden.io/cluster".to_owned(), "single".to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some([("password".to_owned(), ByteString(b"KeptFromBefore".to_vec()))].into()),
        ..Secret::default()
    };
    api.insert(&existing_app);
    let mut c = sample("single");
    c.metadata.uid = None;
    c.spec.superuser_secret = Some(crate::crd::LocalObjectReference { name: "mine".into() });
    api.insert(&c);
    pass(&api, &c).await;
    let secret_writes = names_of(&api.writes_to("secrets"));
    assert!(
        !secret_writes
            .iter()
            .any(|w| w.ends_with("/mine") || w.ends_with("/single-app") || w.ends_with("/single-superuser")),
        "{secret_writes:?}"
    );
    let app = api.get_as::<Secret>("db", "single-app").expect("kept");
    assert_eq!(app.data.expect("data")["password"].0, b"KeptFromBefore");
    let pod = serde_json::to_string(&api.get("v1", "pods", "db", "single-1").expect("a pod")).expect("json");
    assert!(pod.contains("\"name\":\"mine\""), "the pod mounts the provided Secret");

    // A second pass regenerates nothing.
    api.clear_log();
    pass(&api, &c).await;
    assert!(api.writes_to("secrets").is_empty(), "{:#?}", names_of(&api.writes_to("secrets")));
}

#[tokio::test]
async fn a_provided_secret_that_does_not_exist_is_named_in_the_status() {
    let api = FakeApi::new();
    let mut c = sample("single");
    c.metadata.uid = None;
    c.spec.superuser_secret = Some(crate::crd::LocalObjectReference { name: "not-there".into() });
    api.insert(&c);
    pass(&api, &c).await;
    let status = current(&api, &c).status.expect("a status");
    assert_eq!(status.phase.as_deref(), Some(super::status::PHASE_CANNOT_CREATE));
    assert!(status.phase_reason.as_deref().is_some_and(|r| r.contains("not-there")), "{status:?}");
}

#[tokio::test]
async fn a_failover_while_the_operator_was_down_is_seen_and_nothing_the_instances_own_is_written() {
    let (api, c) = running_sync().await;
    // The operator is down. sync-1's node dies: its pod is gone, sync-2 takes the lease and
    // routes -rw to itself, the instances relabel their pods.
    api.remove("v1", "pods", "db", "sync-1");
    instances_run(&api, "sync", 3, 2, 2);
    api.remove("v1", "pods", "db", "sync-1");
    let lease_before = api.get("coordination.k8s.io/v1", "leases", "db", "sync-primary");
    let slice_before = api.get("discovery.k8s.io/v1", "endpointslices", "db", "sync-rw");
    api.clear_log();
    // The operator is back.
    pass(&api, &c).await;
    let writes = api.writes();
    assert!(
        api.writes_to("leases").is_empty() && api.writes_to("endpointslices").is_empty(),
        "{:#?}",
        names_of(&writes)
    );
    let pod_writes = names_of(&api.writes_to("pods"));
    assert_eq!(pod_writes, vec!["PATCH pods/sync-1".to_owned()], "only the lost pod is created again, on its PVC");
    assert_eq!(api.get("coordination.k8s.io/v1", "leases", "db", "sync-primary"), lease_before);
    assert_eq!(api.get("discovery.k8s.io/v1", "endpointslices", "db", "sync-rw"), slice_before);
    let recreated = api.get_as::<Pod>("db", "sync-1").expect("sync-1 again");
    assert!(!recreated.labels().contains_key(ROLE_LABEL), "the operator sets no role label");
    assert_eq!(api.get_as::<Pod>("db", "sync-2").expect("sync-2").labels()[ROLE_LABEL], "primary");
    let status = current(&api, &c).status.expect("a status");
    assert_eq!(status.current_primary.as_deref(), Some("sync-2"));
    assert_eq!(status.primary_term, Some(2));
    let events: Vec<String> =
        api.writes_to("events").iter().filter_map(|w| w.body.as_ref()).map(|b| b["reason"].to_string()).collect();
    assert!(events.iter().any(|r| r.contains("FailoverDetected")), "{events:?}");
}

#[tokio::test]
async fn a_pod_that_ended_is_deleted_then_created_again() {
    let api = FakeApi::new();
    let c = seeded(&api, "single");
    pass(&api, &c).await;
    api.modify_as::<Pod>("db", "single-1", |p| {
        let s = p.status.get_or_insert_default();
        s.phase = Some("Failed".into());
        s.reason = Some("Evicted".into());
    });
    api.clear_log();
    pass(&api, &c).await;
    assert_eq!(names_of(&api.writes_to("pods")), vec!["DELETE pods/single-1".to_owned()]);
    let delete = &api.writes_to("pods")[0];
    assert!(delete.body.as_ref().is_some_and(|b| b["preconditions"]["uid"].is_string()), "{delete}");
    api.clear_log();
    pass(&api, &c).await;
    assert_eq!(names_of(&api.writes_to("pods")), vec!["PATCH pods/single-1".to_owned()]);
}

#[tokio::test]
async fn the_server_certificate_is_renewed_from_the_same_ca_and_nothing_else_is_written() {
    let api = FakeApi::new();
    let c = seeded(&api, "single");
    pass(&api, &c).await;
    let ca_before = api.get("v1", "secrets", "db", "single-ca").expect("the CA");
    let cert_before = api.get("v1", "secrets", "db", "single-server").expect("the certificate");
    api.modify_as::<Secret>("db", "single-server", |s| {
        s.metadata
            .annotations
            .get_or_insert_default()
            .insert(crate::build::secrets::NOT_AFTER_ANNOTATION.into(), "2026-12-10T00:00:00Z".into());
    });
    api.clear_log();
    pass(&api, &c).await;
    assert_eq!(names_of(&api.writes_to("secrets")), vec!["PATCH secrets/single-server".to_owned()]);
    assert_eq!(api.get("v1", "secrets", "db", "single-ca"), Some(ca_before.clone()));
    let after = api.get("v1", "secrets", "db", "single-server").expect("renewed");
    assert_ne!(after["data"]["tls.crt"], cert_before["data"]["tls.crt"]);
    assert_eq!(after["data"]["ca.crt"], ca_before["data"]["ca.crt"], "signed by the same CA");
}

#[tokio::test]
async fn an_api_failure_is_a_typed_error_and_writes_nothing_half() {
    let api = FakeApi::new();
    let c = seeded(&api, "single");
    api.fail_next(http::Method::GET, "pods", 1, 500);
    let e = reconcile(Arc::new(current(&api, &c)), context(&api)).await.expect_err("the list failed");
    assert_eq!(e.kind(), "kube");
    assert!(api.writes().is_empty(), "nothing was written before everything was read: {:#?}", names_of(&api.writes()));
}

#[tokio::test]
async fn a_larger_size_grows_every_pvc_in_place_and_a_refusal_is_shown_not_retried() {
    let (api, c) = running_sync().await;
    api.modify_as::<PostgresCluster>("db", "sync", |c| c.spec.storage.size = "10Gi".into());
    // The API server refuses sync-3's (a StorageClass without allowVolumeExpansion).
    api.inject(crate::testkit::Fault::new(http::Method::PATCH, "persistentvolumeclaims", 403).named("sync-3").message(
        "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
    ));
    api.clear_log();
    pass(&api, &c).await;
    let grown: Vec<String> = names_of(&api.writes_to("persistentvolumeclaims"));
    assert_eq!(
        grown,
        [
            "PATCH persistentvolumeclaims/sync-1",
            "PATCH persistentvolumeclaims/sync-2",
            "PATCH persistentvolumeclaims/sync-3"
        ]
    );
    let pvc = api.get("v1", "persistentvolumeclaims", "db", "sync-1").expect("the PVC");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "10Gi");
    assert!(
        api.get("v1", "persistentvolumeclaims", "db", "sync-1-wal").expect("the WAL PVC")["spec"]["resources"]["requests"]
            ["storage"]
            == "2Gi",
        "the WAL volume keeps its size"
    );
    let status = current(&api, &c).status.expect("a status");
    assert_eq!(status.volume_resizes["sync-1"].state, "Resizing");
    assert_eq!(status.volume_resizes["sync-3"].state, "Refused");
    assert!(status.volume_resizes["sync-3"].message.as_deref().is_some_and(|m| m.contains("storageclass")));
    // The next pass asks nothing again: the refused PVC is not patched in a loop.
    api.clear_log();
    pass(&api, &c).await;
    assert!(
        api.writes_to("persistentvolumeclaims").is_empty(),
        "{:#?}",
        names_of(&api.writes_to("persistentvolumeclaims"))
    );
    let status = current(&api, &c).status.expect("a status");
    assert_eq!(status.volume_resizes["sync-1"].state, "Resizing");
    assert_eq!(status.volume_resizes["sync-1"].capacity.as_deref(), Some("5Gi"));
    // The volumes grew (the CSI driver): the status forgets them, the refused one stays.
    for n in 1..=2 {
        api.modify_as::<k8s_openapi::api::core::v1::PersistentVolumeClaim>("db", &format!("sync-{n}"), |p| {
            p.status.get_or_insert_default().capacity = Some(
                [("storage".to_owned(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("10Gi".into()))].into(),
            );
        });
    }
    pass(&api, &c).await;
    let status = current(&api, &c).status.expect("a status");
    assert_eq!(status.volume_resizes.keys().collect::<Vec<_>>(), ["sync-3"]);
}

/// Instances scripted for the control routes: every call is recorded, answers come from the
/// script (`path` → answer), unreachable by default.
#[derive(Default)]
struct ScriptedInstances {
    calls: std::sync::Mutex<Vec<(String, String, serde_json::Value)>>,
    answers:
        std::sync::Mutex<std::collections::BTreeMap<String, Result<serde_json::Value, crate::instances::ControlError>>>,
}

impl super::act::InstanceApi for ScriptedInstances {
    fn post<'a>(
        &'a self,
        target: &'a crate::instances::Target,
        path: &'a str,
        body: serde_json::Value,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<serde_json::Value, crate::instances::ControlError>> + Send + 'a>,
    > {
        self.calls.lock().expect("calls").push((target.name.clone(), path.to_owned(), body));
        let answer = self.answers.lock().expect("answers").get(path).cloned();
        Box::pin(async move {
            answer.unwrap_or_else(|| Err(crate::instances::ControlError::Unreachable("no answer".into())))
        })
    }
}

fn context_with(api: &FakeApi, instances: Arc<ScriptedInstances>) -> Arc<Context> {
    let mut ctx = Context::new(api.client(), Arc::new(NoObserver));
    ctx.read_instances = false;
    ctx.instance_api = instances;
    Arc::new(ctx)
}

fn annotate(api: &FakeApi, key: &str, value: &str) {
    api.modify_as::<PostgresCluster>("db", "sync", |c| {
        c.metadata.annotations.get_or_insert_default().insert(key.into(), value.into());
    });
}

#[tokio::test]
async fn a_switchover_annotation_is_sent_to_the_primary_and_acknowledged() {
    let (api, c) = running_sync().await;
    let scripted = Arc::new(ScriptedInstances::default());
    annotate(&api, super::requests::SWITCHOVER, "sync-2");

    // The primary does not answer: the request stays and is tried again.
    reconcile(Arc::new(current(&api, &c)), context_with(&api, scripted.clone())).await.expect("a pass");
    assert!(current(&api, &c).metadata.annotations.expect("annotations").contains_key(super::requests::SWITCHOVER));
    assert!(current(&api, &c).status.expect("status").requests.is_empty());

    scripted.answers.lock().expect("answers").insert("/switchover".into(), Ok(json!({"primary": "sync-2"})));
    api.clear_log();
    reconcile(Arc::new(current(&api, &c)), context_with(&api, scripted.clone())).await.expect("a pass");
    let calls = scripted.calls.lock().expect("calls").clone();
    assert_eq!(
        calls.last().map(|(t, p, b)| (t.as_str(), p.as_str(), b.clone())),
        Some(("sync-1", "/switchover", json!({"target": "sync-2"})))
    );
    let now = current(&api, &c);
    assert!(
        !now.metadata.annotations.clone().unwrap_or_default().contains_key(super::requests::SWITCHOVER),
        "acknowledged"
    );
    let outcome = &now.status.expect("status").requests[super::requests::SWITCHOVER];
    assert_eq!((outcome.result.as_str(), outcome.value.as_str()), ("Done", "sync-2"));
    assert!(outcome.message.contains("handed the primary over to sync-2"), "{outcome:?}");
    assert!(api.writes_to("events").iter().any(|w| w.body.as_ref().is_some_and(|b| b["reason"] == "RequestDone")));

    // Nothing more to do: the next pass writes nothing.
    api.clear_log();
    reconcile(Arc::new(current(&api, &c)), context_with(&api, scripted.clone())).await.expect("a pass");
    assert!(api.writes().is_empty(), "{:#?}", names_of(&api.writes()));
}

#[tokio::test]
async fn a_request_for_a_stranger_is_refused_without_calling_anyone_and_restart_recreates_pods() {
    let (api, c) = running_sync().await;
    let scripted = Arc::new(ScriptedInstances::default());
    annotate(&api, super::requests::FENCE, "sync-9");
    annotate(&api, super::requests::RESTART, "sync-3");
    api.clear_log();
    reconcile(Arc::new(current(&api, &c)), context_with(&api, scripted.clone())).await.expect("a pass");
    assert!(scripted.calls.lock().expect("calls").is_empty());
    let status = current(&api, &c).status.expect("status");
    assert_eq!(status.requests[super::requests::FENCE].result, "Refused");
    assert!(status.requests[super::requests::FENCE].message.contains("sync-9 is not an instance of sync"));
    assert_eq!(status.requests[super::requests::RESTART].result, "Done");
    assert!(names_of(&api.writes_to("pods")).contains(&"DELETE pods/sync-3".to_owned()));
    assert!(current(&api, &c).metadata.annotations.unwrap_or_default().is_empty(), "both acknowledged");
}

#[tokio::test]
async fn fence_is_sent_to_each_instance_and_a_refusal_is_recorded() {
    let (api, c) = running_sync().await;
    let scripted = Arc::new(ScriptedInstances::default());
    scripted.answers.lock().expect("answers").insert("/fence".into(), Ok(json!({"fenced": true})));
    scripted.answers.lock().expect("answers").insert(
        "/unfence".into(),
        Err(crate::instances::ControlError::Refused("sync-2 answered /unfence with HTTP 409: busy".into())),
    );
    annotate(&api, super::requests::FENCE, "sync-2,sync-3");
    reconcile(Arc::new(current(&api, &c)), context_with(&api, scripted.clone())).await.expect("a pass");
    let called: Vec<(String, String)> =
        scripted.calls.lock().expect("calls").iter().map(|(t, p, _)| (t.clone(), p.clone())).collect();
    assert_eq!(called, [("sync-2".to_owned(), "/fence".to_owned()), ("sync-3".to_owned(), "/fence".to_owned())]);
    annotate(&api, super::requests::UNFENCE, "sync-2");
    reconcile(Arc::new(current(&api, &c)), context_with(&api, scripted.clone())).await.expect("a pass");
    let status = current(&api, &c).status.expect("status");
    assert_eq!(status.requests[super::requests::FENCE].result, "Done");
    assert_eq!(status.requests[super::requests::UNFENCE].result, "Refused");
    assert!(status.requests[super::requests::UNFENCE].message.contains("busy"));
}

#[tokio::test]
async fn scaling_down_removes_the_highest_replicas_never_the_primary_and_their_pvcs_by_policy() {
    let api = FakeApi::new();
    let c = seeded(&api, "three-sync");
    pass(&api, &c).await;
    instances_run(&api, "sync", 3, 3, 1); // sync-3 is the primary
    pass(&api, &c).await;
    let scripted = Arc::new(ScriptedInstances::default());
    scripted.answers.lock().expect("answers").insert("/switchover".into(), Ok(json!({"primary": "sync-1"})));
    api.modify_as::<PostgresCluster>("db", "sync", |c| c.spec.instances = 2);
    api.clear_log();
    reconcile(Arc::new(current(&api, &c)), context_with(&api, scripted.clone())).await.expect("a pass");
    let calls: Vec<(String, String)> =
        scripted.calls.lock().expect("calls").iter().map(|(t, p, _)| (t.clone(), p.clone())).collect();
    assert_eq!(calls, [("sync-3".to_owned(), "/switchover".to_owned())], "the leaving primary hands over first");
    assert!(
        api.writes_to("pods").is_empty() && api.writes_to("persistentvolumeclaims").is_empty(),
        "{:#?}",
        names_of(&api.writes())
    );
    let cm = api.get("v1", "configmaps", "db", "sync-config").expect("the ConfigMap");
    assert!(!cm["data"]["instance.yaml"].as_str().expect("yaml").contains("sync-3"), "the members are two");

    // The lease moved: sync-3 is a replica now, and goes.
    instances_run(&api, "sync", 3, 1, 2);
    api.clear_log();
    reconcile(Arc::new(current(&api, &c)), context_with(&api, scripted.clone())).await.expect("a pass");
    assert_eq!(names_of(&api.writes_to("pods")), ["DELETE pods/sync-3"]);
    assert!(api.writes_to("persistentvolumeclaims").is_empty(), "the PVCs wait for the pod to be gone");
    api.remove("v1", "pods", "db", "sync-3");
    api.clear_log();
    reconcile(Arc::new(current(&api, &c)), context_with(&api, scripted.clone())).await.expect("a pass");
    assert_eq!(
        names_of(&api.writes_to("persistentvolumeclaims")),
        ["DELETE persistentvolumeclaims/sync-3", "DELETE persistentvolumeclaims/sync-3-wal"]
    );
    assert!(api.writes_to("pods").is_empty(), "sync-3 is not created again");
}

#[tokio::test]
async fn retained_pvcs_lose_their_owner_and_stay_after_scaling_down() {
    let api = FakeApi::new();
    let c = seeded(&api, "three-sync");
    pass(&api, &c).await;
    instances_run(&api, "sync", 3, 1, 1);
    api.modify_as::<PostgresCluster>("db", "sync", |c| {
        c.spec.pvc_retention_policy.when_deleted = crate::crd::RetentionAction::Retain;
        c.spec.pvc_retention_policy.when_scaled = crate::crd::RetentionAction::Retain;
    });
    api.clear_log();
    pass(&api, &c).await;
    assert_eq!(api.writes_to("persistentvolumeclaims").len(), 6, "every PVC's owner reference removed");
    for pvc in api.list_as::<k8s_openapi::api::core::v1::PersistentVolumeClaim>() {
        assert!(pvc.owner_references().is_empty(), "{}", pvc.name_any());
    }
    api.clear_log();
    pass(&api, &c).await;
    assert!(api.writes().is_empty(), "settled: {:#?}", names_of(&api.writes()));
    api.modify_as::<PostgresCluster>("db", "sync", |c| c.spec.instances = 2);
    pass(&api, &c).await;
    api.remove("v1", "pods", "db", "sync-3");
    api.clear_log();
    pass(&api, &c).await;
    assert!(api.writes_to("persistentvolumeclaims").is_empty(), "Retain keeps sync-3's PVCs");
    assert!(api.get("v1", "persistentvolumeclaims", "db", "sync-3").is_some());
}

#[tokio::test]
async fn a_new_image_rolls_replicas_one_at_a_time_then_the_primary_after_a_switchover() {
    let (api, c) = running_sync().await;
    let scripted = Arc::new(ScriptedInstances::default());
    scripted.answers.lock().expect("answers").insert("/switchover".into(), Ok(json!({"primary": "sync-2"})));
    let ctx = || context_with(&api, scripted.clone());
    api.modify_as::<PostgresCluster>("db", "sync", |c| c.spec.image = Some("pgwarden/postgres:15-next".into()));
    let mut order = Vec::new();
    let mut holder = 1;
    for _ in 0..12 {
        api.clear_log();
        reconcile(Arc::new(current(&api, &c)), ctx()).await.expect("a pass");
        for w in api.writes_to("pods") {
            let name = w.name.clone().unwrap_or_default();
            if w.method == http::Method::DELETE {
                order.push(format!("recreate {name}"));
                api.remove("v1", "pods", "db", &name); // the kubelet stopped it
            }
        }
        let calls: Vec<String> = scripted
            .calls
            .lock()
            .expect("calls")
            .drain(..)
            .map(|(t, p, b)| format!("{p} on {t} to {}", b["target"]))
            .collect();
        if !calls.is_empty() {
            order.extend(calls);
            holder = 2; // the handover happened
        }
        instances_run(&api, "sync", 3, holder, holder); // re-created pods start and become ready
        if current(&api, &c).status.is_some_and(|s| s.phase.as_deref() == Some(super::status::PHASE_HEALTHY))
            && order.len() >= 4
        {
            break;
        }
    }
    assert_eq!(order, ["recreate sync-3", "recreate sync-2", "/switchover on sync-1 to \"sync-2\"", "recreate sync-1"]);
    for n in 1..=3 {
        let pod = api.get_as::<Pod>("db", &format!("sync-{n}")).expect("a pod");
        assert_eq!(pod.spec.expect("spec").containers[0].image.as_deref(), Some("pgwarden/postgres:15-next"));
    }
    api.clear_log();
    reconcile(Arc::new(current(&api, &c)), ctx()).await.expect("a pass");
    assert!(api.writes().is_empty(), "done: {:#?}", names_of(&api.writes()));
}

#[tokio::test]
async fn a_cordoned_node_under_the_primary_hands_it_over_to_a_replica_on_another_node() {
    let (api, c) = running_sync().await;
    let scripted = Arc::new(ScriptedInstances::default());
    scripted.answers.lock().expect("answers").insert("/switchover".into(), Ok(json!({"primary": "sync-3"})));
    let ctx = {
        let mut ctx = Context::new(api.client(), Arc::new(NoObserver));
        ctx.read_instances = false;
        ctx.instance_api = scripted.clone();
        ctx
    };
    let cordoned = ctx.cordoned.clone();
    let cordon = |name: &str| {
        let mut node = k8s_openapi::api::core::v1::Node::default();
        node.metadata.name = Some(name.into());
        node.spec = Some(k8s_openapi::api::core::v1::NodeSpec { unschedulable: Some(true), ..Default::default() });
        cordoned.observe(&node);
    };
    // A replica's node: its eviction is the budgets' business, the operator does nothing.
    cordon("node-2");
    let ctx = Arc::new(ctx);
    reconcile(Arc::new(current(&api, &c)), ctx.clone()).await.expect("a pass");
    assert!(scripted.calls.lock().expect("calls").is_empty());
    // The primary's node (kubectl drain cordons it first): a switchover to the replica that is
    // not on a cordoned node, before the drain can evict the primary; no pod is deleted.
    cordon("node-1");
    api.clear_log();
    reconcile(Arc::new(current(&api, &c)), ctx.clone()).await.expect("a pass");
    let calls = scripted.calls.lock().expect("calls").clone();
    assert_eq!(calls, [("sync-1".to_owned(), "/switchover".to_owned(), json!({"target": "sync-3"}))]);
    assert!(api.writes_to("pods").is_empty(), "the drain evicts; the operator deletes nothing");
    let reason = current(&api, &c).status.and_then(|s| s.phase_reason).unwrap_or_default();
    assert!(reason.contains("node-1 is cordoned: sync-1 handed over to sync-3"), "{reason}");
    assert!(api.writes_to("events").iter().any(|w| w.body.as_ref().is_some_and(|b| b["reason"] == "NodeDrain")));
    // Once sync-3 holds the lease, nothing more.
    instances_run(&api, "sync", 3, 3, 2);
    scripted.calls.lock().expect("calls").clear();
    reconcile(Arc::new(current(&api, &c)), ctx).await.expect("a pass");
    assert!(scripted.calls.lock().expect("calls").is_empty());
}

#[tokio::test]
async fn a_lost_pvc_gives_a_new_volume_and_pod_for_a_fresh_clone() {
    let (api, c) = running_sync().await;
    // The replica's PVC was deleted; once its pod is gone too (the PVC protection finalizer
    // holds the PVC until then), both are created again: the new instance clones afresh.
    api.remove("v1", "pods", "db", "sync-3");
    api.remove("v1", "persistentvolumeclaims", "db", "sync-3");
    api.clear_log();
    pass(&api, &c).await;
    let written = |plural: &str| -> Vec<String> {
        let mut names: Vec<String> = api.writes_to(plural).iter().filter_map(|w| w.name.clone()).collect();
        names.dedup();
        names
    };
    assert_eq!(written("persistentvolumeclaims"), ["sync-3"], "only the lost PVC");
    assert_eq!(written("pods"), ["sync-3"]);
    let pod = api.get_as::<Pod>("db", "sync-3").expect("the pod");
    let claims: Vec<String> = pod
        .spec
        .expect("spec")
        .volumes
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
        .collect();
    assert!(claims.contains(&"sync-3".to_owned()), "{claims:?}");
    assert!(api.writes_to("leases").is_empty() && api.writes_to("endpointslices").is_empty());
}
