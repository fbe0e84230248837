#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Postgres over TLS with real processes: a replica streams with `sslmode=verify-full` (the
//! primary's `pg_stat_ssl` shows the walsender encrypted), clients with `sslmode=verify-full`
//! (psql and tokio-postgres) get in, plain TCP is refused under `requireTls`, Postgres' key
//! copy is the OS user's with mode 0600, and a rotated certificate is served after a reload.

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use instance_manager::testkit::{
    InstanceOptions, TEST_PASSWORD, TestCa, TestDir, TestInstance, TlsFiles, serial_of, served_serial, wait_for,
};
use instance_manager::tls::postgres::MakeRustlsConnect;

fn psql(port: u16, sslmode: &str, ca: &std::path::Path, sql: &str) -> std::process::Output {
    Command::new("/usr/lib/postgresql/15/bin/psql")
        .arg(format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode={sslmode} sslrootcert={} connect_timeout=5",
            ca.display()
        ))
        .args(["-XAtc", sql])
        .env("PGPASSWORD", TEST_PASSWORD)
        .env_remove("PGSSLMODE")
        .output()
        .expect("run psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_streams_over_verified_tls_and_plain_tcp_is_refused() {
    let root = TestDir::new();
    let ca = TestCa::new("pgwarden test CA");
    let first = ca.server_cert();
    let tls = TlsFiles::kubernetes(&root.path().join("tls"), &first, &ca);
    let mut opts = InstanceOptions::primary("pg-1");
    opts.tls = Some(tls.clone());
    opts.require_tls = true;
    let primary = TestInstance::start(root.path(), &opts);
    primary.wait_ready(Duration::from_secs(90)).await;
    let replica = TestInstance::start(root.path(), &InstanceOptions::replica_of("pg-2", &primary));
    replica.wait_ready(Duration::from_secs(120)).await;

    // The walsender serving pg-2 is encrypted, and pg-2 asked for verify-full.
    let db = primary.connect("postgres").await.unwrap();
    wait_for("pg-2's walsender over TLS", Duration::from_secs(30), || async {
        let rows = db
            .query(
                "SELECT s.ssl, s.version FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
                 WHERE r.application_name = 'pg-2'",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        match rows.first() {
            Some(r) if r.get::<_, bool>(0) => Ok(r.get::<_, Option<String>>(1)),
            Some(_) => Err("the walsender is not encrypted".to_string()),
            None => Err("pg-2 is not streaming yet".to_string()),
        }
    })
    .await;
    let conninfo: String =
        replica.connect("postgres").await.unwrap().query_one("SHOW primary_conninfo", &[]).await.unwrap().get(0);
    assert!(conninfo.contains("sslmode=verify-full") && conninfo.contains("sslrootcert="), "{conninfo}");
    let ssl: String = db.query_one("SHOW ssl_min_protocol_version", &[]).await.unwrap().get(0);
    assert_eq!(ssl, "TLSv1.2");

    // psql with verify-full gets in over TLS; without TLS it is refused by pg_hba.conf.
    let o =
        psql(primary.pg_port, "verify-full", &tls.ca_file, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "t");
    let o = psql(primary.pg_port, "disable", &tls.ca_file, "SELECT 1");
    assert!(!o.status.success(), "plain TCP must be refused");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no pg_hba.conf entry") && err.contains("no encryption"), "{err}");

    // tokio-postgres: verify-full works, plain TCP is refused, a wrong CA is refused.
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(primary.pg_port).user("postgres").password(TEST_PASSWORD).dbname("postgres");
    cfg.connect_timeout(Duration::from_secs(5));
    cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = cfg.connect(MakeRustlsConnect::verify_full(&tls.ca_file).unwrap()).await.unwrap();
    tokio::spawn(conn);
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0));
    let plain = cfg.clone().ssl_mode(tokio_postgres::config::SslMode::Disable).connect(tokio_postgres::NoTls).await;
    assert!(plain.is_err(), "plain TCP must be refused");
    let stranger = TestCa::new("somebody else's CA");
    let wrong_ca = root.path().join("wrong-ca.crt");
    stranger.write(&wrong_ca);
    let wrong = cfg.connect(MakeRustlsConnect::verify_full(&wrong_ca).unwrap()).await;
    assert!(wrong.is_err(), "a server certificate from another CA must be refused");

    // Postgres' copy of the key: its OS user's, 0600, outside the data directory.
    let key = primary.run_dir().join("tls/server.key");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "{}", key.display());
    let postgres_uid = nix::unistd::User::from_name("postgres").unwrap().unwrap().uid.as_raw();
    assert_eq!(meta.uid(), postgres_uid);

    // Rotation: copied again and reloaded; new connections get the new certificate.
    assert_eq!(served_serial(primary.pg_port, &tls.ca_file, true).await.unwrap(), serial_of(&first.cert_pem));
    let second = ca.server_cert();
    tls.rotate(&second, &ca);
    let want = serial_of(&second.cert_pem);
    for inst in [&primary, &replica] {
        wait_for(
            &format!("{}'s Postgres to serve the rotated certificate", inst.name),
            Duration::from_secs(30),
            || async {
                let serial = served_serial(inst.pg_port, &tls.ca_file, true).await?;
                if serial == want { Ok(()) } else { Err(format!("still serving {serial}")) }
            },
        )
        .await;
    }
    let o = psql(replica.pg_port, "verify-full", &tls.ca_file, "SELECT pg_is_in_recovery()");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "t", "{}", String::from_utf8_lossy(&o.stderr));
}
