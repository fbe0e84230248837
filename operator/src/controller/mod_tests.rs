//! The whole runtime against a fake API server (`tower_test`): the election decides who runs
//! the controller, shutdown drains and releases the lease, a lost lease is an exit with code 3.
//! The fake keeps one Lease (compare-and-swap on its version), answers every list with no
//! items and holds every watch open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::http::{Method, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_test::mock::{self, SendResponse};

use super::*;
use crate::controller::leader::Timings;

type Handle = mock::Handle<::http::Request<Body>, Response<Body>>;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/pgwarden-operator";

#[derive(Default)]
struct FakeState {
    lease: Option<Value>,
    version: u64,
    /// Answer every lease `PUT` with 409 (another replica wrote it).
    conflict_on_put: bool,
    /// Every request: method and path.
    requests: Vec<(Method, String)>,
    /// The `PUT`s of the Lease that cleared the holder.
    releases: usize,
    /// Watches are answered never: their replies are kept here.
    watches: Vec<SendResponse<Response<Body>>>,
}

type Fake = Arc<Mutex<FakeState>>;

fn respond(reply: SendResponse<Response<Body>>, status: u16, body: &Value) {
    let body = Body::from(serde_json::to_vec(body).unwrap());
    reply.send_response(Response::builder().status(status).body(body).unwrap());
}

fn status(code: u16) -> Value {
    let reason = if code == 404 { "NotFound" } else { "Conflict" };
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": reason, "code": code})
}

/// Answers requests until the client is dropped.
async fn fake_api(mut handle: Handle, fake: Fake) {
    while let Some((request, reply)) = handle.next_request().await {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let watch = request.uri().query().is_some_and(|q| q.contains("watch=true"));
        let body = request.into_body().collect_bytes().await.unwrap();
        let mut state = fake.lock().unwrap();
        state.requests.push((method.clone(), path.clone()));
        match (method, path.as_str()) {
            (Method::GET, LEASE) => match state.lease.clone() {
                Some(lease) => respond(reply, 200, &lease),
                None => respond(reply, 404, &status(404)),
            },
            (Method::POST, LEASES) if state.lease.is_some() => respond(reply, 409, &status(409)),
            (Method::POST | Method::PUT, LEASES | LEASE) => {
                let mut lease: Value = serde_json::from_slice(&body).unwrap();
                let current = state.lease.as_ref().map(|l| l["metadata"]["resourceVersion"].clone());
                if (state.conflict_on_put && path == LEASE)
                    || current.is_some_and(|v| v != lease["metadata"]["resourceVersion"])
                {
                    respond(reply, 409, &status(409));
                    continue;
                }
                if lease["spec"].get("holderIdentity").is_none() {
                    state.releases += 1;
                }
                state.version += 1;
                lease["metadata"]["resourceVersion"] = json!(state.version.to_string());
                state.lease = Some(lease.clone());
                respond(reply, if path == LEASES { 201 } else { 200 }, &lease);
            }
            (Method::GET, _) if watch => state.watches.push(reply),
            (Method::GET, _) => respond(
                reply,
                200,
                &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
            ),
            (method, path) => panic!("unexpected {method} {path}"),
        }
    }
}

struct Running {
    fake: Fake,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Exit>,
}

async fn start(lease: Option<Value>) -> Running {
    let (service, handle) = mock::pair::<::http::Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let fake = Arc::new(Mutex::new(FakeState { lease, version: 100, ..FakeState::default() }));
    tokio::spawn(fake_api(handle, fake.clone()));
    let timings = Timings {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(50),
    };
    let lease =
        LeaseSettings { name: "pgwarden-operator".into(), namespace: "ops".into(), identity: "me".into(), timings };
    let settings = Settings { namespace: Some("db".into()), lease };
    let operator = Operator::bind("127.0.0.1:0".parse().unwrap(), settings).await.unwrap();
    let addr = operator.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(operator.run(client, shutdown.clone()));
    Running { fake, addr, shutdown, task }
}

