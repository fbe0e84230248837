//! Tests of Kubernetes routing against a scripted API server (`tower_test`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{Method, Response};
use serde_json::{Value, json};
use tower_test::mock::{self, SendResponse};

use super::*;
use crate::routing::{ROLE_PRIMARY, TERM_ANNOTATION};

type Handle = mock::Handle<http::Request<Body>, Response<Body>>;
type Reply = SendResponse<Response<Body>>;

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/db/endpointslices";
const SLICE: &str = "/apis/discovery.k8s.io/v1/namespaces/db/endpointslices/pg-rw";
const POD: &str = "/api/v1/namespaces/db/pods/pg-1";

fn routing() -> (KubernetesRouting, Handle) {
    let (service, handle) = mock::pair::<http::Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (KubernetesRouting::new(client, "db", "pg", "pg-1", "10.0.0.7".parse().unwrap(), 5432), handle)
}

/// The next request: method, path (without query), content type, JSON body (`Null` if empty),
/// and its reply.
async fn next(handle: &mut Handle) -> (Method, String, String, Value, Reply) {
    let (request, reply) = handle.next_request().await.expect("no request was sent");
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let content_type =
        request.headers().get(http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body = request.into_body().collect_bytes().await.unwrap();
    let json = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
    (method, path, content_type, json, reply)
}

/// Asserts that nothing else was sent: once the client is gone, the script sees the end.
async fn assert_no_more_requests(routing: KubernetesRouting, mut handle: Handle) {
    drop(routing);
    if let Some((request, _)) = handle.next_request().await {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
}

fn answer(reply: Reply, status: u16, body: &Value) {
    reply
        .send_response(Response::builder().status(status).body(Body::from(serde_json::to_vec(body).unwrap())).unwrap());
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code})
}

fn not_found() -> Value {
    status(404, "NotFound", "not found")
}

/// The slice as stored by the holder of `term` (pod `pg-0`), at `resource_version`.
fn slice(resource_version: &str, term: u64) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": "pg-rw", "namespace": "db", "resourceVersion": resource_version,
            "labels": {"kubernetes.io/service-name": "pg-rw", "endpointslice.kubernetes.io/managed-by": "pgwarden.io"},
            "annotations": {TERM_ANNOTATION: term.to_string(), "note": "keep me"},
            "managedFields": [{"manager": "instance-manager", "operation": "Update"}],
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "namespace": "db", "name": "pg-0"}}],
        "ports": [{"name": "postgres", "port": 5432, "protocol": "TCP"}],
    })
}

/// Answers a write with what was sent, at a new version.
fn echo(reply: Reply, code: u16, body: &Value, resource_version: &str) {
    let mut stored = body.clone();
    stored["metadata"]["resourceVersion"] = json!(resource_version);
    answer(reply, code, &stored);
}

#[tokio::test]
async fn became_primary_creates_the_slice_when_missing() {
    let (routing, mut handle) = routing();
    let (got, ()) = tokio::join!(routing.became_primary(3), async {
        let (method, path, _, _, reply) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::GET, SLICE));
        answer(reply, 404, &not_found());
        let (method, path, _, body, reply) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::POST, SLICES));
        assert_eq!(body["metadata"]["name"], "pg-rw");
        assert!(body["metadata"].get("resourceVersion").is_none(), "{body}");
        assert_eq!(body["metadata"]["annotations"][TERM_ANNOTATION], "3");
        assert_eq!(body["metadata"]["labels"]["kubernetes.io/service-name"], "pg-rw");
        assert_eq!(body["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "pgwarden.io");
        assert_eq!(body["addressType"], "IPv4");
        assert_eq!(
            body["endpoints"],
            json!([{
                "addresses": ["10.0.0.7"],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": "db", "name": "pg-1"},
            }])
        );
        assert_eq!(body["ports"], json!([{"name": "postgres", "port": 5432, "protocol": "TCP"}]));
        echo(reply, 201, &body, "1");
    });
    assert_eq!(got, Ok(()));
    assert_eq!(routing.describe(), "kubernetes endpointslice db/pg-rw (pod pg-1 at 10.0.0.7:5432)");
}

