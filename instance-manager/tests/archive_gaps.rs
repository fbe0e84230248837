#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! No gap in the WAL archive after a failover, and none passed over by a restore, with real
//! Postgres and a `file://` store:
//! - the primary's manager is killed mid-burst (Postgres commits on until the deadman stops
//!   it), a replica takes over: the standbys archived what they received, so the old timeline
//!   is whole up to the branch point, and a restore to the end has every acknowledged row;
//! - the primary dies right after finishing a segment (nothing of the next one written, the
//!   switch point exactly at a segment boundary): that last whole segment still reaches the
//!   archive from the standbys;
//! - the standby that takes over never marked that last whole segment for archiving (the
//!   old primary died while streaming the rest of the segment after the switch record): the
//!   new primary finds it unmarked and archives it;
//! - a segment deleted from the middle of the archive makes a restore to the end (and to a
//!   target past it) fail naming the segment instead of promoting before it, and the audit
//!   reports it in `/status` and the metrics.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use instance_manager::api::StoreSpec;
use instance_manager::archive::layout::{WalName, parse_wal_name};
use instance_manager::archive::{gaps, inventory, store};
use instance_manager::testkit::{FAST, InstanceOptions, TestCluster, TestDir, TestInstance, wait_for};

const READY: Duration = Duration::from_secs(120);

fn store_yaml(store: &Path) -> String {
    format!("backup:\n  store:\n    destination: file://{}\n", store.display())
}

async fn take_backup(inst: &TestInstance) -> serde_json::Value {
    let client = inst.socket_client(Duration::from_secs(120));
    client.post_json("/backup", &serde_json::json!({}), None).await.expect("backup")
}

async fn max_id(inst: &TestInstance, db: &str) -> Result<i64, String> {
    let c = inst.connect(db).await?;
    let row = c.query_one("SELECT coalesce(max(id), 0)::int8 FROM t", &[]).await.map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// On the primary `p`: rows 1..=1000 in a new table `t`, a base backup, rows 1001..=2000, and
/// `pg_switch_wal()`. Returns the segment switched away from and where the next one begins.
async fn rows_backup_and_a_switch(p: &TestInstance) -> (String, u64) {
    let c = p.connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE t (id int8 primary key); INSERT INTO t SELECT generate_series(1, 1000)")
        .await
        .unwrap();
    take_backup(p).await;
    c.batch_execute("INSERT INTO t SELECT generate_series(1001, 2000)").await.unwrap();
    let last: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[]).await.unwrap().get(0);
    let end: String = c.query_one("SELECT pg_switch_wal()::text", &[]).await.unwrap().get(0);
    let end = end.parse::<instance_manager::api::Lsn>().unwrap().as_u64();
    (last, end.div_ceil(16 << 20) * (16 << 20))
}

/// The gaps in the archive at `dir` from the oldest backup on.
async fn archive_gaps(dir: &Path) -> Result<gaps::GapScan, String> {
    let spec = StoreSpec {
        destination: format!("file://{}", dir.display()),
        s3: None,
        gcs: None,
        azure: None,
        encryption: None,
    };
    let s = store::open(&spec, "test", "test").map_err(|e| e.to_string())?;
    let backups = instance_manager::backup::catalog::list(&s).await.map_err(|e| e.to_string())?;
    let oldest = backups.first().ok_or("no backup")?;
    let Some(WalName::Segment(start)) = parse_wal_name(&oldest.start_wal) else { return Err("start wal".into()) };
    let (archived, spans) = inventory::segments(&s).await.map_err(|e| e.to_string())?;
    gaps::scan(start, oldest.segment_size, &spans, &archived).ok_or_else(|| format!("{spans:?}"))
}

/// The first scan of the archive at `store` without gaps, looking until `timeout`.
async fn wait_for_whole_archive(store: &Path, timeout: Duration) -> Option<gaps::GapScan> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        match archive_gaps(store).await {
            Ok(s) if s.missing_count == 0 => return Some(s),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    None
}