/// `GET path` over HTTP: status and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

/// Polls `path` until its body contains `want`; panics with the last answer after 5 s.
async fn wait_for_body(addr: std::net::SocketAddr, path: &str, want: &str) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get(addr, path).await;
        if body.contains(want) {
            return (status, body);
        }
        assert!(tokio::time::Instant::now() < deadline, "{path} never said {want:?}; last: {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn exit(task: tokio::task::JoinHandle<Exit>) -> Exit {
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("the operator did not stop within 10 s").unwrap()
}

fn held_by_another() -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "pgwarden-operator", "namespace": "ops", "resourceVersion": "5"},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 3600, "leaseTransitions": 1},
    })
}

#[tokio::test]
async fn a_leader_reconciles_until_shutdown_then_releases_the_lease() {
    let r = start(None).await;
    let (status, body) = wait_for_body(r.addr, "/readyz", "ready: leader").await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = get(r.addr, "/metrics").await;
    assert!(metrics.lines().any(|l| l == "pgwarden_operator_leader 1"), "{metrics}");
    {
        let state = r.fake.lock().unwrap();
        let watched: Vec<&str> =
            state.requests.iter().map(|(_, p)| p.as_str()).filter(|p| !p.contains("/leases")).collect();
        for path in [
            "/apis/pgwarden.io/v1alpha1/namespaces/db/postgresclusters",
            "/apis/pgwarden.io/v1alpha1/namespaces/db/postgresbackups",
            "/api/v1/namespaces/db/secrets",
        ] {
            assert!(watched.contains(&path), "{path} not watched: {watched:?}");
        }
        // Nodes are cluster-scoped: a cordoned node under a primary matters in any namespace.
        assert!(
            watched.iter().all(|p| p.contains("/namespaces/db/") || *p == "/api/v1/nodes"),
            "only --namespace is watched, and the Nodes: {watched:?}"
        );
        assert!(watched.contains(&"/api/v1/nodes"), "the Nodes are watched (drains): {watched:?}");
    }
    r.shutdown.cancel();
    assert_eq!(exit(r.task).await, Exit::Stopped);
    let state = r.fake.lock().unwrap();
    assert_eq!(state.releases, 1, "the lease is released on shutdown: {:?}", state.requests);
    assert_eq!(state.lease.as_ref().unwrap()["spec"].get("holderIdentity"), None);
}

#[tokio::test]
async fn a_standby_watches_nothing_and_stops_without_writing() {
    let r = start(Some(held_by_another())).await;
    let (status, body) = wait_for_body(r.addr, "/readyz", "standby").await;
    assert_eq!((status, body.as_str()), (200, "ready: standby, waiting for the leader lease (held by other)\n"));
    let (status, _) = get(r.addr, "/healthz").await;
    assert_eq!(status, 200);
    let (_, metrics) = get(r.addr, "/metrics").await;
    assert!(metrics.lines().any(|l| l == "pgwarden_operator_leader 0"), "{metrics}");
    r.shutdown.cancel();
    assert_eq!(exit(r.task).await, Exit::Stopped);
    let state = r.fake.lock().unwrap();
    assert!(
        state.requests.iter().all(|(m, p)| *m == Method::GET && p == LEASE),
        "a standby only reads the lease: {:?}",
        state.requests
    );
}

#[tokio::test]
async fn a_lost_lease_stops_reconciling_and_exits_with_code_3() {
    let r = start(None).await;
    wait_for_body(r.addr, "/readyz", "ready: leader").await;
    r.fake.lock().unwrap().conflict_on_put = true;
    let exit = exit(r.task).await;
    assert!(matches!(&exit, Exit::LostLeadership(why) if why.contains("409")), "{exit:?}");
    assert_eq!(exit.code(), 3);
    assert_eq!(r.fake.lock().unwrap().releases, 0, "a lost lease is not written");
}
