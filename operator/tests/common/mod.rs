//! What the end-to-end suites share: the skip without `KUBECONFIG`, bounded waits, the operator
//! binary as a child, a namespace deleted at the end, server-side apply of YAML documents, the
//! CRDs.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub mod pods;

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use pgwarden_operator::crd::{PostgresBackup, PostgresCluster};
use serde::Deserialize;

pub const MANAGER: &str = "pgwarden-e2e";

pub fn enabled() -> bool {
    if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    eprintln!(
        "SKIP: KUBECONFIG is not set; the end-to-end suite needs a Kubernetes API server (see docs/operator.md, Testing)"
    );
    false
}

pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
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
pub struct Operator {
    _child: tokio::process::Child,
}

impl Operator {
    pub fn start(namespace: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{namespace}-operator.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("the operator's log file");
        eprintln!("the operator logs to {}", path.display());
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
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the operator");
        Self { _child: child }
    }
}

/// Deletes the test namespace when dropped (the cluster's objects go with it), with a client
/// of its own on a runtime of its own: the test's client runs on the test's runtime, which is
/// blocked while this waits.
pub struct Cleanup {
    pub namespace: String,
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

pub async fn apply_doc(client: &Client, ns: &str, doc: &serde_json::Value) -> Result<(), kube::Error> {
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

pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [PostgresCluster::crd(), PostgresBackup::crd()] {
        let name = crd.metadata.name.clone().expect("a CRD name");
        crds.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(crd)).await.expect("install the CRD");
        wait_for(&format!("the CRD {name} to be established"), Duration::from_secs(60), || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await.ok()?;
                crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
            }
        })
        .await;
    }
}

/// The documents of `testdata/<path>`.
pub fn documents(path: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(path))
        .unwrap_or_else(|e| panic!("testdata/{path}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn refusal(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.message),
        other => panic!("expected the API server to refuse, got {other}"),
    }
}

/// A namespace of its own for a test (deleted when the returned guard drops), with the CRDs
/// installed and a client.
pub async fn namespace(prefix: &str) -> (Client, String, Cleanup) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await.expect("a client from KUBECONFIG");
    install_crds(&client).await;
    let ns = format!("{prefix}-{}", std::process::id());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("a namespace"),
        )
        .await
        .expect("create the test namespace");
    (client, ns.clone(), Cleanup { namespace: ns })
}
