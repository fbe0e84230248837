//! The fake API server through a real `kube::Client` and typed `kube::Api`s: what kube sends
//! is what the reconcile will send, and what the fake answers must parse as the real server's
//! answers do.

use std::future::Future;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use serde_json::{Value, json};

use super::{FakeApi, Fault, ResourceType};
use crate::crd::PostgresCluster;

const MANAGER: &str = "pgwarden-operator";

/// Runs a test body with a deadline: the fake answers at once, so a body that waits is a bug.
async fn within_deadline<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), body).await.expect("the test did not finish within 10 s")
}

/// The `Status` of a failed call, or a panic saying what came instead.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected kube::Error::Api, got {other:?}"),
    }
}

fn config_map(name: &str, labels: Value, data: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "db", "labels": labels}, "data": data,
    }))
    .expect("a ConfigMap")
}

fn pod(name: &str, namespace: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "postgres", "image": "pgwarden/postgres:15"}]},
    }))
    .expect("a Pod")
}

fn cluster(instances: i32) -> PostgresCluster {
    serde_json::from_value(json!({
        "apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": "pg", "namespace": "db"},
        "spec": {"instances": instances, "storage": {"size": "1Gi"}},
    }))
    .expect("a PostgresCluster")
}

fn rv(object: &impl kube::Resource) -> String {
    object.meta().resource_version.clone().expect("a resourceVersion")
}

