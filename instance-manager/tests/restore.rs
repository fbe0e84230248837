#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Backup → restore with real Postgres and a `file://` store: point-in-time recovery to a
//! time, to an LSN and to the end of the archive gives exactly the rows committed before the
//! target, on a new timeline, writable; a replica built from the backup streams afterwards;
//! a target no backup can reach fails with a clear error and leaves no data directory.

use std::path::Path;
use std::time::Duration;

use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, wait_for};

const READY: Duration = Duration::from_secs(120);

fn archived_primary(root: &Path, store: &Path) -> TestInstance {
    let mut o = InstanceOptions::primary("pg-1");
    o.extra_yaml = format!("backup:\n  store:\n    destination: file://{}\n", store.display());
    TestInstance::start(root, &o)
}

async fn take_backup(inst: &TestInstance) {
    let client = inst.socket_client(Duration::from_secs(120));
    let _: serde_json::Value = client.post_json("/backup", &serde_json::json!({}), None).await.expect("backup");
}

async fn insert(c: &tokio_postgres::Client, from: i32, to: i32) {
    for id in from..=to {
        c.execute("INSERT INTO t (id) VALUES ($1)", &[&id]).await.unwrap();
    }
}

/// Creates table `t` with rows `1..=n`, takes a backup, and returns the connection.
async fn rows_then_backup(pg: &TestInstance, n: i32) -> tokio_postgres::Client {
    let c = pg.connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE t (id int primary key)").await.unwrap();
    insert(&c, 1, n).await;
    take_backup(pg).await;
    c
}

async fn rows(inst: &TestInstance) -> (i64, i32) {
    let c = inst.connect("postgres").await.unwrap();
    let row = c.query_one("SELECT count(*), coalesce(max(id), 0) FROM t", &[]).await.unwrap();
    (row.get(0), row.get(1))
}

/// Switches WAL and waits until the segment holding everything so far is archived.
async fn archive_everything(inst: &TestInstance) {
    inst.switch_wal_and_wait_archived(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_recovery_restores_exactly_the_rows_before_the_target() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let pg = archived_primary(root.path(), &store);
    pg.wait_ready(READY).await;
    let c = rows_then_backup(&pg, 100).await;

    insert(&c, 101, 150).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let time: String = c
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", &[])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    insert(&c, 151, 200).await;
    let lsn: String = c.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await.unwrap().get(0);
    insert(&c, 201, 250).await;
    archive_everything(&pg).await;

    // To a time: rows 1..150.
    let by_time =
        TestInstance::recovered(root.path(), "pit-time", &store, &format!("    target:\n      time: '{time}'\n"));
    // To an LSN: rows 1..200.
    let by_lsn = TestInstance::recovered(root.path(), "pit-lsn", &store, &format!("    target:\n      lsn: '{lsn}'\n"));
    by_time.wait_ready(READY).await;
    by_lsn.wait_ready(READY).await;
    assert_eq!(rows(&by_time).await, (150, 150), "recovery to {time}");
    assert_eq!(rows(&by_lsn).await, (200, 200), "recovery to {lsn}");
    for inst in [&by_time, &by_lsn] {
        let st = inst.status().await.unwrap();
        assert_eq!(st.role, "primary");
        assert_eq!(st.timeline, Some(2), "{} promoted on a new timeline", inst.name);
        let w = inst.connect("postgres").await.unwrap();
        w.execute("INSERT INTO t (id) VALUES (100000)", &[]).await.expect("the recovered cluster accepts writes");
        assert!(!inst.data_dir().join("pgwarden-recovery.conf").exists());
    }
    drop((by_time, by_lsn));

    // To the end of the archive: everything.
    let full = TestInstance::recovered(root.path(), "pit-end", &store, "");
    full.wait_ready(READY).await;
    assert_eq!(rows(&full).await, (250, 250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_built_from_the_backup_streams_afterwards() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let pg = archived_primary(root.path(), &store);
    pg.wait_ready(READY).await;
    let c = rows_then_backup(&pg, 50).await;
    insert(&c, 51, 80).await;
    archive_everything(&pg).await;

    let mut o = InstanceOptions::replica_of("pg-2", &pg);
    o.extra_yaml = format!(
        "backup:\n  store:\n    destination: file://{}\nbootstrap:\n  replicaSource: backup\n",
        store.display()
    );
    let replica = TestInstance::start(root.path(), &o);
    replica.wait_ready(READY).await;
    insert(&c, 81, 100).await;
    wait_for("rows streamed to the replica", Duration::from_secs(30), || async {
        let n = rows(&replica).await;
        if n == (100, 100) { Ok(()) } else { Err(format!("{n:?}")) }
    })
    .await;
    assert!(replica.log().contains("restored from a base backup"), "the replica was not built from the backup");
    let st = wait_for("the replica streams", Duration::from_secs(30), || async {
        let st = replica.status().await?;
        match st.wal_receiver.as_ref().map(|w| w.status.as_str()) {
            Some("streaming") => Ok(st),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(st.role, "replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_before_every_backup_fails_clearly_and_leaves_no_data_directory() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let pg = archived_primary(root.path(), &store);
    pg.wait_ready(READY).await;
    take_backup(&pg).await;
    let mut r =
        TestInstance::recovered(root.path(), "too-early", &store, "    target:\n      time: '2001-01-01T00:00:00Z'\n");
    let code = r.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(3), "log:\n{}", r.log_tail(20));
    let log = r.log();
    assert!(log.contains("no backup ended before 2001-01-01T00:00:00Z"), "log:\n{}", r.log_tail(20));
    assert!(!r.data_dir().exists(), "a data directory was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_backup_restores_only_with_its_key() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let key = root.path().join("backup.key");
    std::fs::write(&key, format!("{}\n", "c3".repeat(32))).unwrap();
    let encryption = format!("      encryption:\n        keyFile: {}\n", key.display());
    let mut o = InstanceOptions::primary("pg-1");
    o.extra_yaml = format!(
        "backup:\n  store:\n    destination: file://{}\n    encryption:\n      keyFile: {}\n",
        store.display(),
        key.display()
    );
    let pg = TestInstance::start(root.path(), &o);
    pg.wait_ready(READY).await;
    let c = rows_then_backup(&pg, 40).await;
    insert(&c, 41, 60).await;
    archive_everything(&pg).await;
    // Nothing readable in the stored data.
    let data = std::fs::read_dir(store.join("test/base")).unwrap().flatten().next().unwrap().path();
    let tar = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("data.tar"))
        .unwrap();
    assert!(std::fs::read(tar.path()).unwrap().starts_with(b"PGWENC01"), "the backup data is not encrypted");

    let with_key = TestInstance::recovered(root.path(), "with-key", &store, &encryption);
    with_key.wait_ready(READY).await;
    assert_eq!(rows(&with_key).await, (60, 60));

    let mut without = TestInstance::recovered(root.path(), "without-key", &store, "");
    assert_eq!(without.wait_exit(Duration::from_secs(60)).await, Some(3), "{}", without.log_tail(20));
    assert!(without.log().contains("encryption.keyFile"), "{}", without.log_tail(20));
    assert!(!without.data_dir().exists());
}
