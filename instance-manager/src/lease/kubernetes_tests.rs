//! Tests of the Kubernetes lease store against a scripted API server (`tower_test`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{Method, Response};
use serde_json::{Value, json};
use tower_test::mock::{self, SendResponse};

use super::*;
use crate::lease::with_deadline;

type Handle = mock::Handle<http::Request<Body>, Response<Body>>;
type Reply = SendResponse<Response<Body>>;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/db/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/db/leases/pg-primary";

fn store() -> (KubernetesLeaseStore, Handle) {
    let (service, handle) = mock::pair::<http::Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (KubernetesLeaseStore::new(client, "db", "pg-primary"), handle)
}

/// The next request: method, path (without query), JSON body (`Null` if empty), and its reply.
async fn next(handle: &mut Handle) -> (Method, String, Value, Reply) {
    let (request, reply) = handle.next_request().await.expect("the store sent no request");
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let body = request.into_body().collect_bytes().await.unwrap();
    let json = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
    (method, path, json, reply)
}

fn answer(reply: Reply, status: u16, body: &Value) {
    reply
        .send_response(Response::builder().status(status).body(Body::from(serde_json::to_vec(body).unwrap())).unwrap());
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code})
}

fn lease(resource_version: &str, holder: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {
            "name": "pg-primary", "namespace": "db", "resourceVersion": resource_version,
            "labels": {"app.kubernetes.io/name": "pgwarden"},
            "annotations": {"pgwarden.io/sync-standbys": "pg-3,pg-2", "pgwarden.io/switchover-to": "pg-2", "note": "keep me"},
        },
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": transitions,
            "acquireTime": "2026-01-02T03:04:05.000000Z", "renewTime": "2026-01-02T03:04:15.123456Z",
            "strategy": "OldestEmulationVersion",
        },
    })
}

fn record(holder: &str, transitions: u64) -> LeaseRecord {
    LeaseRecord {
        holder: Some(holder.into()),
        lease_duration_seconds: 15,
        acquire_time: Some("2026-01-02T03:04:05Z".parse().unwrap()),
        renew_time: Some("2026-01-02T03:04:20.987654321Z".parse().unwrap()),
        transitions,
        sync_standbys: vec!["pg-3".into()],
        switchover_to: None,
        cluster: None,
        system_identifier: None,
    }
}

#[tokio::test]
async fn get_existing_maps_the_lease() {
    let (store, mut handle) = store();
    let (got, ()) = tokio::join!(store.get(), async {
        let (method, path, _, reply) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::GET, LEASE));
        answer(reply, 200, &lease("7", "pg-1", 3));
    });
    let (record, version) = got.unwrap().expect("a lease");
    assert_eq!(version, Version("7".into()));
    assert_eq!(record.holder.as_deref(), Some("pg-1"));
    assert_eq!((record.lease_duration_seconds, record.transitions), (15, 3));
    assert_eq!(record.renew_time.unwrap().to_string(), "2026-01-02T03:04:15.123456Z");
    assert_eq!(record.sync_standbys, vec!["pg-2", "pg-3"]);
    assert_eq!(record.switchover_to.as_deref(), Some("pg-2"));
    assert_eq!(store.describe(), "kubernetes lease db/pg-primary");
}

#[tokio::test]
async fn get_not_found_is_none() {
    let (store, mut handle) = store();
    let (got, ()) = tokio::join!(store.get(), async {
        let (_, _, _, reply) = next(&mut handle).await;
        answer(reply, 404, &status(404, "NotFound", "leases \"pg-primary\" not found"));
    });
    assert_eq!(got, Ok(None));
}

#[tokio::test]
async fn create_posts_the_record_and_returns_the_new_version() {
    let (store, mut handle) = store();
    let mine = record("pg-1", 1);
    let (created, ()) = tokio::join!(store.create(&mine), async {
        let (method, path, body, reply) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::POST, LEASES));
        assert_eq!(body["metadata"]["name"], "pg-primary");
        assert!(body["metadata"].get("resourceVersion").is_none(), "{body}");
        assert_eq!(body["metadata"]["annotations"], json!({"pgwarden.io/sync-standbys": "pg-3"}));
        assert_eq!(body["spec"]["holderIdentity"], "pg-1");
        assert_eq!(body["spec"]["leaseTransitions"], 1);
        assert_eq!(body["spec"]["renewTime"], "2026-01-02T03:04:20.987654Z", "MicroTime precision");
        let mut stored = body.clone();
        stored["metadata"]["resourceVersion"] = json!("1");
        answer(reply, 201, &stored);
    });
    assert_eq!(created, Ok(Version("1".into())));
}