#[tokio::test]
async fn create_get_and_the_shapes_of_404_and_409() {
    within_deadline(async {
        let api = FakeApi::new();
        let maps: Api<ConfigMap> = Api::namespaced(api.client(), "db");
        let created = maps
            .create(&PostParams::default(), &config_map("pg-config", json!({}), json!({"a": "1"})))
            .await
            .expect("create");
        let meta = &created.metadata;
        assert_eq!(meta.uid.as_deref(), Some("uid-1"));
        assert_eq!(meta.resource_version.as_deref(), Some("1"));
        assert_eq!(meta.generation, Some(1));
        assert_eq!(meta.creation_timestamp.as_ref().map(|t| t.0.to_string()).as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(maps.get("pg-config").await.expect("get"), created);

        let missing = api_error(maps.get("absent").await);
        assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
        assert_eq!(missing.message, "configmaps \"absent\" not found");
        assert_eq!(maps.get_opt("absent").await.expect("get_opt maps 404 to None"), None);

        let again =
            api_error(maps.create(&PostParams::default(), &config_map("pg-config", json!({}), json!({}))).await);
        assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
        assert_eq!(api.requests().iter().map(|r| r.status).collect::<Vec<_>>(), [201, 200, 404, 404, 409]);
    })
    .await;
}

#[tokio::test]
async fn lists_select_by_label_in_a_namespace_or_all() {
    within_deadline(async {
        let api = FakeApi::new();
        api.insert(&pod("pg-1", "db", json!({"pgwarden.io/cluster": "pg", "pgwarden.io/role": "primary"})));
        api.insert(&pod("pg-2", "db", json!({"pgwarden.io/cluster": "pg", "pgwarden.io/role": "replica"})));
        api.insert(&pod("other-1", "db", json!({"pgwarden.io/cluster": "other"})));
        api.insert(&pod("pg-1", "elsewhere", json!({"pgwarden.io/cluster": "pg"})));
        let pods: Api<Pod> = Api::namespaced(api.client(), "db");
        let names = |list: kube::core::ObjectList<Pod>| {
            list.items.into_iter().map(|p| p.metadata.name.unwrap_or_default()).collect::<Vec<_>>()
        };
        let select = |s: &str| ListParams::default().labels(s);
        assert_eq!(names(pods.list(&select("pgwarden.io/cluster=pg")).await.expect("list")), ["pg-1", "pg-2"]);
        assert_eq!(names(pods.list(&select("pgwarden.io/role")).await.expect("list")), ["pg-1", "pg-2"]);
        assert_eq!(
            names(pods.list(&select("pgwarden.io/cluster=pg,pgwarden.io/role=replica")).await.expect("list")),
            ["pg-2"]
        );
        assert_eq!(names(pods.list(&select("!pgwarden.io/role")).await.expect("list")), ["other-1"]);
        assert_eq!(
            names(pods.list(&ListParams::default().fields("metadata.name=pg-2")).await.expect("list")),
            ["pg-2"]
        );

        let everywhere: Api<Pod> = Api::all(api.client());
        let list = everywhere.list(&select("pgwarden.io/cluster=pg")).await.expect("list in all namespaces");
        assert_eq!(list.types.kind, "PodList");
        assert_eq!(list.metadata.resource_version.as_deref(), Some("4"));
        let keys: Vec<_> = list.items.iter().map(|p| (p.metadata.namespace.clone(), p.metadata.name.clone())).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");

        let names_only = pods.list_metadata(&select("pgwarden.io/cluster=pg")).await.expect("list_metadata");
        assert_eq!(names_only.items.len(), 2);
        assert_eq!(names_only.items[0].metadata.name.as_deref(), Some("pg-1"));
        let one = pods.get_metadata("pg-2").await.expect("get_metadata");
        assert_eq!(one.metadata.labels.and_then(|l| l.get("pgwarden.io/role").cloned()).as_deref(), Some("replica"));

        let bad = api_error(pods.list(&select("a in (b")).await);
        assert_eq!(bad.code, 400, "{bad:?}");
        assert_eq!(api.requests()[0].param("labelSelector"), Some("pgwarden.io/cluster=pg"));
        assert!(api.writes().is_empty());
    })
    .await;
}

#[tokio::test]
async fn an_apply_creates_then_a_same_apply_changes_nothing() {
    within_deadline(async {
        let api = FakeApi::new();
        let maps: Api<ConfigMap> = Api::namespaced(api.client(), "db");
        let apply = PatchParams::apply(MANAGER).force();
        let desired = config_map("pg-config", json!({"pgwarden.io/cluster": "pg"}), json!({"instance.yaml": "a"}));

        let first = maps.patch("pg-config", &apply, &Patch::Apply(&desired)).await.expect("apply creates");
        assert_eq!((rv(&first), first.metadata.uid.as_deref()), ("1".to_owned(), Some("uid-1")));
        assert_eq!(api.requests()[0].status, 201);
        let second = maps.patch("pg-config", &apply, &Patch::Apply(&desired)).await.expect("apply again");
        assert_eq!(second, first, "a no-op apply keeps the resourceVersion");

        let log = api.writes_to("configmaps");
        assert_eq!(log.len(), 2, "{log:#?}");
        assert!(
            log.iter().all(|r| r.is_apply() && r.field_manager() == Some(MANAGER) && r.param("force") == Some("true"))
        );
        assert_eq!((log[0].changed, log[1].changed), (true, false));
        assert_eq!(log[1].content_type.as_deref(), Some("application/apply-patch+yaml"));
        assert_eq!(log[1].body.as_ref().and_then(|b| b.pointer("/data/instance.yaml")), Some(&json!("a")));
        let line = "PATCH /api/v1/namespaces/db/configmaps/pg-config?force=true&fieldManager=pgwarden-operator";
        assert_eq!(log[1].to_string(), format!("{line} (application/apply-patch+yaml) -> 200 (no change)"));

        let changed = config_map("pg-config", json!({"pgwarden.io/cluster": "pg"}), json!({"instance.yaml": "b"}));
        let third = maps.patch("pg-config", &apply, &Patch::Apply(&changed)).await.expect("apply a change");
        assert_eq!(rv(&third), "2");
        assert_eq!(third.data.as_ref().and_then(|d| d.get("instance.yaml")).map(String::as_str), Some("b"));
    })
    .await;
}

#[tokio::test]
async fn an_apply_keeps_what_others_wrote_and_drops_what_the_manager_gave_up() {
    within_deadline(async {
        let api = FakeApi::new();
        let pods: Api<Pod> = Api::namespaced(api.client(), "db");
        let apply = PatchParams::apply(MANAGER).force();
        let labels = json!({"pgwarden.io/cluster": "pg", "pgwarden.io/instance": "pg-1", "old": "x"});
        pods.patch("pg-1", &apply, &Patch::Apply(pod("pg-1", "db", labels))).await.expect("apply creates");
        // The instance labels itself, and the kubelet reports a status.
        api.modify_as::<Pod>("db", "pg-1", |p| {
            p.metadata.labels.get_or_insert_default().insert("pgwarden.io/role".into(), "primary".into());
            p.status = Some(serde_json::from_value(json!({"phase": "Running"})).expect("a PodStatus"));
        })
        .expect("the pod exists");

        let labels = json!({"pgwarden.io/cluster": "pg", "pgwarden.io/instance": "pg-1"});
        let applied = pods.patch("pg-1", &apply, &Patch::Apply(pod("pg-1", "db", labels))).await.expect("apply");
        let labels = applied.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.keys().map(String::as_str).collect::<Vec<_>>(),
            ["pgwarden.io/cluster", "pgwarden.io/instance", "pgwarden.io/role"]
        );
        assert_eq!(
            applied.status.and_then(|s| s.phase).as_deref(),
            Some("Running"),
            "the main resource leaves .status alone"
        );
        assert_eq!(applied.metadata.uid.as_deref(), Some("uid-1"));
    })
    .await;
}

