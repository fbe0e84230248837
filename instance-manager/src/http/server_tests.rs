#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The connection loop on loopback: idle and half-sent connections are closed by the header
//! timeout, connections past the cap wait in the backlog, requests past the cap get a 503.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

async fn start(app: Router, limits: Limits) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    (addr, tokio::spawn(serve(tcp, app, limits, "test")))
}

fn quick(max_connections: usize, max_requests: usize) -> Limits {
    Limits {
        header_timeout: Duration::from_millis(300),
        queue_wait: Duration::from_millis(100),
        ..Limits::new(max_connections, max_requests)
    }
}

/// Reads until EOF (the server closed) within `within`; the bytes read.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Some(out),
        // Reset by a server that closed with unread input: closed too.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(out),
        Ok(Err(e)) => panic!("read: {e}"),
        Err(_) => None,
    }
}

async fn get_once(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    String::from_utf8_lossy(&read_to_close(&mut s, Duration::from_secs(5)).await.unwrap()).into_owned()
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed() {
    let (addr, server) = start(Router::new().route("/", get(|| async { "ok" })), quick(8, 8)).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert!(read_to_close(&mut idle, Duration::from_secs(5)).await.is_some(), "the idle connection stayed open");
    assert!(read_to_close(&mut half, Duration::from_secs(5)).await.is_some(), "the half-sent request stayed open");
    // A keep-alive connection is closed after its answer once it idles.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut kept, Duration::from_secs(5)).await.expect("kept-alive connection stayed open");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    server.abort();
}

#[tokio::test]
async fn connections_past_the_cap_wait_briefly_then_are_shed() {
    let limits = Limits { shed_after: Duration::from_millis(200), ..quick(2, 2) };
    let limits = Limits { header_timeout: Duration::from_secs(3), ..limits };
    let (addr, server) = start(Router::new().route("/", get(|| async { "ok" })), limits).await;
    // A short request past the cap waits for a slot and is served.
    let held = TcpStream::connect(addr).await.unwrap();
    let quick_answer = tokio::spawn(get_once(addr, "/"));
    let answer = quick_answer.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Both slots held by idle clients: the next connections are closed at once.
    let _second = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..5 {
        let mut shed = TcpStream::connect(addr).await.unwrap();
        let closed = read_to_close(&mut shed, Duration::from_secs(2)).await;
        assert_eq!(closed, Some(Vec::new()), "closed without an answer, well before the header timeout");
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A slot freed (the server saw the close): connections are served again.
    let answer = get_once(addr, "/").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.abort();
}

#[tokio::test]
async fn requests_past_the_cap_get_a_503() {
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        "slow"
    };
    let (addr, server) = start(Router::new().route("/", get(slow)), quick(8, 1)).await;
    let first = tokio::spawn(get_once(addr, "/"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = get_once(addr, "/").await;
    assert!(second.starts_with("HTTP/1.1 503"), "{second}");
    assert!(second.to_lowercase().contains("retry-after: 1"), "{second}");
    assert!(second.contains("too many requests at once"), "{second}");
    assert!(first.await.unwrap().starts_with("HTTP/1.1 200"));
    server.abort();
}

#[tokio::test]
async fn a_client_that_does_not_read_its_answer_is_cut_off() {
    let big = || async { "x".repeat(64 << 20) };
    let limits = Limits { write_timeout: Duration::from_millis(300), ..quick(8, 8) };
    let (addr, server) = start(Router::new().route("/", get(big)), limits).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The server gave up: reading now ends well before 64 MiB.
    let got = read_to_close(&mut s, Duration::from_secs(10)).await.map(|b| b.len());
    assert!(got.is_some_and(|n| n < 64 << 20), "{got:?}");
    server.abort();
}

#[test]
fn resource_errors_back_off_and_connection_errors_do_not() {
    let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
    assert_eq!(accept_backoff(&emfile, 1), Duration::from_millis(10));
    assert_eq!(accept_backoff(&emfile, 3), Duration::from_millis(40));
    assert_eq!(accept_backoff(&emfile, 100), Duration::from_secs(1));
    let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
    assert_eq!(accept_backoff(&aborted, 5), Duration::ZERO);
}
