#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! TLS in-process: files, validation, HTTPS with the right and the wrong CA, rotation,
//! client certificates. (The real manager over HTTPS is in tests/tls_api.rs.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::ConnectInfo;
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::task::AbortOnDropHandle;

use super::*;
use crate::api::{ApiTlsSpec, ClientAuth};
use crate::cli::{ApiClient, ApiTarget, ClientError};
use crate::testkit::{CertKey, TestCa};

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn files(ca: &TestCa, pair: &CertKey) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("ca.crt"));
    pair.write(&cert, &key);
    ca.write(&ca_file);
    Files { _dir: dir, cert, key, ca: ca_file }
}

fn serial_of(pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    CertInfo::from_der(&der).unwrap().serial
}

#[test]
fn reads_serial_and_validity_of_a_certificate() {
    let ca = TestCa::new("test CA");
    let pair = ca.server_cert();
    let der = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap();
    let info = CertInfo::from_der(&der).unwrap();
    let now = jiff::Timestamp::now();
    assert!(info.not_before <= now && now < info.not_after, "{info:?}");
    assert!(!info.expired_at(now));
    assert_ne!(info.serial, serial_of(&ca.server_cert().cert_pem), "serials differ");
    let expired = ca.expired_server_cert();
    let info = CertInfo::from_der(&CertificateDer::from_pem_slice(expired.cert_pem.as_bytes()).unwrap()).unwrap();
    assert!(info.expired_at(now), "{info:?}");
}

#[test]
fn file_errors_name_the_file() {
    let ca = TestCa::new("test CA");
    let f = files(&ca, &ca.server_cert());
    let other = files(&ca, &ca.server_cert());
    assert!(certified_key(&f.cert, &f.key).is_ok());
    let err = certified_key(&f.cert, &other.key).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("does not match the certificate in"), "{err}");
    let missing = f.cert.with_file_name("nope.crt");
    let err = read_certs(&missing).unwrap_err().to_string();
    assert!(err.starts_with(&format!("cannot read {}", missing.display())), "{err}");
    std::fs::write(&missing, "not pem").unwrap();
    let err = read_certs(&missing).unwrap_err().to_string();
    assert!(err.contains("holds no PEM certificate"), "{err}");
    let err = read_key(&f.cert).unwrap_err().to_string();
    assert!(err.contains("holds no PEM private key"), "{err}");
}

fn base_yaml(dir: &Path, extra: &str) -> String {
    format!(
        "name: pg-1\ndataDir: {0}/pgdata\nrunDir: {0}/run\nbinDir: /usr/lib/postgresql/15/bin\n{extra}",
        dir.display()
    )
}

fn problems(text: &str) -> Vec<String> {
    let cfg = crate::config::parse(text, Path::new("t.yaml")).expect("parses");
    match crate::config::validate(cfg) {
        Ok(_) => vec![],
        Err(p) => p.0.into_iter().map(|p| format!("{}: {}", p.field, p.message)).collect(),
    }
}

#[test]
fn validation_names_the_field_of_each_tls_problem() {
    let ca = TestCa::new("test CA");
    let f = files(&ca, &ca.server_cert());
    let other = files(&ca, &ca.server_cert());
    let d = tempfile::tempdir().unwrap();
    let ok = format!(
        "api:\n  tls:\n    certFile: {}\n    keyFile: {}\n    caFile: {}\n    clientAuth: optional\n\
         postgres:\n  requireTls: true\n  tls:\n    certFile: {}\n    keyFile: {}\n    caFile: {}\n",
        f.cert.display(),
        f.key.display(),
        f.ca.display(),
        f.cert.display(),
        f.key.display(),
        f.ca.display()
    );
    assert_eq!(problems(&base_yaml(d.path(), &ok)), Vec::<String>::new());

    let bad = format!(
        "api:\n  tls:\n    certFile: {}\n    keyFile: {}\n    clientAuth: required\n\
         postgres:\n  tls:\n    certFile: /nonexistent/tls.crt\n    keyFile: {}\n    caFile: {}\n\
         members:\n  - {{name: pg-1, host: h, api: 'https://h:8000'}}\n",
        f.cert.display(),
        other.key.display(),
        f.key.display(),
        f.key.display(),
    );
    let found = problems(&base_yaml(d.path(), &bad));
    let expect = [
        "api.tls.keyFile: the private key in",
        "api.tls.clientAuth: required needs api.tls.caFile",
        "members[0].api: is an https:// address but there is no CA to verify it with",
        "postgres.tls.certFile: cannot read /nonexistent/tls.crt",
        "postgres.tls.caFile:",
    ];
    for e in expect {
        assert!(found.iter().any(|p| p.starts_with(e)), "no problem starting with {e:?} in {found:#?}");
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");

    let no_tls = base_yaml(d.path(), "postgres:\n  requireTls: true\n  parameters:\n    ssl: 'on'\n");
    assert_eq!(
        problems(&no_tls),
        vec![
            "postgres.parameters.ssl: is managed by pgwarden and cannot be set".to_string(),
            "postgres.requireTls: is true but postgres.tls is not set".to_string(),
        ]
    );
}

async fn serve(tls: Arc<ServerTls>) -> (u16, AbortOnDropHandle<()>) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/whoami",
        get(|ConnectInfo(peer): ConnectInfo<TlsPeer>| async move { Json(json!({"cert": peer.client_cert_serial})) }),
    );
    let listener = TlsListener::new(tcp, tls);
    let limits = crate::http::server::Limits::new(16, 16);
    let server = tokio::spawn(crate::http::server::serve(listener, app, limits, "test"));
    (port, AbortOnDropHandle::new(server))
}

