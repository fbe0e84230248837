//! `/status` over real TLS on loopback: the operator trusts only the cluster's CA and verifies
//! the instance's stable DNS name, sends the API token, and bounds every call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{read_one, tls_config};
use crate::build::secrets::TlsMaterial;
use crate::generate;
use crate::names::Names;

/// A replica's `/status`, as the instance manager serves it.
pub(crate) const REPLICA_STATUS: &str = r#"{
    "name": "pg-2", "cluster": "pg", "role": "replica", "configured_role": "primary",
    "postgres": {"state": "running", "pid": 42, "accepting_connections": true, "version": "15.6", "restarts": 0, "last_exit": null},
    "in_recovery": true, "timeline": 2, "system_identifier": "7",
    "current_lsn": null, "received_lsn": "0/3000060", "replayed_lsn": "0/3000060", "replay_lag_seconds": 0.0,
    "wal_receiver": {"status": "streaming", "sender_host": "pg-1", "sender_port": 5432},
    "replication": [], "pending_restart": [], "config_error": null,
    "lease": null, "fenced": false, "priority": 100, "paused": false, "archive": null, "backup": null, "tls": {},
    "data_dir": "/var/lib/postgresql/data/pgdata", "manager_pid": 1, "manager_version": "0.1.0", "uptime_seconds": 60
}"#;

fn material() -> TlsMaterial {
    generate::generate(&Names::new("pg", "db"), jiff::Timestamp::now()).expect("material").tls
}

/// Serves one HTTPS connection with `tls`, answering `body` after `delay`; returns the port and
/// the request it received.
async fn serve_once(tls: &TlsMaterial, body: &'static str, delay: Duration) -> (u16, tokio::task::JoinHandle<String>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(tls.server_cert.as_bytes()).collect::<Result<_, _>>().expect("certs");
    let key = PrivateKeyDer::from_pem_slice(tls.server_key.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let Ok(mut s) = acceptor.accept(tcp).await else { return String::from("<tls refused>") };
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        tokio::time::sleep(delay).await;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(response.as_bytes()).await;
        let _ = s.shutdown().await;
        String::from_utf8_lossy(&request).into_owned()
    });
    (port, task)
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test]
async fn reads_a_status_verified_against_the_cluster_ca_with_the_token() {
    install_provider();
    let tls = material();
    let (port, server) = serve_once(&tls, REPLICA_STATUS, Duration::ZERO).await;
    let client = tls_config(&tls.ca_cert).expect("client config");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let status = read_one(client, addr, "pg-2.pg-headless.db.svc", Some("T0KEN")).await.expect("a status");
    assert_eq!(status.name, "pg-2");
    assert_eq!(status.timeline, Some(2));
    let request = server.await.expect("the server");
    assert!(request.starts_with("GET /status HTTP/1.1"), "{request}");
    assert!(request.to_ascii_lowercase().contains("authorization: bearer t0ken"), "{request}");
}

#[tokio::test]
async fn a_name_the_certificate_does_not_carry_or_another_ca_is_refused() {
    install_provider();
    let tls = material();
    let (port, _server) = serve_once(&tls, REPLICA_STATUS, Duration::ZERO).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let e = read_one(tls_config(&tls.ca_cert).expect("config"), addr, "pg-2.elsewhere.db.svc", None)
        .await
        .expect_err("wrong name");
    assert!(e.contains("TLS"), "{e}");

    let (port, _server) = serve_once(&tls, REPLICA_STATUS, Duration::ZERO).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let other = material();
    let e = read_one(tls_config(&other.ca_cert).expect("config"), addr, "pg-2.pg-headless.db.svc", None)
        .await
        .expect_err("other CA");
    assert!(e.contains("TLS"), "{e}");
}

#[tokio::test]
async fn a_silent_instance_costs_one_bounded_timeout() {
    install_provider();
    let tls = material();
    let (port, _server) = serve_once(&tls, REPLICA_STATUS, Duration::from_secs(30)).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let e = read_one(tls_config(&tls.ca_cert).expect("config"), addr, "pg-2.pg-headless.db.svc", None)
        .await
        .expect_err("timeout");
    assert!(e.contains("did not answer"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded: {:?}", started.elapsed());
}

#[test]
fn a_ca_that_is_not_pem_is_named() {
    let e = tls_config("not a certificate").expect_err("refused");
    assert!(e.contains("CA"), "{e}");
}