#[tokio::test]
async fn status_writes_change_only_the_status_and_spec_changes_bump_the_generation() {
    within_deadline(async {
        let api = FakeApi::new();
        let stored = api.insert(&cluster(3));
        assert_eq!(stored.pointer("/metadata/generation"), Some(&json!(1)));
        let clusters: Api<PostgresCluster> = Api::namespaced(api.client(), "db");

        let status = json!({"status": {"phase": "Cluster in healthy state", "instances": 3}, "spec": {"instances": 9}});
        let patched = clusters
            .patch_status("pg", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("merge patch of status");
        assert_eq!(patched.spec.instances, 3, "a /status patch changes only .status");
        let got = patched.status.clone().expect("a status");
        assert_eq!((got.phase.as_deref(), got.instances), (Some("Cluster in healthy state"), 3));
        assert_eq!((patched.metadata.generation, rv(&patched)), (Some(1), "2".to_owned()));

        // A dynamic server-side apply of the status, as the reconcile writes it.
        let apply = PatchParams::apply(MANAGER).force();
        let status = json!({"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresCluster",
            "status": {"phase": "Cluster in healthy state", "instances": 3, "readyInstances": 3}});
        let applied = clusters.patch_status("pg", &apply, &Patch::Apply(&status)).await.expect("apply of status");
        assert_eq!(applied.status.as_ref().map(|s| s.ready_instances), Some(3));
        let again = clusters.patch_status("pg", &apply, &Patch::Apply(&status)).await.expect("the same apply");
        assert_eq!(rv(&again), rv(&applied), "a no-op status apply is not a write");

        let mut read = clusters.get_status("pg").await.expect("get_status");
        read.spec.instances = 7;
        read.status.get_or_insert_default().phase = Some("Setting up primary".into());
        let replaced = clusters.replace_status("pg", &PostParams::default(), &read).await.expect("replace_status");
        assert_eq!(
            (replaced.spec.instances, replaced.status.and_then(|s| s.phase).as_deref()),
            (3, Some("Setting up primary"))
        );
        let healthy = json!({"status": {"phase": "Cluster in healthy state"}});
        clusters
            .patch_status("pg", &PatchParams::default(), &Patch::Merge(&healthy))
            .await
            .expect("merge patch of status");

        let spec = json!({"spec": {"instances": 5}, "status": {"phase": "ignored"}});
        let scaled =
            clusters.patch("pg", &PatchParams::default(), &Patch::Merge(&spec)).await.expect("merge patch of spec");
        assert_eq!((scaled.spec.instances, scaled.metadata.generation), (5, Some(2)));
        assert_eq!(scaled.status.and_then(|s| s.phase).as_deref(), Some("Cluster in healthy state"));
        let status_writes: Vec<_> =
            api.writes_to("postgresclusters").iter().map(|r| (r.subresource.clone(), r.changed)).collect();
        let status = Some("status".to_owned());
        let expected =
            [(status.clone(), true), (status.clone(), true), (status.clone(), false), (status.clone(), true)];
        assert_eq!(status_writes, [&expected[..], &[(status, true), (None, true)]].concat());
    })
    .await;
}

#[tokio::test]
async fn a_replace_with_a_stale_resource_version_is_a_conflict() {
    within_deadline(async {
        let api = FakeApi::new();
        let leases: Api<Lease> = Api::namespaced(api.client(), "db");
        let lease: Lease = serde_json::from_value(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "pg-primary", "namespace": "db"}, "spec": {"holderIdentity": "pg-1", "leaseTransitions": 0}}))
        .expect("a Lease");
        let mut read = leases.create(&PostParams::default(), &lease).await.expect("create");
        // Another instance takes the lease meanwhile.
        let taken = api
            .modify_as::<Lease>("db", "pg-primary", |l| {
                let spec = l.spec.get_or_insert_default();
                spec.holder_identity = Some("pg-2".into());
                spec.lease_transitions = Some(1);
            })
            .expect("the lease exists");
        assert_eq!(rv(&taken), "2");
        read.spec.get_or_insert_default().holder_identity = Some("pg-3".into());
        let conflict = api_error(leases.replace("pg-primary", &PostParams::default(), &read).await);
        assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"), "{conflict:?}");
        assert_eq!(leases.get("pg-primary").await.expect("get").spec.and_then(|s| s.holder_identity).as_deref(), Some("pg-2"));

        let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"holderIdentity": "pg-3"}});
        let conflict = api_error(leases.patch("pg-primary", &PatchParams::default(), &Patch::Merge(&stale)).await);
        assert_eq!(conflict.code, 409);
        let fresh = json!({"metadata": {"resourceVersion": "2"}, "spec": {"holderIdentity": "pg-3"}});
        let moved = leases.patch("pg-primary", &PatchParams::default(), &Patch::Merge(&fresh)).await.expect("a fresh patch");
        assert_eq!((moved.spec.and_then(|s| s.holder_identity).as_deref(), rv(&taken) < moved.metadata.resource_version.clone().unwrap_or_default()), (Some("pg-3"), true));
        assert_eq!(api.writes().iter().map(|r| r.status).collect::<Vec<_>>(), [201, 409, 409, 200]);
    })
    .await;
}

