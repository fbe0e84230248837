#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The HTTP API answers bad requests with JSON errors and never falls over.

use std::time::Duration;

use instance_manager::api::ErrorBody;
use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_hints() {
    let root = TestDir::new();
    let inst = TestInstance::start(root.path(), &InstanceOptions::primary("pg-1"));
    // Before Postgres is ready the API already answers: liveness yes, readiness no.
    let (code, _) =
        instance_manager::testkit::wait_for("api up", Duration::from_secs(30), || async { inst.get("/healthz").await })
            .await;
    assert_eq!(code, 200);
    inst.wait_ready(Duration::from_secs(90)).await;

    let (code, body) = inst.get("/no/such/thing").await.expect("get");
    assert_eq!(code, 404);
    let e: ErrorBody = serde_json::from_str(&body).expect("JSON error body");
    assert!(e.error.contains("/no/such/thing") && e.hint.is_some(), "{body}");

    let client = inst.client();
    let err = client
        .post_json::<_, serde_json::Value>("/status", &serde_json::json!({}), None)
        .await
        .expect_err("POST /status is not allowed");
    assert!(err.to_string().contains("405") || err.to_string().contains("not allowed"), "{err}");

    // Garbage on the socket does not bring the API down.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = inst.api_url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    s.write_all(b"\x00\x01 garbage \r\n\r\n").await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert_eq!(inst.get("/healthz").await.expect("still alive").0, 200);
}
