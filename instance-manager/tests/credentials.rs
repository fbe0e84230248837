#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Rotated password files: the new application password lets in and the old one out, without
//! a restart; a replica reconnects with a rotated replication password; no secret value, old
//! or new, appears in any log or in `/status`.

use std::time::Duration;

use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, wait_for};

/// What the testkit writes into every password file.
const TEST_PASSWORD: &str = "test-secret-pw";

const READY: Duration = Duration::from_secs(90);

async fn login(inst: &TestInstance, user: &str, password: &str) -> Result<(), String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(inst.pg_port).user(user).password(password).dbname("app");
    cfg.connect_timeout(Duration::from_secs(3));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(|e| format!("{e:?}"))?;
    tokio::spawn(conn);
    client.query_one("SELECT 1", &[]).await.map(|_| ()).map_err(|e| e.to_string())
}

fn rotate(root: &std::path::Path, secret: &str, value: &str) {
    // As Kubernetes does it: the whole file is replaced at once.
    instance_manager::paths::write_atomic(&root.join("secrets").join(secret), format!("{value}\n").as_bytes(), 0o600)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_passwords_apply_without_a_restart_and_never_leak() {
    let root = TestDir::new();
    let primary = TestInstance::start(root.path(), &InstanceOptions::primary("pg-1"));
    primary.wait_ready(READY).await;
    let replica = TestInstance::start(root.path(), &InstanceOptions::replica_of("pg-2", &primary));
    replica.wait_ready(READY).await;
    login(&primary, "app", TEST_PASSWORD).await.expect("the first app password works");
    let pid = primary.postgres_pid();

    // The application password.
    let new_app = "rotated-app-Pw-7731";
    rotate(root.path(), "app", new_app);
    wait_for("the new app password to be accepted", Duration::from_secs(30), || async {
        login(&primary, "app", new_app).await
    })
    .await;
    let old = login(&primary, "app", TEST_PASSWORD).await;
    let old = old.expect_err("the old password still works");
    assert!(old.contains("28P01"), "the old password failed for another reason: {old}");
    assert_eq!(primary.postgres_pid(), pid, "postgres was restarted");

    // The replication password: after its walsender is cut, the replica reconnects with the
    // new password from its rotated file.
    let new_repl = "rotated-repl-Pw-5512";
    rotate(root.path(), "replication", new_repl);
    let c = primary.connect("postgres").await.unwrap();
    wait_for("the new replication password in Postgres", Duration::from_secs(30), || async {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1").port(primary.pg_port).user("streaming_replica").password(new_repl).dbname("postgres");
        cfg.connect(tokio_postgres::NoTls).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    c.batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication").await.unwrap();
    c.batch_execute("CREATE TABLE after_rotation (x int); INSERT INTO after_rotation VALUES (1)").await.unwrap();
    wait_for("the replica to stream again", Duration::from_secs(60), || async {
        let r = replica.connect("postgres").await?;
        r.query_one("SELECT x FROM after_rotation", &[]).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;

    // No secret anywhere a user or a log collector can see.
    let status = format!("{}{}", primary.get("/status").await.unwrap().1, replica.get("/status").await.unwrap().1);
    let logs = format!("{}{}", primary.log(), replica.log());
    for secret in [TEST_PASSWORD, new_app, new_repl] {
        assert!(!logs.contains(secret), "{secret:?} appears in a manager log");
        assert!(!status.contains(secret), "{secret:?} appears in /status");
    }
}
