//! Tests of the fake API server: its semantics and its faults, over real HTTP.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

use super::*;
use crate::lease::{KubernetesLeaseStore, LeaseError, LeaseRecord, LeaseStore};
use crate::testkit::Verb;

fn server() -> (FakeApiServer, kube::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeApiServer::start(loopback(), "db").unwrap();
    let client = fake.client().unwrap();
    (fake, client)
}

fn record(holder: &str, term: u64) -> LeaseRecord {
    LeaseRecord {
        holder: Some(holder.into()),
        lease_duration_seconds: 4,
        acquire_time: None,
        renew_time: Some(jiff::Timestamp::now()),
        transitions: term,
        sync_standbys: vec![],
        switchover_to: None,
        cluster: None,
        system_identifier: None,
    }
}

#[tokio::test]
async fn lease_writes_are_compare_and_swap() {
    let (fake, client) = server();
    let store = KubernetesLeaseStore::new(client, "db", "c-primary");
    assert_eq!(store.get().await, Ok(None));
    let v1 = store.create(&record("a", 1)).await.unwrap();
    assert_eq!(store.create(&record("b", 1)).await, Err(LeaseError::Conflict), "409 AlreadyExists");
    let v2 = store.replace(&record("a", 1), &v1).await.unwrap();
    assert_ne!(v1, v2, "every write has a new resourceVersion");
    assert_eq!(store.replace(&record("b", 2), &v1).await, Err(LeaseError::Conflict), "stale version");
    let (got, version) = store.get().await.unwrap().unwrap();
    assert_eq!((got.holder.as_deref(), got.transitions, version), (Some("a"), 1, v2.clone()));
    assert_eq!(fake.lease("c-primary").and_then(|l| l.spec).and_then(|s| s.holder_identity).as_deref(), Some("a"));
    let gone = KubernetesLeaseStore::new(fake.client().unwrap(), "db", "other");
    assert_eq!(gone.replace(&record("a", 1), &v2).await, Err(LeaseError::Conflict), "404 on a missing lease");
}

#[tokio::test]
async fn endpoint_slices_and_pods_answer_like_the_api_server() {
    let (fake, client) = server();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "db");
    let mut slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "c-rw"}, "addressType": "IPv4", "endpoints": []
    }))
    .unwrap();
    let pp = PostParams::default();
    let err = slices.replace("c-rw", &pp, &slice).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "{err:?}");
    let created = slices.create(&pp, &slice).await.unwrap();
    slice.metadata.resource_version = created.metadata.resource_version.clone();
    slices.replace("c-rw", &pp, &slice).await.unwrap();
    let err = slices.replace("c-rw", &pp, &slice).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"), "{err:?}");

    let pods: Api<Pod> = Api::namespaced(client, "db");
    let label = |role: &str| Patch::Merge(json!({"metadata": {"labels": {"pgwarden.io/role": role}}}));
    let err = pods.patch("pg-1", &PatchParams::default(), &label("primary")).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "no pod is created by a patch: {err:?}");
    fake.add_pod("pg-1");
    pods.patch("pg-1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})))
        .await
        .unwrap();
    pods.patch("pg-1", &PatchParams::default(), &label("primary")).await.unwrap();
    let labels = fake.pod("pg-1").and_then(|p| p.metadata.labels).unwrap();
    assert_eq!(labels.get("app").map(String::as_str), Some("x"), "a merge patch keeps other labels");
    assert_eq!(labels.get("pgwarden.io/role").map(String::as_str), Some("primary"));
}

/// A request over a fresh connection (`Connection: close`); the status and the body, or the
/// I/O error (a reset connection).
async fn raw(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: fake\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    let code = answer.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("no status line in {answer:?}"))
    })?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/db/leases/c-primary";

