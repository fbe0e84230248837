#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The HTTP API answers bad requests with JSON errors and never falls over, and refuses request
//! bodies over 16 KiB with a JSON 413 on TCP and on the local socket.

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

    oversized_bodies_are_refused(&inst).await;
}

/// Sends `head` then `body` on `stream` (write errors ignored: the server may answer and close
/// before the body is through) and returns the status code and the JSON error of the answer.
async fn exchange<S>(mut stream: S, head: &str, body: &[u8]) -> (u16, ErrorBody)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(head.as_bytes()).await.expect("write the request head");
    let _ = stream.write_all(body).await;
    // Read until the server closes; a reset after the answer (the server closed with part of
    // the body unread) ends it too.
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("an answer within 10 s");
    let text = String::from_utf8_lossy(&answer);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let e = serde_json::from_str(json).unwrap_or_else(|e| panic!("not a JSON error ({e}): {text}"));
    (code, e)
}

async fn oversized_bodies_are_refused(inst: &TestInstance) {
    // Over TCP, a declared 1 MiB body is refused from the headers alone, before the token
    // check: the manager does not wait for a body that never comes.
    let addr = inst.api_url.trim_start_matches("http://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = "POST /switchover HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 1048576\r\nConnection: close\r\n\r\n";
    let (code, e) = exchange(tcp, head, b"").await;
    assert_eq!(code, 413, "{e:?}");
    assert!(e.hint.as_deref().is_some_and(|h| h.contains("16 KiB")), "{e:?}");

    // On the local socket (no token needed), a chunked body with no declared length is cut at
    // the limit by the endpoint's JSON extractor.
    let unix = tokio::net::UnixStream::connect(inst.run_dir().join("manager.sock")).await.expect("connect");
    let head = "POST /switchover HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let mut body = b"400\r\n{\"target\": \"".to_vec();
    body.extend(std::iter::repeat_n(b'x', 0x400 - 12));
    body.extend(b"\r\n");
    for _ in 0..63 {
        body.extend(b"400\r\n");
        body.extend(std::iter::repeat_n(b'x', 0x400));
        body.extend(b"\r\n");
    }
    body.extend(b"0\r\n\r\n");
    let (code, e) = exchange(unix, head, &body).await;
    assert_eq!(code, 413, "{e:?}");
    assert_eq!(inst.get("/healthz").await.expect("still alive").0, 200);
}
