#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every route of both routers refuses a body over the limit with a JSON 413: declared by
//! `Content-Length` (refused before routing, whatever the route) or streamed without a length
//! (cut by the JSON extractors). A body at the limit is read.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use tower::ServiceExt as _;

use super::test_instance as instance;
use super::{MAX_BODY, router, wal_router};
use crate::api::ErrorBody;

/// Routes of the API router (those that read a body and those that do not, and the fallback)
/// and of the WAL socket's router.
const API_ROUTES: &[(&str, &str)] = &[
    ("POST", "/switchover"),
    ("POST", "/promote"),
    ("POST", "/fence"),
    ("POST", "/unfence"),
    ("POST", "/pause"),
    ("POST", "/resume"),
    ("POST", "/backup"),
    ("POST", "/ha/tick"),
    ("DELETE", "/backups/b1"),
    ("GET", "/status"),
    ("POST", "/no/such/route"),
];
const WAL_ROUTES: &[(&str, &str)] = &[("POST", "/wal/archive"), ("POST", "/wal/restore"), ("POST", "/status")];
/// The routes that read a JSON body.
const JSON_ROUTES: &[(bool, &str)] =
    &[(false, "/switchover"), (false, "/promote"), (false, "/backup"), (true, "/wal/archive"), (true, "/wal/restore")];

/// A JSON object of exactly `len` bytes.
fn json_of(len: usize) -> Vec<u8> {
    let mut body = br#"{"target":""#.to_vec();
    body.resize(len - 2, b'x');
    body.extend_from_slice(br#""}"#);
    body
}

async fn send(app: Router, method: &str, path: &str, body: Body, length: Option<usize>) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(Method::from_bytes(method.as_bytes()).unwrap()).uri(path);
    req = req.header(header::CONTENT_TYPE, "application/json");
    if let Some(n) = length {
        req = req.header(header::CONTENT_LENGTH, n);
    }
    let res = app.oneshot(req.body(body).unwrap()).await.unwrap();
    let status = res.status();
    (status, axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap().to_vec())
}

fn assert_json_413(what: &str, status: StatusCode, answer: &[u8]) {
    let text = String::from_utf8_lossy(answer);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{what}: {text}");
    let e: ErrorBody = serde_json::from_slice(answer).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    assert!(e.hint.as_deref().is_some_and(|h| h.contains("16 KiB")), "{what}: {text}");
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let inst = instance(dir.path());
    let apps = [("api", router(Arc::clone(&inst), false), API_ROUTES), ("wal", wal_router(inst), WAL_ROUTES)];
    for (socket, app, routes) in apps {
        for (method, path) in routes {
            let body = json_of(MAX_BODY + 1);
            let (status, answer) = send(app.clone(), method, path, Body::from(body), Some(MAX_BODY + 1)).await;
            assert_json_413(&format!("{socket} {method} {path}"), status, &answer);
        }
    }
}

#[tokio::test]
async fn the_token_check_does_not_read_an_oversized_body_first() {
    // Over TCP the mutating routes need a token; the size is refused first, so an anonymous
    // client cannot make the manager wait for a large body either.
    let dir = tempfile::tempdir().unwrap();
    let app = router(instance(dir.path()), true);
    let (status, answer) = send(app, "POST", "/fence", Body::from(json_of(MAX_BODY + 1)), Some(MAX_BODY + 1)).await;
    assert_json_413("tcp POST /fence", status, &answer);
}

#[tokio::test]
async fn a_streamed_oversized_body_is_cut_by_the_json_routes() {
    let dir = tempfile::tempdir().unwrap();
    let inst = instance(dir.path());
    for (wal, path) in JSON_ROUTES {
        let app = if *wal { wal_router(Arc::clone(&inst)) } else { router(Arc::clone(&inst), false) };
        // Chunks with no Content-Length, as `Transfer-Encoding: chunked` arrives.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            json_of(4 * MAX_BODY).chunks(1024).map(|c| Ok(c.to_vec())).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let (status, answer) = send(app, "POST", path, body, None).await;
        assert_json_413(&format!("streamed POST {path}"), status, &answer);
    }
}

#[tokio::test]
async fn a_body_at_the_limit_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let inst = instance(dir.path());
    for (wal, path) in JSON_ROUTES {
        let app = if *wal { wal_router(Arc::clone(&inst)) } else { router(Arc::clone(&inst), false) };
        let (status, answer) = send(app, "POST", path, Body::from(json_of(MAX_BODY)), Some(MAX_BODY)).await;
        // The endpoint answers about its content (wrong fields, no Postgres), not its size.
        assert_ne!(status, StatusCode::PAYLOAD_TOO_LARGE, "POST {path}: {}", String::from_utf8_lossy(&answer));
        assert!(serde_json::from_slice::<serde_json::Value>(&answer).is_ok(), "POST {path}: not JSON");
    }
}