#[tokio::test]
async fn create_over_an_existing_lease_conflicts() {
    let (store, mut handle) = store();
    let theirs = record("pg-2", 1);
    let (created, ()) = tokio::join!(store.create(&theirs), async {
        let (_, _, _, reply) = next(&mut handle).await;
        answer(reply, 409, &status(409, "AlreadyExists", "leases \"pg-primary\" already exists"));
    });
    assert_eq!(created, Err(LeaseError::Conflict));
}

#[tokio::test]
async fn replace_puts_the_read_object_with_its_resource_version() {
    let (store, mut handle) = store();
    let (got, ()) = tokio::join!(store.get(), async {
        let (_, _, _, reply) = next(&mut handle).await;
        answer(reply, 200, &lease("7", "pg-1", 3));
    });
    let (_, v7) = got.unwrap().unwrap();
    let mine = record("pg-1", 3);
    let (replaced, ()) = tokio::join!(store.replace(&mine, &v7), async {
        let (method, path, body, reply) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::PUT, LEASE));
        assert_eq!(body["metadata"]["resourceVersion"], "7", "the CAS is the server's");
        assert_eq!(body["metadata"]["labels"]["app.kubernetes.io/name"], "pgwarden", "labels survive");
        let annotations = &body["metadata"]["annotations"];
        assert_eq!(annotations, &json!({"note": "keep me", "pgwarden.io/sync-standbys": "pg-3"}));
        assert_eq!(body["spec"]["strategy"], "OldestEmulationVersion", "unmanaged spec survives");
        let mut stored = body.clone();
        stored["metadata"]["resourceVersion"] = json!("8");
        answer(reply, 200, &stored);
    });
    assert_eq!(replaced, Ok(Version("8".into())));
}

#[tokio::test]
async fn replace_without_a_matching_read_still_sends_the_expected_version() {
    let (store, mut handle) = store();
    let (mine, v41) = (record("pg-1", 3), Version("41".into()));
    let (replaced, ()) = tokio::join!(store.replace(&mine, &v41), async {
        let (_, _, body, reply) = next(&mut handle).await;
        assert_eq!(body["metadata"]["resourceVersion"], "41");
        assert!(body["metadata"].get("labels").is_none());
        answer(reply, 404, &status(404, "NotFound", "gone"));
    });
    assert_eq!(replaced, Err(LeaseError::Conflict), "a vanished lease is re-read, then created");
}

#[tokio::test]
async fn conflict_after_a_write_that_landed_is_settled_by_the_re_read() {
    let (store, mut handle) = store();
    let (mine, v7) = (record("pg-1", 4), Version("7".into()));
    let (replaced, ()) = tokio::join!(store.replace(&mine, &v7), async {
        let (_, _, _, reply) = next(&mut handle).await;
        // Our earlier attempt already moved the lease to version 8: this one loses the CAS.
        answer(reply, 409, &status(409, "Conflict", "the object has been modified"));
    });
    assert_eq!(replaced, Err(LeaseError::Conflict));
    let (got, ()) = tokio::join!(store.get(), async {
        let (_, _, _, reply) = next(&mut handle).await;
        let mut landed = lease("8", "pg-1", 4);
        landed["spec"]["renewTime"] = json!("2026-01-02T03:04:20.987654Z");
        landed["metadata"]["annotations"] = json!({"pgwarden.io/sync-standbys": "pg-3"});
        answer(reply, 200, &landed);
    });
    let (read, version) = got.unwrap().unwrap();
    assert_eq!(read, mine.normalized(), "the re-read shows our own record: the write landed");
    assert_eq!(version, Version("8".into()));
}