#[tokio::test]
async fn became_primary_replaces_a_lower_term_with_its_resource_version() {
    let (routing, mut handle) = routing();
    let (got, ()) = tokio::join!(routing.became_primary(3), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 200, &slice("41", 2));
        let (method, path, _, body, reply) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::PUT, SLICE));
        assert_eq!(body["metadata"]["resourceVersion"], "41", "the CAS is the server's");
        assert!(body["metadata"].get("managedFields").is_none(), "{body}");
        assert_eq!(body["metadata"]["annotations"], json!({TERM_ANNOTATION: "3", "note": "keep me"}));
        assert_eq!(body["endpoints"].as_array().unwrap().len(), 1, "exactly this pod");
        assert_eq!(body["endpoints"][0]["addresses"], json!(["10.0.0.7"]));
        echo(reply, 200, &body, "42");
    });
    assert_eq!(got, Ok(()));
}

#[tokio::test]
async fn became_primary_never_overwrites_a_higher_term() {
    let (routing, mut handle) = routing();
    let (got, ()) = tokio::join!(routing.became_primary(4), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 200, &slice("41", 5));
    });
    assert_eq!(got, Err(RoutingError::StaleTerm { ours: 4, theirs: 5 }));
    assert_no_more_requests(routing, handle).await;
}

#[tokio::test]
async fn conflict_is_re_read_and_re_decided() {
    let (routing, mut handle) = routing();
    let (got, ()) = tokio::join!(routing.became_primary(3), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 200, &slice("41", 2));
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 409, &status(409, "Conflict", "the object has been modified"));
        let (method, _, _, _, reply) = next(&mut handle).await;
        assert_eq!(method, Method::GET, "a conflict is followed by a re-read");
        answer(reply, 200, &slice("43", 2));
        let (method, _, _, body, reply) = next(&mut handle).await;
        assert_eq!(method, Method::PUT);
        assert_eq!(body["metadata"]["resourceVersion"], "43", "the version of the re-read");
        echo(reply, 200, &body, "44");
    });
    assert_eq!(got, Ok(()));
}

#[tokio::test]
async fn conflict_with_a_successor_ends_in_stale_term() {
    let (routing, mut handle) = routing();
    let (got, ()) = tokio::join!(routing.became_primary(3), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 404, &not_found());
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 409, &status(409, "AlreadyExists", "endpointslices \"pg-rw\" already exists"));
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 200, &slice("7", 4));
    });
    assert_eq!(got, Err(RoutingError::StaleTerm { ours: 3, theirs: 4 }));
    assert_no_more_requests(routing, handle).await;
}

#[tokio::test]
async fn an_earlier_write_that_landed_is_not_written_again() {
    let (routing, mut handle) = routing();
    let (first, ()) = tokio::join!(routing.became_primary(3), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 404, &not_found());
        let (_, _, _, body, reply) = next(&mut handle).await;
        echo(reply, 201, &body, "1");
    });
    assert_eq!(first, Ok(()));
    let (second, ()) = tokio::join!(routing.became_primary(3), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        let stored = desired_slice("db", "pg", "pg-1", "10.0.0.7".parse().unwrap(), 5432, 3, None);
        echo(reply, 200, &serde_json::to_value(stored).unwrap(), "1");
    });
    assert_eq!(second, Ok(()), "already routed to us under our term");
    assert_no_more_requests(routing, handle).await;
}

#[tokio::test]
async fn endless_conflicts_give_up() {
    let (routing, mut handle) = routing();
    let (got, ()) = tokio::join!(routing.became_primary(3), async {
        for _ in 0..MAX_ATTEMPTS {
            let (_, _, _, _, reply) = next(&mut handle).await;
            answer(reply, 200, &slice("41", 2));
            let (_, _, _, _, reply) = next(&mut handle).await;
            answer(reply, 409, &status(409, "Conflict", "the object has been modified"));
        }
    });
    assert_eq!(got, Err(RoutingError::Conflict { attempts: MAX_ATTEMPTS }));
    assert_no_more_requests(routing, handle).await;
}

#[tokio::test]
async fn released_empties_the_slice_of_our_term() {
    let (routing, mut handle) = routing();
    let (got, ()) = tokio::join!(routing.released(2), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 200, &slice("41", 2));
        let (method, path, _, body, reply) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::PUT, SLICE));
        assert_eq!(body["metadata"]["resourceVersion"], "41");
        assert_eq!(body["endpoints"], json!([]));
        assert_eq!(body["metadata"]["annotations"][TERM_ANNOTATION], "2", "the term stays");
        echo(reply, 200, &body, "42");
    });
    assert_eq!(got, Ok(()));
}

