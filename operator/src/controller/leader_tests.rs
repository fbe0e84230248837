//! The election shell against a scripted API server (`tower_test`): each test answers the
//! elector's requests itself and checks what it sends, and when.

use std::time::Duration;

use http::{Method, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, SendResponse};

use super::*;

type Handle = mock::Handle<http::Request<Body>, Response<Body>>;
type Reply = SendResponse<Response<Body>>;

const ME: &str = "operator-a";
const OTHER: &str = "operator-b";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/pgwarden-operator";

/// Fast timings: a renew deadline of 1 s (calls time out after 500 ms), a tick every 50 ms.
fn timings() -> Timings {
    Timings {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(50),
    }
}

struct Harness {
    handle: Handle,
    status: watch::Receiver<Snapshot>,
    stop: CancellationToken,
    task: JoinHandle<End>,
}

fn start() -> Harness {
    let (service, handle) = mock::pair::<http::Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let settings = LeaseSettings {
        name: DEFAULT_LEASE_NAME.into(),
        namespace: "ops".into(),
        identity: ME.into(),
        timings: timings(),
    };
    let (elector, status) = Elector::new(client, settings);
    let stop = CancellationToken::new();
    let task = tokio::spawn(elector.run(stop.clone()));
    Harness { handle, status, stop, task }
}

/// The next request: method, path, JSON body (`Null` if empty), and its reply.
async fn next(handle: &mut Handle) -> (Method, String, Value, Reply) {
    let request = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the elector sent no request within 5 s")
        .expect("the elector is gone");
    let (request, reply) = request;
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect_bytes().await.unwrap();
    let json = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
    (method, path, json, reply)
}

fn answer(reply: Reply, status: u16, body: &Value) {
    let body = Body::from(serde_json::to_vec(body).unwrap());
    reply.send_response(Response::builder().status(status).body(body).unwrap());
}

fn failure(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": reason, "code": code})
}

fn lease(version: &str, holder: &str, duration_seconds: i32, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "pgwarden-operator", "namespace": "ops", "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration_seconds, "leaseTransitions": transitions,
                 "renewTime": "2026-01-02T03:04:05.000000Z"},
    })
}

/// Answers the next request, which must be a GET of the Lease, with `body` (404 if `None`).
async fn answer_get(handle: &mut Handle, body: Option<&Value>) {
    let (method, path, _, reply) = next(handle).await;
    assert_eq!((method, path.as_str()), (Method::GET, LEASE));
    match body {
        Some(body) => answer(reply, 200, body),
        None => answer(reply, 404, &failure(404, "NotFound")),
    }
}

/// Echoes a written Lease back with a new version.
fn stored(body: &Value, version: &str) -> Value {
    let mut stored = body.clone();
    stored["metadata"]["resourceVersion"] = json!(version);
    stored
}