#[tokio::test]
async fn rate_limited_carries_retry_after() {
    let (store, mut handle) = store();
    let (got, ()) = tokio::join!(store.get(), async {
        let (_, _, _, reply) = next(&mut handle).await;
        let response = Response::builder()
            .status(429)
            .header("Retry-After", "3")
            .body(Body::from(b"Too many requests, please try again later.\n".to_vec()));
        reply.send_response(response.unwrap());
    });
    assert_eq!(got, Err(LeaseError::RateLimited { retry_after: Some(Duration::from_secs(3)) }));

    let (got, ()) = tokio::join!(store.get(), async {
        let (_, _, _, reply) = next(&mut handle).await;
        let mut body = status(429, "TooManyRequests", "slow down");
        body["details"] = json!({"retryAfterSeconds": 2});
        answer(reply, 429, &body);
    });
    assert_eq!(got, Err(LeaseError::RateLimited { retry_after: Some(Duration::from_secs(2)) }), "from the body");
}

#[tokio::test]
async fn forbidden_is_fatal_with_an_rbac_hint_and_5xx_is_unavailable() {
    let (store, mut handle) = store();
    let (mine, v7) = (record("pg-1", 1), Version("7".into()));
    let (got, ()) = tokio::join!(store.replace(&mine, &v7), async {
        let (_, _, _, reply) = next(&mut handle).await;
        answer(reply, 403, &status(403, "Forbidden", "cannot update resource \"leases\""));
    });
    let Err(LeaseError::Fatal { message }) = got else { panic!("expected Fatal, got {got:?}") };
    assert!(message.contains("HTTP 403") && message.contains("cannot update resource"), "{message}");
    assert!(message.contains("hint:") && message.contains("get, create and update on leases"), "{message}");

    let (got, ()) = tokio::join!(store.get(), async {
        let (_, _, _, reply) = next(&mut handle).await;
        answer(reply, 503, &status(503, "ServiceUnavailable", "etcdserver: leader changed"));
    });
    let Err(LeaseError::Unavailable { message }) = got else { panic!("expected Unavailable, got {got:?}") };
    assert!(message.contains("etcdserver: leader changed"), "{message}");

    let (got, ()) = tokio::join!(store.get(), async {
        let (_, _, _, reply) = next(&mut handle).await;
        reply.send_error(std::io::Error::other("connection refused"));
    });
    assert!(matches!(got, Err(LeaseError::Unavailable { .. })), "{got:?}");
}

#[tokio::test]
async fn malformed_lease_is_fatal() {
    let (store, mut handle) = store();
    let (got, ()) = tokio::join!(store.get(), async {
        let (_, _, _, reply) = next(&mut handle).await;
        answer(reply, 200, &lease("7", "pg-1", -1));
    });
    let Err(LeaseError::Fatal { message }) = got else { panic!("expected Fatal, got {got:?}") };
    assert!(message.contains("leaseTransitions is negative"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn hung_response_times_out() {
    let (store, mut handle) = store();
    let deadline = Duration::from_secs(2);
    // The reply is held, never sent, until both sides are done.
    let (got, _held) = tokio::join!(with_deadline(store.get(), deadline), handle.next_request());
    assert_eq!(got, Err(LeaseError::Timeout(deadline)));
}

#[test]
fn record_and_lease_round_trip_and_transitions_saturate() {
    let mine = LeaseRecord { transitions: u64::MAX, switchover_to: Some("pg-2".into()), ..record("pg-1", 0) };
    let mut lease = record_to_lease(&mine, Lease::default()).unwrap();
    assert_eq!(lease.spec.as_ref().unwrap().lease_transitions, Some(i32::MAX));
    lease.metadata.resource_version = Some("5".into());
    let (read, version) = lease_to_record(&lease).unwrap();
    assert_eq!(version, Version("5".into()));
    assert_eq!(read, LeaseRecord { transitions: u64::from(i32::MAX.unsigned_abs()), ..mine.normalized() });

    let released = LeaseRecord { holder: None, sync_standbys: vec![], switchover_to: None, ..mine };
    let lease = record_to_lease(&released, lease).unwrap();
    assert_eq!(lease.metadata.annotations, None, "our annotations are removed when unset");
    let bad = LeaseRecord { sync_standbys: vec!["a,b".into()], ..record("pg-1", 0) };
    assert!(record_to_lease(&bad, Lease::default()).is_err());

    let empty_holder = Lease {
        metadata: kube::core::ObjectMeta { resource_version: Some("1".into()), ..Default::default() },
        spec: Some(LeaseSpec { holder_identity: Some(String::new()), ..Default::default() }),
    };
    assert_eq!(lease_to_record(&empty_holder).unwrap().0.holder, None, "client-go's release");
}
