//! What the suites that run real pods share: cluster documents (with the S3 test store), status
//! waits, connections through the `-rw` Service, and the instance manager's process when the
//! kubelet runs on this machine.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::Client;
use kube::api::Api;
use pgwarden_operator::crd::{PostgresCluster, PostgresClusterStatus};
use serde_json::json;

use super::{apply_doc, enabled, wait_for};

/// Whether the suite can run pods: `KUBECONFIG` and `PGWARDEN_E2E_PODS=1`; says why not
/// (`needs`: what the suite needs pods for).
pub fn pods_enabled(needs: &str) -> bool {
    if !enabled() {
        return false;
    }
    if std::env::var_os("PGWARDEN_E2E_PODS").is_none() {
        eprintln!("SKIP: set PGWARDEN_E2E_PODS=1 where a kubelet runs the images ({needs} need pods)");
        return false;
    }
    true
}

/// The Secret `e2e-s3` with the S3 test server's keys, as [`store_of`] names them.
pub async fn apply_s3_credentials(client: &Client, ns: &str) {
    let creds = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "e2e-s3"},
        "stringData": {"ACCESS_KEY_ID": ACCESS_KEY, "SECRET_ACCESS_KEY": SECRET_KEY}});
    apply_doc(client, ns, &creds).await.expect("the store's credentials");
}

pub const BUCKET: &str = "pgwarden-test";
pub const ACCESS_KEY: &str = "pgwarden-test-access-key";
pub const SECRET_KEY: &str = "pgwarden-test-secret-key";

/// `store`: the S3 endpoint and the prefix of this run (a store belongs to one cluster: the
/// instances refuse to archive into another cluster's, so every run has its own).
pub fn cluster_doc(
    name: &str,
    instances: i32,
    store: Option<(&str, &str)>,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut spec = json!({"instances": instances, "storage": {"size": "1Gi"},
        "ha": {"leaseDurationSeconds": 5, "renewDeadlineSeconds": 3, "retryPeriodSeconds": 1, "fenceBudgetSeconds": 1}});
    if let Some((endpoint, prefix)) = store {
        spec["backup"] = json!({"store": store_of(endpoint, prefix), "compression": "zstd"});
    }
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresCluster", "metadata": {"name": name}, "spec": spec})
}

pub fn store_of(endpoint: &str, prefix: &str) -> serde_json::Value {
    let key = |k: &str| json!({"name": "e2e-s3", "key": k});
    json!({"destination": format!("s3://{BUCKET}/{prefix}"),
        "s3": {"endpoint": endpoint, "accessKeyId": key("ACCESS_KEY_ID"), "secretAccessKey": key("SECRET_ACCESS_KEY")}})
}

pub async fn status_when(
    pgc: &Api<PostgresCluster>,
    name: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&PostgresClusterStatus) -> bool,
) -> PostgresClusterStatus {
    wait_for(&format!("{name}: {what}"), timeout, || async {
        let s = pgc.get(name).await.ok()?.status?;
        f(&s).then_some(s)
    })
    .await
}

pub fn healthy(n: i32) -> impl Fn(&PostgresClusterStatus) -> bool {
    move |s| {
        s.instances == n
            && s.ready_instances == n
            && s.phase.as_deref() == Some("Cluster in healthy state")
            && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    }
}

pub async fn secret_value(client: &Client, ns: &str, name: &str, key: &str) -> String {
    let s = Api::<Secret>::namespaced(client.clone(), ns).get(name).await.expect("the secret");
    let bytes = s.data.and_then(|d| d.get(key).cloned()).expect("the key").0;
    String::from_utf8(bytes).expect("UTF-8")
}

/// A connection to `cluster-rw` as `user`.
pub async fn connect(client: &Client, ns: &str, cluster: &str, user: &str) -> Option<tokio_postgres::Client> {
    let secret = if user == "postgres" { format!("{cluster}-superuser") } else { format!("{cluster}-app") };
    let password = secret_value(client, ns, &secret, "password").await;
    let ip =
        Api::<Service>::namespaced(client.clone(), ns).get(&format!("{cluster}-rw")).await.ok()?.spec?.cluster_ip?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&ip).port(5432).user(user).password(password).dbname("app").connect_timeout(Duration::from_secs(2));
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(conn);
    Some(c)
}

pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The host PID of `pod`'s instance manager, when its container runs on this machine.
pub fn manager_pid_on_this_node(ns: &str, pod: &str) -> Option<u32> {
    let want = [format!("POD_NAME={pod}"), format!("POD_NAMESPACE={ns}")];
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let vars: Vec<String> = environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if want.iter().all(|w| vars.contains(w)) && String::from_utf8_lossy(&cmdline).contains("instance-manager") {
            return Some(pid);
        }
    }
    None
}