async fn wait_for(status: &mut watch::Receiver<Snapshot>, what: &str, f: impl Fn(&Election) -> bool) -> Snapshot {
    let waited = tokio::time::timeout(Duration::from_secs(5), status.wait_for(|s| f(&s.election)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match waited {
        Ok(Ok(s)) => s,
        _ => panic!("never {what}; last state {:?}", status.borrow().clone()),
    }
}

/// From an absent Lease to leading: GET 404, POST, answered with version 1.
async fn lead(e: &mut Harness) -> Value {
    answer_get(&mut e.handle, None).await;
    let (method, path, body, reply) = next(&mut e.handle).await;
    assert_eq!((method, path.as_str()), (Method::POST, LEASES), "an absent lease is created");
    let created = stored(&body, "1");
    answer(reply, 201, &created);
    wait_for(&mut e.status, "led", |s| *s == Election::Leader).await;
    created
}

async fn ended(task: JoinHandle<End>) -> End {
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the elector did not end within 5 s").unwrap()
}

#[tokio::test]
async fn an_absent_lease_is_created_naming_us_then_renewed() {
    let mut e = start();
    let created = lead(&mut e).await;
    assert_eq!(created["spec"]["holderIdentity"], ME);
    assert_eq!(created["spec"]["leaseDurationSeconds"], 2);
    assert_eq!(created["spec"]["leaseTransitions"], 0);
    assert!(created["metadata"].get("resourceVersion").is_some() && created["spec"]["renewTime"].is_string());

    // The next tick reads, then renews with a compare-and-swap on the version read.
    answer_get(&mut e.handle, Some(&created)).await;
    let (method, path, body, reply) = next(&mut e.handle).await;
    assert_eq!((method, path.as_str()), (Method::PUT, LEASE));
    assert_eq!(body["metadata"]["resourceVersion"], "1");
    assert_eq!(body["spec"]["holderIdentity"], ME);
    answer(reply, 200, &stored(&body, "2"));
    assert_eq!(e.status.borrow().election, Election::Leader);
    e.task.abort();
}

#[tokio::test]
async fn a_live_lease_of_another_is_waited_for_then_taken_over_once_expired() {
    let mut e = start();
    let held = lease("7", OTHER, 1, 3);
    answer_get(&mut e.handle, Some(&held)).await;
    let first_answer = Instant::now();
    wait_for(&mut e.status, "a standby", |s| *s == Election::Candidate { holder: Some(OTHER.into()) }).await;
    // Bounded: the takeover is due after 1 s, 50 ms apart.
    let mut reads = 1;
    let body = loop {
        let (method, _, body, reply) = next(&mut e.handle).await;
        if method == Method::GET {
            assert!(reads < 200, "no takeover after {reads} reads");
            reads += 1;
            answer(reply, 200, &held);
            continue;
        }
        assert_eq!(method, Method::PUT);
        let waited = first_answer.elapsed();
        assert!(waited >= Duration::from_secs(1), "took the lease over after {waited:?}, before it expired");
        answer(reply, 200, &stored(&body, "8"));
        break body;
    };
    assert!(reads >= 5, "waited with only {reads} reads");
    assert_eq!(body["metadata"]["resourceVersion"], "7", "compare-and-swap on the version read");
    assert_eq!(body["spec"]["holderIdentity"], ME);
    assert_eq!(body["spec"]["leaseTransitions"], 4);
    wait_for(&mut e.status, "led", |s| *s == Election::Leader).await;
    e.task.abort();
}

#[tokio::test]
async fn a_renewal_by_the_holder_restarts_the_expiry_clock() {
    let mut e = start();
    let old = lease("7", OTHER, 1, 3);
    answer_get(&mut e.handle, Some(&old)).await;
    let until = Instant::now() + Duration::from_millis(600);
    // Version 7 for 600 ms, then the holder renews: version 8.
    let mut renewed_at = None;
    for _ in 0..400 {
        let (method, _, _, reply) = next(&mut e.handle).await;
        if method != Method::GET {
            let since = renewed_at.map(|t: Instant| t.elapsed());
            assert!(since.is_some_and(|s| s >= Duration::from_secs(1)), "took over {since:?} after the renewal");
            answer(reply, 409, &failure(409, "Conflict"));
            e.task.abort();
            return;
        }
        if Instant::now() < until {
            answer(reply, 200, &old);
        } else {
            answer(reply, 200, &lease("8", OTHER, 1, 3));
            renewed_at.get_or_insert_with(Instant::now);
        }
    }
    panic!("never tried to take the lease over");
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let mut e = start();
    answer_get(&mut e.handle, Some(&lease("5", "", 15, 2))).await;
    let (method, _, body, reply) = next(&mut e.handle).await;
    assert_eq!(method, Method::PUT, "no waiting for a lease nobody holds");
    assert_eq!((&body["spec"]["holderIdentity"], &body["spec"]["leaseTransitions"]), (&json!(ME), &json!(3)));
    answer(reply, 200, &stored(&body, "6"));
    wait_for(&mut e.status, "led", |s| *s == Election::Leader).await;
    e.task.abort();
}

#[tokio::test]
async fn a_conflict_on_renewal_is_the_end_of_leadership() {
    let mut e = start();
    let created = lead(&mut e).await;
    answer_get(&mut e.handle, Some(&created)).await;
    let (method, _, _, reply) = next(&mut e.handle).await;
    assert_eq!(method, Method::PUT);
    answer(reply, 409, &failure(409, "Conflict"));
    assert_eq!(ended(e.task).await, End::Lost(Loss::Conflict));
    assert_eq!(e.status.borrow().election, Election::Ended(End::Lost(Loss::Conflict)));
}

#[tokio::test]
async fn a_conflict_on_takeover_leaves_a_candidate() {
    let mut e = start();
    answer_get(&mut e.handle, Some(&lease("5", "", 15, 2))).await;
    let (method, _, _, reply) = next(&mut e.handle).await;
    assert_eq!(method, Method::PUT);
    answer(reply, 409, &failure(409, "Conflict"));
    // Another replica won: the next tick reads it and waits.
    answer_get(&mut e.handle, Some(&lease("6", OTHER, 15, 3))).await;
    wait_for(&mut e.status, "a standby", |s| *s == Election::Candidate { holder: Some(OTHER.into()) }).await;
    e.stop.cancel();
    // A tick may be under way: answer its read until the elector ends.
    let stopped = async {
        while let Some((request, reply)) = e.handle.next_request().await {
            assert_eq!(request.method(), Method::GET, "a stopped candidate writes nothing");
            answer(reply, 200, &lease("6", OTHER, 15, 3));
        }
    };
    tokio::time::timeout(Duration::from_secs(5), stopped).await.expect("the elector did not stop");
    assert_eq!(ended(e.task).await, End::Stopped);
}

#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down_at_its_renew_deadline() {
    let mut e = start();
    let before = Instant::now();
    lead(&mut e).await;
    let led_at = Instant::now();
    // Every read fails from now on.
    let failing = async {
        while let Some((_, reply)) = e.handle.next_request().await {
            answer(reply, 500, &failure(500, "InternalError"));
        }
    };
    let ((), end) = tokio::join!(failing, ended(e.task));
    let ended_at = Instant::now();
    assert_eq!(end, End::Lost(Loss::RenewDeadline(Duration::from_secs(1))));
    assert!(ended_at - before >= Duration::from_secs(1), "stepped down after {:?}", ended_at - before);
    assert!(ended_at - led_at < Duration::from_millis(1_500), "stepped down late: {:?}", ended_at - led_at);
}

#[tokio::test]
async fn a_leader_releases_the_lease_on_shutdown() {
    let mut e = start();
    let created = lead(&mut e).await;
    e.stop.cancel();
    // A renewal may be under way; then the release reads and clears the holder.
    let released = loop {
        let (method, _, body, reply) = next(&mut e.handle).await;
        match method {
            Method::GET => answer(reply, 200, &created),
            Method::PUT if body["spec"].get("holderIdentity").is_some() => answer(reply, 200, &created),
            Method::PUT => {
                answer(reply, 200, &stored(&body, "9"));
                break body;
            }
            other => panic!("unexpected {other}"),
        }
    };
    assert_eq!(released["metadata"]["resourceVersion"], "1", "compare-and-swap on the version read");
    assert_eq!(released["spec"]["leaseTransitions"], 0);
    assert_eq!(ended(e.task).await, End::Released);
    assert_eq!(e.status.borrow().election, Election::Ended(End::Released));
}

#[tokio::test]
async fn a_lease_taken_by_another_meanwhile_is_not_released() {
    let mut e = start();
    lead(&mut e).await;
    e.stop.cancel();
    let taken = lease("3", OTHER, 15, 1);
    let end = async {
        while let Some((request, reply)) = e.handle.next_request().await {
            assert_eq!(request.method(), Method::GET, "the lease of another is not written");
            answer(reply, 200, &taken);
        }
    };
    let ((), end) = tokio::join!(end, ended(e.task));
    // Either the renewal tick saw the takeover first, or the release did.
    assert!(matches!(end, End::Lost(Loss::TakenBy(_)) | End::NotReleased(_)), "{end:?}");
}