#[tokio::test]
async fn faults_fail_the_next_matching_requests_and_change_nothing() {
    within_deadline(async {
        let api = FakeApi::new();
        api.insert(&pod("pg-1", "db", json!({})));
        let pods: Api<Pod> = Api::namespaced(api.client(), "db");
        api.fail_next(Method::PATCH, "pods", 2, 500);
        api.inject(Fault::new(Method::GET, "pods", 403).named("pg-1").message("pods \"pg-1\" is forbidden"));
        let patch = Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}}));

        for _ in 0..2 {
            let failed = api_error(pods.patch("pg-1", &PatchParams::default(), &patch).await);
            assert_eq!((failed.code, failed.reason.as_str()), (500, "InternalError"));
        }
        let forbidden = api_error(pods.get("pg-1").await);
        assert_eq!(
            (forbidden.code, forbidden.reason.as_str(), forbidden.message.as_str()),
            (403, "Forbidden", "pods \"pg-1\" is forbidden")
        );
        assert!(api.pending_faults().is_empty(), "{:?}", api.pending_faults());
        assert_eq!(api.resource_version(), 1, "a faulted request changes nothing");

        let labelled = pods.patch("pg-1", &PatchParams::default(), &patch).await.expect("the third patch passes");
        assert_eq!(labelled.metadata.labels.and_then(|l| l.get("a").cloned()).as_deref(), Some("b"));
        assert_eq!(api.requests().iter().map(|r| r.status).collect::<Vec<_>>(), [500, 500, 403, 200]);

        api.inject(Fault::new(Method::PATCH, "postgresclusters", 409).subresource("status"));
        api.insert(&cluster(1));
        let clusters: Api<PostgresCluster> = Api::namespaced(api.client(), "db");
        clusters
            .patch("pg", &PatchParams::default(), &Patch::Merge(json!({"spec": {"instances": 2}})))
            .await
            .expect("the main resource is not faulted");
        let conflict =
            api_error(clusters.patch_status("pg", &PatchParams::default(), &Patch::Merge(json!({"status": {}}))).await);
        assert_eq!(conflict.code, 409);
    })
    .await;
}

