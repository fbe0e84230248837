#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property test of the request path: whatever the body (JSON of any shape, bytes that are
//! not JSON, too large), content type, path parameter and endpoint, the API answers — never
//! panics — and answers JSON: a 2xx document, or `{ "error", "hint" }` with a 4xx/5xx.

use axum::body::Body;
use axum::http::{Method, Request};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt as _;

use super::test_instance as instance;
use crate::api::ErrorBody;

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    // The endpoints' own field names, so that wrong types for real fields are tried too.
    let key = prop_oneof![
        Just("target".to_string()),
        Just("force".to_string()),
        Just("fromStandby".to_string()),
        Just("wait".to_string()),
        "[a-zA-Z]{0,8}",
    ];
    leaf.prop_recursive(3, 24, 5, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(key.clone(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => vec(any::<u8>(), 0..48),
        1 => Just(Vec::new()),
        1 => Just(vec![b' '; 20 * 1024]),
    ]
}

fn endpoint() -> impl Strategy<Value = (Method, String)> {
    let post = prop_oneof![
        Just("/switchover"),
        Just("/promote"),
        Just("/fence"),
        Just("/unfence"),
        Just("/pause"),
        Just("/resume"),
        Just("/backup"),
        Just("/ha/tick"),
        Just("/status"),
        Just("/nope"),
    ];
    prop_oneof![
        4 => post.prop_map(|p| (Method::POST, p.to_string())),
        1 => "(%[0-9a-fA-F]{2}|[a-zA-Z0-9._~-]){0,12}".prop_map(|id| (Method::DELETE, format!("/backups/{id}"))),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![Just(None), Just(Some("application/json")), Just(Some("text/plain"))]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_request_gets_a_json_answer(
        (method, path) in endpoint(),
        body in body(),
        content_type in content_type(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, answer) = rt.block_on(async {
            let app = crate::http::router(instance(dir.path()), false);
            let mut req = Request::builder().method(method.clone()).uri(&path);
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let res = app.oneshot(req.body(Body::from(body.clone())).unwrap()).await.unwrap();
            let status = res.status();
            (status, axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap())
        });
        let text = String::from_utf8_lossy(&answer);
        if status.is_success() {
            prop_assert!(serde_json::from_slice::<Value>(&answer).is_ok(), "{method} {path}: {status} {text}");
        } else {
            prop_assert!(status.is_client_error() || status.is_server_error(), "{method} {path}: {status}");
            let err = serde_json::from_slice::<ErrorBody>(&answer);
            prop_assert!(err.as_ref().is_ok_and(|e| !e.error.is_empty() && e.hint.is_some()), "{method} {path}: {status} {text}");
        }
    }
}
