//! End to end against a real Kubernetes API server: runs when `KUBECONFIG` is set and skips with
//! a message otherwise (CI has no cluster; what ran where is in the issue notes).
//!
//! It installs the CRD, starts the operator binary on a namespace of its own, applies every
//! sample of `testdata/clusters/`, and checks every object and the status. The API server
//! itself refuses the bad specs (schema and CEL). Where pods can run (`PGWARDEN_E2E_PODS=1`:
//! a kubelet, the images loaded), it waits for `Ready=True`, deletes the primary's pod and sees
//! the failover in the status. The namespace is deleted at the end, whatever happened.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use pgwarden_operator::crd::PostgresCluster;
use serde::Deserialize;

const MANAGER: &str = "pgwarden-e2e";

fn enabled() -> bool {
    if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    eprintln!(
        "SKIP: KUBECONFIG is not set; the end-to-end suite needs a Kubernetes API server (see docs/operator.md, Testing)"
    );
    false
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The operator binary on `namespace`, killed when dropped.
struct Operator {
    _child: tokio::process::Child,
}

impl Operator {
    fn start(namespace: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_operator"))
            .args([
                "run",
                "--namespace",
                namespace,
                "--leader-namespace",
                namespace,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("POD_NAME", "e2e-operator")
            .kill_on_drop(true)
            .spawn()
            .expect("start the operator");
        Self { _child: child }
    }
}

/// Deletes the test namespace when dropped (the cluster's objects go with it), with a client
/// of its own on a runtime of its own: the test's client runs on the test's runtime, which is
/// blocked while this waits.
struct Cleanup {
    namespace: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ns = self.namespace.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async move {
                let delete = async {
                    let client = Client::try_default().await.ok()?;
                    Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await.ok()
                };
                let _ = tokio::time::timeout(Duration::from_secs(30), delete).await;
            });
        });
        let _ = handle.join();
    }
}

fn samples() -> Vec<(String, Vec<serde_json::Value>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/clusters");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("testdata/clusters").flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("a sample");
        let docs = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde_json::Value::deserialize(d).expect("YAML"))
            .filter(|v| !v.is_null())
            .collect();
        out.push((path.file_stem().expect("a name").to_string_lossy().into_owned(), docs));
    }
    out
}

async fn apply_doc(client: &Client, ns: &str, doc: &serde_json::Value) -> Result<(), kube::Error> {
    let api_version = doc["apiVersion"].as_str().expect("apiVersion");
    let kind = doc["kind"].as_str().expect("kind");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let name = doc["metadata"]["name"].as_str().expect("a name");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(doc)).await.map(|_| ())
}

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "postgresclusters.pgwarden.io",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(PostgresCluster::crd()),
    )
    .await
    .expect("install the CRD");
    wait_for("the CRD to be established", Duration::from_secs(60), || {
        let crds = crds.clone();
        async move {
            let crd = crds.get("postgresclusters.pgwarden.io").await.ok()?;
            crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        }
    })
    .await;
}

fn refusal(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.message),
        other => panic!("expected the API server to refuse, got {other}"),
    }
}

#[tokio::test]
async fn samples_become_objects_and_status_on_a_real_api_server() {
    if !enabled() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await.expect("a client from KUBECONFIG");
    install_crd(&client).await;
    let ns = format!("pgwarden-e2e-{}", std::process::id());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("a namespace"),
        )
        .await
        .expect("create the test namespace");
    let _cleanup = Cleanup { namespace: ns.clone() };
    let _operator = Operator::start(&ns);

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
    let status = ready("sync").await;
    let primary = status.current_primary.expect("a primary");
    Api::<Pod>::namespaced(client.clone(), &ns)
        .delete(&primary, &DeleteParams::default())
        .await
        .expect("delete the primary's pod");
    let after = wait_for("a new primary in the status", Duration::from_secs(300), || {
        let pgc = pgc.clone();
        let primary = primary.clone();
        async move {
            let s = pgc.get("sync").await.ok()?.status?;
            s.current_primary.filter(|p| *p != primary)
        }
    })
    .await;
    eprintln!("failover seen in the status: {primary} -> {after}");
    ready("sync").await;
}