#[tokio::test]
async fn the_log_records_every_request_exactly_once() {
    within_deadline(async {
        let api = FakeApi::new();
        let maps: Api<ConfigMap> = Api::namespaced(api.client(), "db");
        let _ = maps.get_opt("pg-config").await.expect("get_opt");
        maps.create(&PostParams::default(), &config_map("pg-config", json!({"l": "1"}), json!({})))
            .await
            .expect("create");
        let _ = maps.list(&ListParams::default().labels("l=1")).await.expect("list");
        maps.delete("pg-config", &DeleteParams::default()).await.expect("delete");

        let log = api.requests();
        let lines: Vec<(Method, &str, Option<&str>)> =
            log.iter().map(|r| (r.method.clone(), r.path.as_str(), r.content_type.as_deref())).collect();
        let one = "/api/v1/namespaces/db/configmaps/pg-config";
        let all = "/api/v1/namespaces/db/configmaps";
        let json = Some("application/json");
        assert_eq!(
            lines,
            [
                (Method::GET, one, None),
                (Method::POST, all, json),
                (Method::GET, all, None),
                (Method::DELETE, one, json)
            ]
        );
        assert_eq!(log[1].body.as_ref().and_then(|b| b.pointer("/metadata/labels/l")), Some(&json!("1")));
        assert_eq!(log[2].query, [("labelSelector".to_owned(), "l=1".to_owned())]);
        assert_eq!(
            (log[3].name.as_deref(), log[3].namespace.as_deref(), log[3].plural.as_deref()),
            (Some("pg-config"), Some("db"), Some("configmaps"))
        );
        assert_eq!(api.writes().len(), 2);
        assert_eq!(api.writes_to("configmaps").len(), 2);
        assert!(api.writes_to("pods").is_empty());
        assert_eq!(api.requests_to("configmaps").len(), 4);

        api.clear_log();
        assert!(api.requests().is_empty());
        // The test's own writes are not requests.
        api.insert(&config_map("seeded", json!({}), json!({})));
        let version = api.resource_version();
        // `change` runs unlocked: it may read the fake.
        let modified =
            api.modify("v1", "configmaps", "db", "seeded", |m| m["data"] = json!({"v": api.resource_version()}));
        assert_eq!(
            modified.and_then(|m| m.pointer("/metadata/resourceVersion").cloned()),
            Some(json!((version + 1).to_string()))
        );
        api.remove("v1", "configmaps", "db", "seeded").expect("remove");
        assert!(api.requests().is_empty(), "{:#?}", api.requests());
    })
    .await;
}