#[tokio::test]
async fn released_leaves_a_successors_slice_and_a_missing_one_alone() {
    let (routing, mut handle) = routing();
    let (got, ()) = tokio::join!(routing.released(2), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 200, &slice("41", 3));
    });
    assert_eq!(got, Ok(()));
    let (got, ()) = tokio::join!(routing.released(2), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 404, &not_found());
    });
    assert_eq!(got, Ok(()));
    assert_no_more_requests(routing, handle).await;
}

#[tokio::test]
async fn role_label_is_a_merge_patch_and_a_missing_pod_is_tolerated() {
    let (routing, mut handle) = routing();
    let (got, ()) = tokio::join!(routing.set_role_label(ROLE_PRIMARY), async {
        let (method, path, content_type, body, reply) = next(&mut handle).await;
        assert_eq!((method, path.as_str()), (Method::PATCH, POD));
        assert_eq!(content_type, "application/merge-patch+json");
        assert_eq!(body, json!({"metadata": {"labels": {"pgwarden.io/role": "primary"}}}));
        answer(reply, 200, &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pg-1"}}));
    });
    assert_eq!(got, Ok(()));
    let (got, ()) = tokio::join!(routing.set_role_label("replica"), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 404, &status(404, "NotFound", "pods \"pg-1\" not found"));
    });
    assert_eq!(got, Ok(()), "a missing pod is only a warning");
    let invalid = routing.set_role_label("not a label").await;
    assert!(matches!(invalid, Err(RoutingError::Rejected { .. })), "{invalid:?}");
    assert_no_more_requests(routing, handle).await;
}

#[tokio::test]
async fn forbidden_carries_the_rbac_hint() {
    let (routing, mut handle) = routing();
    let (got, ()) = tokio::join!(routing.became_primary(1), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 403, &status(403, "Forbidden", "cannot get resource \"endpointslices\""));
    });
    let Err(RoutingError::Forbidden { message, hint }) = got else { panic!("expected Forbidden, got {got:?}") };
    assert!(message.contains("HTTP 403") && message.contains("cannot get resource"), "{message}");
    assert!(hint.contains("get, create and update on endpointslices") && hint.contains("patch on pods"), "{hint}");

    let (got, ()) = tokio::join!(routing.set_role_label(ROLE_PRIMARY), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 403, &status(403, "Forbidden", "cannot patch resource \"pods\""));
    });
    assert!(matches!(got, Err(RoutingError::Forbidden { .. })), "{got:?}");
}

#[tokio::test]
async fn server_and_transport_errors_are_unavailable() {
    let (routing, mut handle) = routing();
    let (got, ()) = tokio::join!(routing.became_primary(1), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        answer(reply, 503, &status(503, "ServiceUnavailable", "etcdserver: leader changed"));
    });
    let Err(RoutingError::Unavailable { message }) = got else { panic!("expected Unavailable, got {got:?}") };
    assert!(message.contains("etcdserver: leader changed"), "{message}");
    let (got, ()) = tokio::join!(routing.released(1), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        reply.send_error(std::io::Error::other("connection refused"));
    });
    assert!(matches!(got, Err(RoutingError::Unavailable { .. }) if got.as_ref().unwrap_err().is_retryable()));
}

#[tokio::test(start_paused = true)]
async fn rate_limited_requests_are_retried_after_retry_after() {
    let (routing, mut handle) = routing();
    let start = Instant::now();
    let (got, ()) = tokio::join!(routing.became_primary(1), async {
        let (_, _, _, _, reply) = next(&mut handle).await;
        reply.send_response(Response::builder().status(429).header("Retry-After", "1").body(Body::empty()).unwrap());
        let (method, _, _, _, reply) = next(&mut handle).await;
        assert_eq!(method, Method::GET, "the same read, again");
        answer(reply, 404, &not_found());
        let (_, _, _, body, reply) = next(&mut handle).await;
        echo(reply, 201, &body, "1");
    });
    assert_eq!(got, Ok(()));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_hung_api_server_times_out_at_the_call_deadline() {
    let (routing, mut handle) = routing();
    let routing = routing.with_call_deadline(Duration::from_secs(2));
    // The reply is held, never sent, until both sides are done.
    let (got, _held) = tokio::join!(routing.became_primary(1), handle.next_request());
    assert_eq!(got, Err(RoutingError::Timeout(Duration::from_secs(2))));
}

#[test]
fn label_values_are_validated() {
    assert!(is_label_value("primary") && is_label_value("a.b-c_d"));
    assert!(!is_label_value("") && !is_label_value("-x") && !is_label_value("a b") && !is_label_value(&"x".repeat(64)));
}