/// For a failure message: each member's pending and finished archive marks, and its log lines
/// about the archive.
fn archive_diagnostics(cluster: &TestCluster) -> String {
    let mut out = String::new();
    for name in cluster.names() {
        let inst = cluster.get(&name);
        let status = inst.data_dir().join("pg_wal/archive_status");
        let mut marks: Vec<String> = std::fs::read_dir(&status)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        marks.sort();
        out.push_str(&format!("--- {name}: archive_status {marks:?}\n"));
        for line in inst.log().lines().filter(|l| l.contains("archive") || l.contains("wal-archive")).take(40) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every directory under `dir` (and itself) is 0700, every file 0600.
fn assert_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut pending = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = pending.pop() {
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                pending.push(e.path());
            } else {
                files += 1;
                assert_eq!(e.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{}", e.path().display());
            }
        }
    }
    assert!(files > 3, "only {files} files in {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_mid_burst_leaves_no_gap_and_a_restore_to_the_end_has_every_acknowledged_row() {
    let archive = TestDir::new();
    let store = archive.path().join("archive");
    let yaml = format!("{}synchronous: {{number: 1}}\n", store_yaml(&store));
    let cluster = TestCluster::start_with(3, FAST, |o| o.extra_yaml.push_str(&yaml));
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2", "pg-3"], READY).await, "pg-1");
    let p = cluster.get("pg-1");
    p.connect("postgres").await.unwrap().batch_execute("CREATE TABLE t (id int8 primary key)").await.unwrap();
    take_backup(p).await;

    // The burst: rounds of (200 rows; pg_switch_wal()), acknowledged rows counted.
    let acked = Arc::new(AtomicI64::new(0));
    let c = p.connect("postgres").await.unwrap();
    let counter = Arc::clone(&acked);
    let writer = tokio::spawn(async move {
        for round in 0..30_i64 {
            let (from, to) = (round * 200 + 1, round * 200 + 200);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&from, &to];
            let insert = c.execute("INSERT INTO t SELECT generate_series($1::int8, $2::int8)", &params);
            if tokio::time::timeout(Duration::from_secs(20), insert).await.map(|r| r.is_ok()) != Ok(true) {
                return round;
            }
            counter.store(to, Ordering::SeqCst);
            if c.query_one("SELECT pg_switch_wal()", &[]).await.is_err() {
                return round;
            }
            // Paced, so that the burst outlasts the deadman's delay after the kill below on a
            // fast machine too (otherwise all rounds can finish before Postgres is stopped).
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        30
    });
    wait_for("8 rounds acknowledged", Duration::from_secs(120), || async {
        let n = acked.load(Ordering::SeqCst);
        if n >= 1600 { Ok(()) } else { Err(format!("{n} rows")) }
    })
    .await;
    // Only the manager dies: Postgres commits on until the deadman stops it.
    let pid = nix::unistd::Pid::from_raw(p.manager_pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let rounds = tokio::time::timeout(Duration::from_secs(120), writer).await.expect("the writer stops").unwrap();
    let acked = acked.load(Ordering::SeqCst);
    assert!(rounds < 30, "the old primary kept accepting writes for every round");

    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(90)).await;
    let n = cluster.get(&new);
    let on_new = max_id(n, "postgres").await.unwrap();
    assert!(on_new >= acked, "the new primary has {on_new} rows, {acked} were acknowledged");
    n.connect("postgres").await.unwrap().execute("INSERT INTO t VALUES (1000000)", &[]).await.unwrap();
    n.switch_wal_and_wait_archived(Duration::from_secs(60)).await;

    // Every segment of the old timeline up to the branch point reaches the archive. (A
    // generous deadline: Postgres' archiver waits up to a minute after failed attempts, and a
    // loaded machine can make the first ones time out.)
    let Some(scan) = wait_for_whole_archive(&store, Duration::from_secs(240)).await else {
        panic!("the archive still has gaps: {:?}\n{}", archive_gaps(&store).await, archive_diagnostics(&cluster));
    };
    let history = std::fs::read_dir(store.join("test/wal"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".history"))
        .count();
    assert!(history >= 1, "no timeline history archived");
    let to = scan.to.expect("checked up to a segment");
    assert!(to.timeline >= 2, "checked only to {}", to.file_name());

    // A restore to the end from the archive has every acknowledged row and the marker.
    let root = TestDir::new();
    let r = TestInstance::recovered(root.path(), "restored", &store, "");
    r.wait_ready(Duration::from_secs(300)).await;
    let c = r.connect("postgres").await.unwrap();
    let row = c.query_one("SELECT count(*) FILTER (WHERE id <= $1), max(id) FROM t", &[&acked]).await.unwrap();
    let (count, max): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(count, acked, "acknowledged rows restored ({rounds} rounds)");
    assert_eq!(max, 1_000_000, "the new primary's writes after the failover are restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_lost_right_after_a_segment_switch_leaves_no_gap_at_the_branch_point() {
    let archive = TestDir::new();
    let store = archive.path().join("archive");
    let mut cluster =
        TestCluster::start_with(3, FAST, |o| o.extra_yaml.push_str(&store_yaml(&archive.path().join("archive"))));
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2", "pg-3"], READY).await, "pg-1");

    // Finish the segment, wait until both standbys received all of it, then lose the whole
    // primary at once (manager and Postgres): the next segment never gets a byte.
    let (last, boundary) = rows_backup_and_a_switch(cluster.get("pg-1")).await;
    for r in ["pg-2", "pg-3"] {
        wait_for("the standby received the whole segment", Duration::from_secs(30), || async {
            let got = cluster.get(r).status().await?.received_lsn.map(|l| l.as_u64()).unwrap_or(0);
            if got >= boundary { Ok(()) } else { Err(format!("{r} received {got:X}, boundary {boundary:X}")) }
        })
        .await;
    }
    cluster.get_mut("pg-1").kill_all();

    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(90)).await;
    cluster.get(&new).switch_wal_and_wait_archived(Duration::from_secs(60)).await;
    let scan = wait_for("an archive without gaps", Duration::from_secs(60), || async {
        let scan = archive_gaps(&store).await?;
        if scan.missing_count == 0 { Ok(scan) } else { Err(format!("{scan:?} (last whole segment {last})")) }
    })
    .await;
    assert!(scan.to.is_some_and(|to| to.timeline >= 2), "{scan:?}");
    let dir = store.join("test/wal").join(&last[..16]);
    let whole = |n: &str| n.starts_with(&last) && !n.contains(".partial") && !n.contains(".diverged");
    let archived = std::fs::read_dir(&dir).unwrap().flatten().any(|e| whole(&e.file_name().to_string_lossy()));
    assert!(archived, "{last} is not in the archive");
}

/// The files in the archive directory of `name`'s timeline and log whose name starts with it.
fn archived_copies(store: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let dir = store.join("test/wal").join(&name[..16]);
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(name)).map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_segment_the_standby_never_marked_reaches_the_archive_after_its_promotion() {
    // A primary dying while it streams the zeros after a `pg_switch_wal()`: the standby has
    // the switch record (so it ends recovery at the next segment's start) but never finished
    // writing the segment, so Postgres never marks it for archiving there, and nothing at the
    // promotion does either (the switch point is a segment boundary: no `.partial`). That
    // race is simulated here exactly: the standby received the whole segment, then its mark
    // and the archived copy are removed before it takes over.
    let archive = TestDir::new();
    let store = archive.path().join("archive");
    let mut cluster = TestCluster::start_with(2, FAST, |o| o.extra_yaml.push_str(&store_yaml(&store)));
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2"], READY).await, "pg-1");
    let (last, boundary) = rows_backup_and_a_switch(cluster.get("pg-1")).await;
    let status = cluster.get("pg-2").data_dir().join("pg_wal/archive_status");
    wait_for("the standby received and archived the whole segment", Duration::from_secs(60), || async {
        let got = cluster.get("pg-2").status().await?.received_lsn.map(|l| l.as_u64()).unwrap_or(0);
        let done = status.join(format!("{last}.done")).exists();
        if got >= boundary && done { Ok(()) } else { Err(format!("received {got:X} of {boundary:X}, done {done}")) }
    })
    .await;

    cluster.get_mut("pg-1").kill_all();
    for mark in ["done", "ready"] {
        let _ = std::fs::remove_file(status.join(format!("{last}.{mark}")));
    }
    for copy in archived_copies(&store, &last) {
        std::fs::remove_file(copy).unwrap();
    }

    assert_eq!(cluster.wait_primary(&["pg-2"], Duration::from_secs(90)).await, "pg-2");
    let n = cluster.get("pg-2");
    n.connect("postgres").await.unwrap().execute("INSERT INTO t VALUES (1000000)", &[]).await.unwrap();
    n.switch_wal_and_wait_archived(Duration::from_secs(60)).await;
    let scan = wait_for_whole_archive(&store, Duration::from_secs(60)).await;
    let Some(scan) = scan else {
        panic!("{last} is still missing: {:?}\n{}", archive_gaps(&store).await, archive_diagnostics(&cluster));
    };
    assert!(scan.to.is_some_and(|to| to.timeline >= 2), "{scan:?}");
    let whole: Vec<_> = archived_copies(&store, &last)
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains(".partial") && !p.to_string_lossy().contains(".diverged"))
        .collect();
    assert_eq!(whole.len(), 1, "{last}: {whole:?}");
    // Postgres' archiver takes the mark at its next round (a finished segment wakes it) and
    // records the segment archived: the mark is one it can rename.
    n.connect("postgres").await.unwrap().execute("INSERT INTO t VALUES (1000001)", &[]).await.unwrap();
    n.switch_wal_and_wait_archived(Duration::from_secs(60)).await;
    wait_for("Postgres records it archived", Duration::from_secs(90), || async {
        if status.join(format!("{last}.done")).exists() { Ok(()) } else { Err(format!("{last} not .done")) }
    })
    .await;

    // A restore to the end crosses the branch point and has every row.
    let root = TestDir::new();
    let r = TestInstance::recovered(root.path(), "restored", &store, "");
    r.wait_ready(Duration::from_secs(300)).await;
    let c = r.connect("postgres").await.unwrap();
    let row = c.query_one("SELECT count(*), max(id) FROM t", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2002, 1_000_001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_missing_from_the_middle_of_the_archive_stops_a_restore_naming_it() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let mut o = InstanceOptions::primary("pg-1");
    o.extra_yaml = store_yaml(&store);
    let mut pg = TestInstance::start(root.path(), &o);
    pg.wait_ready(READY).await;
    let c = pg.connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE t (id int8 primary key)").await.unwrap();
    take_backup(&pg).await;
    let mut switched = Vec::new();
    for round in 0..5_i64 {
        c.execute(
            "INSERT INTO t SELECT generate_series($1::int8, $2::int8)",
            &[&(round * 100 + 1), &(round * 100 + 100)],
        )
        .await
        .unwrap();
        switched.push(pg.switch_wal_and_wait_archived(Duration::from_secs(60)).await);
    }
    let lsn: String = c.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
    c.execute("INSERT INTO t VALUES (100000)", &[]).await.unwrap();
    pg.switch_wal_and_wait_archived(Duration::from_secs(60)).await;
    drop(c);

    // The archive is as private as the data directory.
    assert_private(&store.join("test"));

    // A hand-made gap: one segment in the middle disappears.
    let gone = switched[2].clone();
    let dir = store.join("test/wal").join(&gone[..16]);
    let object = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&gone))
        .expect("the archived segment");
    std::fs::remove_file(object.path()).unwrap();

    // To the end: recovery stops at the gap with the segment named, and nothing is promoted.
    let mut end = TestInstance::recovered(root.path(), "to-end", &store, "");
    assert_eq!(end.wait_exit(Duration::from_secs(180)).await, Some(3), "{}", end.log_tail(30));
    let log = end.log();
    let named = format!("{gone} is missing from the archive but a later segment of timeline 1 is");
    assert!(log.contains(&named), "{named:?} not in:\n{}", end.log_tail(30));
    assert!(log.contains("recovery stopped at a gap in the WAL archive"), "{}", end.log_tail(30));
    assert!(!log.contains("recovery reached its end and promoted"), "{}", end.log_tail(30));
    assert!(!end.data_dir().exists(), "a data directory was left behind");
    drop(end);

    // To a target past the gap: the same, with the segment named.
    let mut past =
        TestInstance::recovered(root.path(), "past-gap", &store, &format!("    target:\n      lsn: '{lsn}'\n"));
    assert_eq!(past.wait_exit(Duration::from_secs(180)).await, Some(3), "{}", past.log_tail(30));
    assert!(past.log().contains(&named), "{}", past.log_tail(30));
    drop(past);

    // The primary's audit finds it (a new life of the manager audits at once).
    pg.kill_all();
    pg.spawn();
    pg.wait_ready(READY).await;
    let audit = wait_for("the audit reports the gap", Duration::from_secs(90), || async {
        let st = pg.status().await?;
        match st.archive.and_then(|a| a.audit) {
            Some(a) if a.first_missing.is_some() => Ok(a),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!((audit.missing_segments, audit.first_missing.as_deref()), (1, Some(gone.as_str())));
    let metrics = pg.scrape().await.unwrap();
    assert!(metrics.contains("pgwarden_archive_gap_segments 1"), "{metrics}");
}
