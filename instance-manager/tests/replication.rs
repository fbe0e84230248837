#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A primary and two streaming replicas, bootstrapped from empty directories by real
//! instance managers: rows written on the primary arrive on both replicas, and `/status`,
//! the role endpoints and the CLI agree on who is who.

use std::time::Duration;

use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, wait_for};

const READY: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_and_two_replicas_stream_rows() {
    let root = TestDir::new();
    let primary = TestInstance::start(root.path(), &InstanceOptions::primary("pg-1"));
    primary.wait_ready(READY).await;
    let r1 = TestInstance::start(root.path(), &InstanceOptions::replica_of("pg-2", &primary));
    let r2 = TestInstance::start(root.path(), &InstanceOptions::replica_of("pg-3", &primary));
    r1.wait_ready(READY).await;
    r2.wait_ready(READY).await;

    // The application database and owner exist; rows flow to both replicas.
    let app = primary.connect("app").await.expect("connect to app on the primary");
    app.batch_execute("CREATE TABLE t (id int primary key); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .expect("write on the primary");
    for r in [&r1, &r2] {
        wait_for(&format!("rows on {}", r.name), Duration::from_secs(30), || async {
            let c = r.connect("app").await?;
            let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await.map_err(|e| e.to_string())?.get(0);
            if n == 100 { Ok(()) } else { Err(format!("{n} rows")) }
        })
        .await;
        let c = r.connect("app").await.expect("connect to replica");
        let err = c.batch_execute("INSERT INTO t VALUES (1000)").await.expect_err("replicas refuse writes");
        assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION), "{err:?}");
    }

    // /status on the primary lists both replicas streaming; the replicas report their receiver.
    let st = wait_for("both replicas in pg_stat_replication", Duration::from_secs(30), || async {
        let st = primary.status().await?;
        let streaming = st.replication.iter().filter(|p| p.state == "streaming").count();
        if streaming == 2 { Ok(st) } else { Err(format!("{:?}", st.replication)) }
    })
    .await;
    assert_eq!(st.role, "primary");
    assert_eq!(st.timeline, Some(1));
    assert!(st.current_lsn.is_some());
    let names: Vec<&str> = st.replication.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["pg-2", "pg-3"]);
    let rs = r1.status().await.expect("replica status");
    assert_eq!(rs.role, "replica");
    assert_eq!(rs.in_recovery, Some(true));
    assert_eq!(rs.timeline, Some(1));
    assert!(rs.received_lsn.is_some() && rs.replayed_lsn.is_some());
    assert_eq!(rs.wal_receiver.as_ref().map(|w| w.status.as_str()), Some("streaming"));
    assert_eq!(rs.system_identifier, st.system_identifier, "a clone shares the primary's system identifier");

    // Role endpoints for load balancers.
    assert_eq!(primary.get("/primary").await.expect("get").0, 200);
    assert_eq!(primary.get("/replica").await.expect("get").0, 503);
    assert_eq!(r1.get("/primary").await.expect("get").0, 503);
    assert_eq!(r1.get("/replica").await.expect("get").0, 200);

    // The CLI prints the same document /status serves.
    let out = std::process::Command::new(instance_manager::testkit::manager_binary())
        .args(["--api", &r2.api_url, "status", "-o", "json"])
        .output()
        .expect("run the CLI");
    assert!(out.status.success(), "cli failed: {}", String::from_utf8_lossy(&out.stderr));
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cli prints JSON");
    let api = r2.status().await.expect("status");
    assert_eq!(cli["name"], "pg-3");
    assert_eq!(cli["role"], api.role.as_str());
    assert_eq!(cli["timeline"], serde_json::json!(api.timeline));
    assert_eq!(cli["system_identifier"], serde_json::json!(api.system_identifier));
    let table = std::process::Command::new(instance_manager::testkit::manager_binary())
        .args(["--api", &primary.api_url, "status"])
        .output()
        .expect("run the CLI");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("pg-1") && table.contains("pg-2") && table.contains("pg-3"), "table:\n{table}");
}