fn spec(f: &Files, client_auth: ClientAuth) -> ApiTlsSpec {
    ApiTlsSpec { cert_file: f.cert.clone(), key_file: f.key.clone(), ca_file: Some(f.ca.clone()), client_auth }
}

fn https(port: u16) -> ApiClient {
    ApiClient::new(ApiTarget::parse(&format!("https://127.0.0.1:{port}")).unwrap())
}

#[tokio::test]
async fn https_with_the_right_ca_the_wrong_ca_and_plain_http() {
    let ca = TestCa::new("test CA");
    let f = files(&ca, &ca.server_cert());
    let (port, _server) = serve(Arc::new(ServerTls::load(&spec(&f, ClientAuth::None)).unwrap())).await;

    let answer: Value = https(port).with_tls_files(&f.ca, None).unwrap().get_json("/whoami").await.unwrap();
    assert_eq!(answer, json!({"cert": null}));

    let stranger = TestCa::new("another CA");
    let wrong = files(&stranger, &stranger.server_cert());
    let err = https(port).with_tls_files(&wrong.ca, None).unwrap().get_json::<Value>("/whoami").await.unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("TLS handshake with the instance manager at https://127.0.0.1") && text.contains("UnknownIssuer"),
        "{text}"
    );
    assert!(text.contains("hint: check that --ca-file"), "{text}");

    let err = https(port).get_json::<Value>("/whoami").await.unwrap_err();
    assert!(matches!(err, ClientError::TlsSetup { .. }), "{err}");

    let plain = ApiClient::new(ApiTarget::parse(&format!("http://127.0.0.1:{port}")).unwrap());
    let err = plain.get_raw("/whoami").await.unwrap_err();
    assert!(matches!(err, ClientError::Http { .. }), "{err}");
    assert!(err.to_string().contains("use an https:// address"), "{err}");
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections_and_a_bad_pair_is_refused() {
    let ca = TestCa::new("test CA");
    let first = ca.server_cert();
    let f = files(&ca, &first);
    let tls = Arc::new(ServerTls::load(&spec(&f, ClientAuth::None)).unwrap());
    let (port, _server) = serve(Arc::clone(&tls)).await;
    let served = || info(&tls.certificate()).unwrap().serial;
    assert_eq!(served(), serial_of(&first.cert_pem));
    let in_use = |purpose: &str| tls.in_use().into_iter().find(|(p, _)| *p == purpose).unwrap().1;
    let api = in_use("api");
    assert_eq!(
        (api.serial, api.reloads_total, api.reload_failures_total),
        (serial_of(&first.cert_pem), Some(0), Some(0))
    );
    assert_eq!(api.not_after, crate::testkit::not_after_of(&first.cert_pem));
    assert_eq!(api.key_file, Some(f.key.display().to_string()));
    assert_eq!(in_use("api_ca").not_after, crate::testkit::not_after_of(&ca.cert_pem));

    let second = ca.server_cert_valid_for(30);
    second.write(&f.cert, &f.key);
    tls.reload().unwrap();
    assert_eq!(served(), serial_of(&second.cert_pem));
    let api = in_use("api");
    assert_eq!((api.not_after, api.reloads_total), (crate::testkit::not_after_of(&second.cert_pem), Some(1)));
    tls.reload().unwrap();
    assert_eq!(in_use("api").reloads_total, Some(1), "unchanged files are no rotation");
    let client = https(port).with_tls_files(&f.ca, None).unwrap();
    client.get_json::<Value>("/whoami").await.unwrap();

    // Half a rotation: a new certificate beside the old key.
    let third = ca.server_cert();
    crate::paths::write_atomic(&f.cert, third.cert_pem.as_bytes(), 0o644).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    assert_eq!(served(), serial_of(&second.cert_pem), "the previous pair stays in use");
    client.get_json::<Value>("/whoami").await.unwrap();
    let api = in_use("api");
    assert_eq!(
        (api.serial.clone(), api.reloads_total, api.reload_failures_total),
        (serial_of(&second.cert_pem), Some(1), Some(1))
    );
    assert!(api.last_reload_error.as_deref().is_some_and(|e| e.contains("does not match")), "{api:?}");
    second.write(&f.cert, &f.key);
    tls.reload().unwrap();
    let api = in_use("api");
    assert_eq!((api.reloads_total, api.last_reload_error), (Some(1), None), "undone: no rotation, no refusal");
}

#[tokio::test]
async fn client_certificates_are_verified_against_the_ca() {
    let ca = TestCa::new("test CA");
    let f = files(&ca, &ca.server_cert());
    let (port, _server) = serve(Arc::new(ServerTls::load(&spec(&f, ClientAuth::Optional)).unwrap())).await;
    let client_pair = ca.client_cert("operator");
    let c = files(&ca, &client_pair);

    let with_cert = https(port).with_tls_files(&f.ca, Some((&c.cert, &c.key))).unwrap();
    let answer: Value = with_cert.get_json("/whoami").await.unwrap();
    assert_eq!(answer, json!({"cert": serial_of(&client_pair.cert_pem)}));

    let without: Value = https(port).with_tls_files(&f.ca, None).unwrap().get_json("/whoami").await.unwrap();
    assert_eq!(without, json!({"cert": null}), "optional: no certificate is fine");

    let stranger = TestCa::new("another CA");
    let s = files(&stranger, &stranger.client_cert("intruder"));
    let forged = https(port).with_tls_files(&f.ca, Some((&s.cert, &s.key))).unwrap();
    let refused = forged.get_json::<Value>("/whoami").await.unwrap_err();
    // The CLI says what happened, not that the manager may be stuck.
    let said = format!("{} {}", refused.message(), refused.hint().unwrap_or_default());
    assert!(said.contains("refused the TLS handshake (UnknownCA)"), "{said}");
    assert!(!said.contains("stuck"), "{said}");
}