#[tokio::test]
async fn a_stall_holds_requests_until_it_ends_and_a_write_given_up_on_still_lands() {
    let (fake, client) = server();
    let store = KubernetesLeaseStore::new(client, "db", "c-primary");
    let v1 = store.create(&record("a", 1)).await.unwrap();
    fake.set_fault(Fault::stall(), Verbs::All, Some(Duration::from_millis(1500)));
    let started = std::time::Instant::now();
    let gave_up = crate::lease::with_deadline(store.replace(&record("a", 2), &v1), Duration::from_millis(300)).await;
    assert_eq!(gave_up, Err(LeaseError::Timeout(Duration::from_millis(300))), "answered during the stall");
    // The held write is served when the stall ends, although its client is gone.
    store.get().await.unwrap().unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400), "a read answered {waited:?} into a 1.5 s stall");
    // Both held requests are released when the stall ends, in no particular order.
    let got =
        crate::testkit::wait_for("the write abandoned during the stall lands", Duration::from_secs(5), || async {
            match store.get().await {
                Ok(Some((r, _))) if r.transitions == 2 => Ok(r),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert_eq!(got.transitions, 2);
    assert_eq!(fake.history("leases", "c-primary").len(), 2);
}

#[tokio::test]
async fn a_slow_fault_answers_each_request_late_and_clearing_it_ends_it() {
    let (fake, client) = server();
    let store = KubernetesLeaseStore::new(client, "db", "c-primary");
    let id = fake.set_fault(Fault::slow(Duration::from_millis(400)), Verbs::Only(vec![Verb::Get]), None);
    let started = std::time::Instant::now();
    store.create(&record("a", 1)).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(300), "a POST was slowed by a GET-only fault");
    let started = std::time::Instant::now();
    assert!(store.get().await.unwrap().is_some());
    assert!(started.elapsed() >= Duration::from_millis(400), "a GET answered in {:?}", started.elapsed());
    fake.clear_fault(id);
    let started = std::time::Instant::now();
    assert!(store.get().await.unwrap().is_some());
    assert!(started.elapsed() < Duration::from_millis(300), "still slow after the fault was cleared");
}

#[tokio::test]
async fn server_errors_answer_with_a_status_body_per_verb_and_resource() {
    let (fake, client) = server();
    let store = KubernetesLeaseStore::new(client.clone(), "db", "c-primary");
    let v1 = store.create(&record("a", 1)).await.unwrap();
    fake.set_fault_on("leases", Fault::etcd_timeout(), Verbs::Only(vec![Verb::Put]), None);
    let err = store.replace(&record("a", 1), &v1).await.unwrap_err();
    assert!(
        matches!(&err, LeaseError::Unavailable { message } if message.contains("HTTP 500: etcdserver: request timed out")),
        "{err:?}"
    );
    assert!(store.get().await.unwrap().is_some(), "a GET failed under a PUT-only fault");
    let slices: Api<EndpointSlice> = Api::namespaced(client, "db");
    let slice: EndpointSlice =
        serde_json::from_value(json!({"metadata": {"name": "c-rw"}, "addressType": "IPv4", "endpoints": []})).unwrap();
    slices.create(&PostParams::default(), &slice).await.unwrap();
    let mut slice = slices.get("c-rw").await.unwrap();
    slice.metadata.annotations = Some([("k".to_string(), "v".to_string())].into());
    slices.replace("c-rw", &PostParams::default(), &slice).await.expect("a PUT of another resource is not faulted");

    fake.clear_faults();
    for (fault, code, reason) in
        [(Fault::unavailable(), 503, "ServiceUnavailable"), (Fault::gateway_timeout(), 504, "Timeout")]
    {
        fake.set_fault(fault, Verbs::All, None);
        let err = slices.get("c-rw").await.unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == code && s.reason == reason), "{err:?}");
        let err = store.get().await.unwrap_err();
        assert!(
            matches!(&err, LeaseError::Unavailable { message } if message.contains(&format!("HTTP {code}"))),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn a_reset_closes_the_connection_without_an_answer() {
    let (fake, client) = server();
    let store = KubernetesLeaseStore::new(client, "db", "c-primary");
    store.create(&record("a", 1)).await.unwrap();
    fake.set_fault(Fault::Reset, Verbs::All, None);
    let err = store.get().await.unwrap_err();
    assert!(matches!(&err, LeaseError::Unavailable { .. }), "{err:?}");
    let raw_answer = raw(fake.addr(), "GET", LEASE_PATH, "").await;
    assert!(raw_answer.is_err(), "a reset connection answered: {raw_answer:?}");
    fake.clear_faults();
    assert!(store.get().await.unwrap().is_some(), "not served again after the fault was cleared");
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let (fake, client) = server();
    let store = KubernetesLeaseStore::new(client, "db", "c-primary");
    fake.set_fault(Fault::TooManyRequests { retry_after_seconds: 3 }, Verbs::All, None);
    assert_eq!(store.get().await, Err(LeaseError::RateLimited { retry_after: Some(Duration::from_secs(3)) }));
}

#[tokio::test]
async fn the_control_endpoint_lays_and_clears_faults_and_is_never_faulted() {
    let (fake, client) = server();
    let store = KubernetesLeaseStore::new(client, "db", "c-primary");
    store.create(&record("a", 1)).await.unwrap();
    let lay =
        r#"{"fault": {"kind": "status", "code": 504, "reason": "Timeout", "message": "slow etcd"}, "seconds": 60}"#;
    let (code, body) = raw(fake.addr(), "POST", "/testkit/faults", lay).await.unwrap();
    assert_eq!(code, 201, "{body}");
    let (code, body) = raw(fake.addr(), "GET", LEASE_PATH, "").await.unwrap();
    assert!(code == 504 && body.contains("slow etcd"), "{code} {body}");
    let reset = r#"{"fault": {"kind": "reset"}, "resource": "leases"}"#;
    assert_eq!(raw(fake.addr(), "POST", "/testkit/faults", reset).await.unwrap().0, 201, "faulted itself");
    assert!(raw(fake.addr(), "GET", LEASE_PATH, "").await.is_err());
    assert_eq!(raw(fake.addr(), "DELETE", "/testkit/faults", "").await.unwrap().0, 200);
    assert_eq!(raw(fake.addr(), "GET", LEASE_PATH, "").await.unwrap().0, 200);
    let (code, body) = raw(fake.addr(), "POST", "/testkit/faults", r#"{"fault": {"kind": "melt"}}"#).await.unwrap();
    assert!(code == 400 && body.contains("melt"), "{code} {body}");
}

#[tokio::test]
async fn a_deleted_object_is_gone_and_its_history_says_so() {
    let (fake, client) = server();
    let store = KubernetesLeaseStore::new(client.clone(), "db", "c-primary");
    store.create(&record("a", 1)).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client, "db");
    leases.delete("c-primary", &Default::default()).await.unwrap();
    assert_eq!(store.get().await, Ok(None));
    assert!(!fake.delete("leases", "c-primary"), "deleted twice");
    store.create(&record("b", 2)).await.unwrap();
    assert!(fake.delete("leases", "c-primary"));
    let history = fake.history("leases", "c-primary");
    let holders: Vec<Option<&str>> = history.iter().map(|v| v["spec"]["holderIdentity"].as_str()).collect();
    assert_eq!(holders, [Some("a"), None, Some("b"), None]);
    assert!(history[1].is_null() && history[3].is_null());
}