#[tokio::test]
async fn deletes_answer_a_status_or_wait_for_finalizers() {
    within_deadline(async {
        let api = FakeApi::new();
        let maps: Api<ConfigMap> = Api::namespaced(api.client(), "db");
        api.insert(&config_map("plain", json!({}), json!({})));
        let gone = maps.delete("plain", &DeleteParams::default()).await.expect("delete");
        let status = gone.right().expect("a removed object answers a Status");
        assert_eq!(status.details.map(|d| d.name).as_deref(), Some("plain"));
        assert!(api.get("v1", "configmaps", "db", "plain").is_none());
        assert_eq!(api_error(maps.delete("plain", &DeleteParams::default()).await).code, 404);

        let mut kept = config_map("kept", json!({}), json!({}));
        kept.metadata.finalizers = Some(vec!["pgwarden.io/cleanup".into()]);
        api.insert(&kept);
        let terminating =
            maps.delete("kept", &DeleteParams::default()).await.expect("delete").left().expect("the object");
        assert_eq!(
            terminating.metadata.deletion_timestamp.map(|t| t.0.to_string()).as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert!(api.get("v1", "configmaps", "db", "kept").is_some());
        maps.patch("kept", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
            .await
            .expect("drop the finalizer");
        assert!(api.get("v1", "configmaps", "db", "kept").is_none(), "the last finalizer gone, the object goes");

        let precondition = DeleteParams {
            preconditions: Some(kube::api::Preconditions { resource_version: Some("0".into()), uid: None }),
            ..DeleteParams::default()
        };
        api.insert(&config_map("guarded", json!({}), json!({})));
        assert_eq!(api_error(maps.delete("guarded", &precondition).await).code, 409);

        api.insert(&pod("pg-1", "db", json!({"c": "pg"})));
        api.insert(&pod("pg-2", "db", json!({"c": "pg"})));
        let pods: Api<Pod> = Api::namespaced(api.client(), "db");
        let evicted = pods.evict("pg-1", &EvictParams::default()).await.expect("evict");
        assert_eq!(evicted.code, 201);
        let listed = pods
            .delete_collection(&DeleteParams::default(), &ListParams::default().labels("c=pg"))
            .await
            .expect("delete_collection");
        assert_eq!(listed.left().map(|l| l.items.len()), Some(1));
        assert!(api.list("pods").is_empty());
    })
    .await;
}

#[tokio::test]
async fn what_is_not_emulated_says_so() {
    within_deadline(async {
        let api = FakeApi::new();
        api.insert(&config_map("pg-config", json!({}), json!({})));
        let client = api.client();
        let json_patch = http::Request::patch("/api/v1/namespaces/db/configmaps/pg-config")
            .header(http::header::CONTENT_TYPE, "application/json-patch+json")
            .body(br#"[{"op": "add", "path": "/data", "value": {}}]"#.to_vec())
            .expect("a request");
        let unsupported = api_error(client.request::<Value>(json_patch).await);
        assert_eq!((unsupported.code, unsupported.reason.as_str()), (415, "UnsupportedMediaType"));
        assert!(unsupported.message.contains("not emulated"), "{}", unsupported.message);

        let watch =
            http::Request::get("/api/v1/namespaces/db/configmaps?watch=true").body(Vec::new()).expect("a request");
        assert_eq!(api_error(client.request::<Value>(watch).await).code, 405);

        let crons = http::Request::get("/apis/batch/v1/namespaces/db/cronjobs").body(Vec::new()).expect("a request");
        assert_eq!(api_error(client.request::<Value>(crons).await).code, 404);
        api.register(ResourceType {
            api_version: "batch/v1".into(),
            kind: "CronJob".into(),
            plural: "cronjobs".into(),
            namespaced: true,
            status_subresource: true,
        });
        let crons = http::Request::get("/apis/batch/v1/namespaces/db/cronjobs").body(Vec::new()).expect("a request");
        let list: Value = client.request(crons).await.expect("registered, it is served");
        assert_eq!(list["kind"], "CronJobList");

        let no_manager = api_error(
            Api::<ConfigMap>::namespaced(client, "db")
                .patch(
                    "pg-config",
                    &PatchParams::default(),
                    &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap"})),
                )
                .await,
        );
        assert_eq!(no_manager.code, 422);
    })
    .await;
}

#[tokio::test]
async fn generate_name_and_dry_run() {
    within_deadline(async {
        let api = FakeApi::new();
        let maps: Api<ConfigMap> = Api::namespaced(api.client(), "db");
        let mut generated = config_map("", json!({}), json!({}));
        generated.metadata.name = None;
        generated.metadata.generate_name = Some("pg-".into());
        let made = maps.create(&PostParams::default(), &generated).await.expect("create");
        assert_eq!(made.metadata.name.as_deref(), Some("pg-00001"));

        let dry = PostParams { dry_run: true, ..PostParams::default() };
        maps.create(&dry, &config_map("dry", json!({}), json!({}))).await.expect("a dry run");
        assert!(api.get("v1", "configmaps", "db", "dry").is_none());
        assert_eq!(api.resource_version(), 1);
        let writes = api.writes();
        assert_eq!((writes[1].param("dryRun"), writes[1].changed), (Some("All"), false), "{}", writes[1]);
    })
    .await;
}

#[tokio::test]
async fn cluster_scoped_objects_live_outside_namespaces() {
    within_deadline(async {
        let api = FakeApi::new();
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(api.client());
        let namespace =
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "db"}}))
                .expect("a Namespace");
        namespaces.create(&PostParams::default(), &namespace).await.expect("create");
        let got = namespaces.get("db").await.expect("get");
        assert_eq!((got.metadata.name.as_deref(), got.metadata.namespace), (Some("db"), None));
        assert_eq!(api.requests()[1].path, "/api/v1/namespaces/db");
        assert!(api.get("v1", "namespaces", "", "db").is_some());
    })
    .await;
}
