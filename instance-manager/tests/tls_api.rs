#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The HTTP API over TLS, with a real manager: the CLI verifies the server against the CA it
//! is given (and refuses the wrong one), plain HTTP to the TLS port gets nothing, a
//! certificate rotated the Kubernetes way is served without a restart (a broken rotation is
//! refused and the previous certificate kept), and a client certificate signed by the CA
//! authorises a mutating endpoint without a bearer token. The certificates' expiry is in the
//! metrics, `/status` and `diagnose`, and follows a rotation.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use instance_manager::testkit::{
    CertKey, InstanceOptions, TestCa, TestDir, TestInstance, TlsFiles, manager_binary, not_after_of, serial_of,
    served_serial, wait_for,
};

fn cli(api: &str, ca: Option<&Path>, client: Option<(&Path, &Path)>, args: &[&str]) -> Output {
    let mut cmd = Command::new(manager_binary());
    cmd.arg("--api").arg(api);
    if let Some(ca) = ca {
        cmd.arg("--ca-file").arg(ca);
    }
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    for var in ["PGWARDEN_CA_FILE", "PGWARDEN_CERT_FILE", "PGWARDEN_KEY_FILE", "PGWARDEN_TOKEN_FILE", "PGWARDEN_API"] {
        cmd.env_remove(var);
    }
    cmd.args(args).output().expect("run the CLI")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_api_verifies_rotates_and_takes_client_certificates() {
    let root = TestDir::new();
    let ca = TestCa::new("pgwarden test CA");
    let first = ca.server_cert();
    let tls = TlsFiles::kubernetes(&root.path().join("tls"), &first, &ca);
    let mut opts = InstanceOptions::primary("pg-1");
    opts.tls = Some(tls.clone());
    let inst = TestInstance::start(root.path(), &opts);
    assert!(inst.api_url.starts_with("https://"), "{}", inst.api_url);
    inst.wait_ready(Duration::from_secs(90)).await;
    let port: u16 = inst.api_url.rsplit(':').next().unwrap().parse().unwrap();
    let api = inst.api_url.as_str();

    // The right CA.
    let o = cli(api, Some(&tls.ca_file), None, &["status", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    assert_eq!(status["name"], "pg-1");

    // The wrong CA.
    let stranger = TestCa::new("somebody else's CA");
    let wrong_ca = root.path().join("wrong-ca.crt");
    stranger.write(&wrong_ca);
    let o = cli(api, Some(&wrong_ca), None, &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("TLS handshake with the instance manager at https://127.0.0.1"), "{err}");
    assert!(err.contains("UnknownIssuer") && err.contains("hint: check that --ca-file"), "{err}");

    // No CA at all, and plain HTTP to the TLS port.
    let o = cli(api, None, None, &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no CA was given"), "{}", text(&o));
    let plain = api.replace("https://", "http://");
    let o = cli(&plain, None, None, &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("use an https:// address"), "{}", text(&o));

    // A client certificate signed by the CA authorises a mutating endpoint (no token is
    // configured at all); without one the endpoint is refused.
    let client = ca.client_cert("on-call");
    let (client_cert, client_key) = (root.path().join("client.crt"), root.path().join("client.key"));
    client.write(&client_cert, &client_key);
    let o = cli(api, Some(&tls.ca_file), None, &["pause"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("(HTTP 401)"), "{}", text(&o));
    let o = cli(api, Some(&tls.ca_file), Some((&client_cert, &client_key)), &["pause"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"paused\": true"), "{}", text(&o));
    assert!(inst.log().contains(&serial_of(&client.cert_pem)), "the log names the client certificate");
    // A certificate from another CA does not get through the handshake.
    let intruder = stranger.client_cert("intruder");
    let (bad_cert, bad_key) = (root.path().join("intruder.crt"), root.path().join("intruder.key"));
    intruder.write(&bad_cert, &bad_key);
    let o = cli(api, Some(&tls.ca_file), Some((&bad_cert, &bad_key)), &["resume"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Rotation, the kubelet's way: one swap of ..data. New connections get the new
    // certificate; the manager is the same process.
    let pid = inst.manager_pid();
    assert_eq!(served_serial(port, &tls.ca_file, false).await.unwrap(), serial_of(&first.cert_pem));
    let second = ca.server_cert();
    tls.rotate(&second, &ca);
    let want = serial_of(&second.cert_pem);
    wait_for("the rotated certificate to be served", Duration::from_secs(20), || async {
        let serial = served_serial(port, &tls.ca_file, false).await?;
        if serial == want { Ok(()) } else { Err(format!("still serving {serial}")) }
    })
    .await;
    assert_eq!(inst.manager_pid(), pid);
    assert_eq!(inst.get("/healthz").await.unwrap().0, 200);

    // A broken rotation (a certificate with another certificate's key) is refused and the
    // current certificate stays.
    let third = ca.server_cert();
    tls.rotate(&CertKey { cert_pem: third.cert_pem.clone(), key_pem: first.key_pem.clone() }, &ca);
    wait_for("the broken rotation to be refused", Duration::from_secs(20), || async {
        if inst.log().contains("the rotated API certificate is refused") { Ok(()) } else { Err("not yet".to_string()) }
    })
    .await;
    assert_eq!(served_serial(port, &tls.ca_file, false).await.unwrap(), want);
    let o = cli(api, Some(&tls.ca_file), None, &["status", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A lease cluster whose members reach each other's API over HTTPS (verified with
/// api.tls.caFile) and each other's Postgres with verify-full: the switchover reads the
/// target's /status over HTTPS, and the former primary is rewound over TLS (the CHECKPOINT on
/// the new primary and pg_rewind's own connection) before it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_between_https_members() {
    use instance_manager::testkit::{FAST, TestCluster};
    let certs = TestDir::new();
    let ca = TestCa::new("pgwarden test CA");
    let tls = TlsFiles::kubernetes(&certs.path().join("tls"), &ca.server_cert(), &ca);
    let cluster = TestCluster::start_with(2, FAST, |o| {
        o.tls = Some(tls.clone());
        o.require_tls = true;
    });
    let all = ["pg-1", "pg-2"];
    assert_eq!(cluster.wait_primary(&all, Duration::from_secs(120)).await, "pg-1");
    cluster.get("pg-2").wait_ready(Duration::from_secs(120)).await;
    let socket = format!("unix://{}/manager.sock", cluster.get("pg-1").run_dir().display());
    let o = cli(&socket, None, None, &["switchover", "--to", "pg-2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(cluster.wait_primary(&all, Duration::from_secs(60)).await, "pg-2");
    let former = cluster.get("pg-1");
    wait_for("pg-1 to follow pg-2 over TLS", Duration::from_secs(90), || async {
        let st = former.status().await?;
        match (st.role.as_str(), &st.received_lsn) {
            ("replica", Some(_)) => Ok(()),
            _ => Err(format!("role {} received {:?}", st.role, st.received_lsn)),
        }
    })
    .await;
}

/// The value of `name{purpose="<purpose>"}` in a Prometheus exposition.
fn by_purpose(text: &str, name: &str, purpose: &str) -> Option<f64> {
    let series = format!("{name}{{purpose=\"{purpose}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.parse().ok())
}

const EXPIRY: &str = "pgwarden_tls_certificate_expiration_timestamp_seconds";

/// Waits until the API's and Postgres' certificates in the metrics expire at `want`; the
/// exposition seen last.
async fn wait_expiry(inst: &TestInstance, want: jiff::Timestamp, what: &str) -> String {
    let want = want.as_second() as f64;
    wait_for(what, Duration::from_secs(30), || async {
        let text = inst.scrape().await?;
        let seen = (by_purpose(&text, EXPIRY, "api"), by_purpose(&text, EXPIRY, "postgres"));
        if seen == (Some(want), Some(want)) { Ok(text) } else { Err(format!("api, postgres: {seen:?}, want {want}")) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_is_in_metrics_status_and_diagnose_and_follows_a_rotation() {
    let root = TestDir::new();
    let ca = TestCa::new("pgwarden test CA");
    let first = ca.server_cert_valid_for(60);
    let tls = TlsFiles::kubernetes(&root.path().join("tls"), &first, &ca);
    let mut opts = InstanceOptions::primary("pg-1");
    opts.tls = Some(tls.clone());
    let inst = TestInstance::start(root.path(), &opts);
    inst.wait_ready(Duration::from_secs(90)).await;

    let metrics =
        wait_expiry(&inst, not_after_of(&first.cert_pem), "the first certificate's expiry in the metrics").await;
    let ca_expiry = Some(not_after_of(&ca.cert_pem).as_second() as f64);
    assert_eq!(by_purpose(&metrics, EXPIRY, "api_ca"), ca_expiry, "{metrics}");
    assert_eq!(by_purpose(&metrics, EXPIRY, "postgres_ca"), ca_expiry, "{metrics}");
    assert_eq!(by_purpose(&metrics, "pgwarden_tls_certificate_reloads_total", "api"), Some(0.0), "{metrics}");
    let status = inst.status().await.unwrap();
    let api = &status.tls["api"];
    assert_eq!(
        (api.serial.as_str(), api.not_after),
        (serial_of(&first.cert_pem).as_str(), not_after_of(&first.cert_pem))
    );
    assert_eq!(status.tls["postgres"].file, tls.cert_file.display().to_string());

    // A rotation to a certificate that expires in three days: the metrics follow for both the
    // API (reloaded in place) and Postgres (copied and reloaded), and diagnose warns.
    let second = ca.server_cert_valid_for(3);
    tls.rotate(&second, &ca);
    let metrics =
        wait_expiry(&inst, not_after_of(&second.cert_pem), "the rotated certificate's expiry in the metrics").await;
    assert_eq!(by_purpose(&metrics, "pgwarden_tls_certificate_reloads_total", "api"), Some(1.0), "{metrics}");
    assert_eq!(by_purpose(&metrics, "pgwarden_tls_certificate_reload_failures_total", "api"), Some(0.0), "{metrics}");

    let o = cli(&inst.socket_url(), None, None, &["diagnose", "-o", "json"]);
    let checks: Vec<serde_json::Value> =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let verdict = |name: &str| {
        let c = checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name} check: {}", text(&o)));
        (c["outcome"].as_str().unwrap_or_default().to_owned(), c["detail"].as_str().unwrap_or_default().to_owned())
    };
    for name in ["api certificate", "postgres certificate"] {
        let (outcome, detail) = verdict(name);
        assert_eq!(outcome, "warn", "{name}: {detail}");
        assert!(detail.contains(&serial_of(&second.cert_pem)) && detail.contains("left"), "{name}: {detail}");
    }
    for name in ["api CA", "postgres CA"] {
        assert_eq!(verdict(name).0, "ok", "{name}: {}", text(&o));
    }
}
