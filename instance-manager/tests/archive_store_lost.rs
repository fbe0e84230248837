#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! An archive that disappears is noticed: the `file://` archive is moved away while the
//! primary runs; the manager refuses to archive into the emptied place (WAL waits in
//! `pg_wal`) instead of starting a new archive there, and says so in its log, `/status` and
//! the metrics, and a base backup is refused at once; once the archive is back, archiving
//! resumes by itself.

use std::time::Duration;

use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_moved_away_is_refused_and_reported_until_it_is_back() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let mut o = InstanceOptions::primary("pg-1");
    o.extra_yaml = format!("backup:\n  store:\n    destination: file://{}\n", store.display());
    let pg = TestInstance::start(root.path(), &o);
    pg.wait_ready(Duration::from_secs(120)).await;
    pg.switch_wal_and_wait_archived(Duration::from_secs(60)).await;

    let moved = root.path().join("archive.moved");
    std::fs::rename(&store, &moved).unwrap();
    let c = pg.connect("postgres").await.unwrap();
    let wal: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[]).await.unwrap().get(0);
    c.query_one("SELECT pg_switch_wal()", &[]).await.unwrap();

    let problem = wait_for("the lost archive reported in /status", Duration::from_secs(60), || async {
        let st = pg.status().await?;
        match st.archive.and_then(|a| a.store_problem) {
            Some(p) => Ok(p),
            None => Err("no store problem".into()),
        }
    })
    .await;
    assert!(problem.contains("lost its identity") && problem.contains("cluster.json"), "{problem}");
    let metrics = pg.scrape().await.unwrap();
    assert!(metrics.contains("pgwarden_archive_store_lost 1"), "{metrics}");
    // Nothing was archived into the emptied place, and the segment waits in pg_wal.
    let wal_dir = store.join("test/wal");
    assert!(!wal_dir.exists(), "a new archive was started in {}", store.display());
    assert!(pg.data_dir().join("pg_wal/archive_status").join(format!("{wal}.ready")).exists());
    let log = pg.log();
    assert_eq!(log.matches("WAL archive lost").count(), 1, "logged once per change of state:\n{}", pg.log_tail(20));
    // A base backup is refused at once, and writes nothing into the emptied place either.
    let client = pg.socket_client(Duration::from_secs(60));
    let refused = client.post_json::<_, serde_json::Value>("/backup", &serde_json::json!({}), None).await;
    let e = refused.expect_err("a backup into a store that lost its identity");
    assert!(e.to_string().contains("lost its identity"), "{e}");
    assert!(!store.join("test/base").exists(), "a backup was started in {}", store.display());

    // The archive comes back: the waiting segment is archived and the alarm clears.
    std::fs::remove_dir_all(&store).ok();
    std::fs::rename(&moved, &store).unwrap();
    pg.wait_archived(&wal, Duration::from_secs(90)).await;
    let st = pg.status().await.unwrap();
    assert_eq!(st.archive.and_then(|a| a.store_problem), None);
    assert!(pg.log().contains("WAL archive is sound again"));
}
