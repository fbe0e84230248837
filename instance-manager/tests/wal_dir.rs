#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `walDir`: `pg_wal` on a volume of its own, with real Postgres. A primary (initdb) and a
//! replica (pg_basebackup) keep their WAL there behind a `pg_wal` link; a failover and the old
//! primary's rewind keep it there; a base backup restores into a new instance and a new replica
//! with their own `walDir`; a bootstrap killed halfway starts over without leftovers; and a
//! `walDir` that is not this data directory's is refused, naming the field, touching nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use instance_manager::pgdata::wal_dir::{control_system_identifier, segment_system_identifier};
use instance_manager::testkit::{FAST, InstanceOptions, TestCluster, TestDir, TestInstance, wait_for};

const READY: Duration = Duration::from_secs(120);
/// Under each instance's directory: `walvol` stands for the WAL volume's mount.
const WAL_DIR: &str = "walvol/pg_wal";

fn with_wal_dir(mut o: InstanceOptions) -> InstanceOptions {
    o.wal_dir = Some(WAL_DIR.into());
    o
}

/// The WAL segment files in `dir`, sorted.
fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    names.sort();
    names
}

/// `pg_wal` is a link to `walDir`, the segments are there, and no staging directory is left.
fn assert_wal_in_wal_dir(inst: &TestInstance) -> PathBuf {
    let wal = inst.wal_dir().expect("the instance has a walDir");
    let data = inst.data_dir();
    let link = std::fs::read_link(data.join("pg_wal")).unwrap_or_else(|e| panic!("{}/pg_wal: {e}", data.display()));
    assert_eq!(link, wal, "{}: pg_wal links to walDir", inst.name);
    let found = segments(&wal);
    assert!(!found.is_empty(), "{}: no WAL segment in {}", inst.name, wal.display());
    assert!(wal.join("archive_status").is_dir(), "{}: no archive_status in walDir", inst.name);
    for staging in [data.with_file_name(".pgdata.bootstrap"), wal.with_file_name(".pg_wal.bootstrap")] {
        assert!(!staging.exists(), "{}: {} was left behind", inst.name, staging.display());
    }
    wal
}

async fn count(inst: &TestInstance, db: &str) -> Result<i64, String> {
    let c = inst.connect(db).await?;
    c.query_one("SELECT count(*) FROM t", &[]).await.map(|r| r.get(0)).map_err(|e| e.to_string())
}

async fn wait_rows(inst: &TestInstance, db: &str, n: i64) {
    wait_for(&format!("{n} rows on {}", inst.name), Duration::from_secs(60), || async {
        let got = count(inst, db).await?;
        if got == n { Ok(()) } else { Err(format!("{got} rows")) }
    })
    .await
}

/// Postgres answers queries a moment before the manager's next observation calls it a replica.
async fn wait_replica(inst: &TestInstance) {
    wait_for(&format!("{} reported as a replica", inst.name), Duration::from_secs(30), || async {
        let role = inst.status().await?.role;
        if role == "replica" { Ok(()) } else { Err(format!("role {role}")) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_and_its_replica_keep_their_wal_in_wal_dir() {
    let root = TestDir::new();
    let mut pg = TestInstance::start(root.path(), &with_wal_dir(InstanceOptions::primary("pg-1")));
    pg.wait_ready(READY).await;
    let wal = assert_wal_in_wal_dir(&pg);
    assert!(!pg.data_dir().join("pg_wal").symlink_metadata().unwrap().is_dir(), "pg_wal is a link, not a directory");

    // What a start checks: pg_control and the WAL name the same system.
    let control = std::fs::read(pg.data_dir().join("global/pg_control")).unwrap();
    let mut head = Vec::new();
    std::fs::File::open(wal.join(&segments(&wal)[0])).unwrap().take(40).read_to_end(&mut head).unwrap();
    let system = control_system_identifier(&control);
    assert!(system.is_some());
    assert_eq!(segment_system_identifier(&head), system, "the first segment's header");

    let c = pg.connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)").await.unwrap();
    let first = segments(&wal).last().cloned().unwrap();
    pg.connect("postgres").await.unwrap().query_one("SELECT pg_switch_wal()", &[]).await.unwrap();
    c.batch_execute("INSERT INTO t SELECT generate_series(1001, 1100)").await.unwrap();
    assert!(segments(&wal).last().unwrap() > &first, "new WAL is written into walDir");

    // The exporter reads pg_wal through the link.
    let scraped = wait_for("pg_wal counted by the exporter", Duration::from_secs(30), || async {
        let text = pg.scrape().await?;
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("cnpg_collector_pg_wal{value=\"count\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        match count {
            Some(n) if n >= 2.0 => Ok(n),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(scraped >= 2.0);

    let replica = TestInstance::start(root.path(), &with_wal_dir(InstanceOptions::replica_of("pg-2", &pg)));
    replica.wait_ready(READY).await;
    wait_rows(&replica, "postgres", 1100).await;
    let replica_wal = assert_wal_in_wal_dir(&replica);
    assert_ne!(replica_wal, wal);

    // A restart checks the link and the system identifiers, and starts on the same WAL.
    pg.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(pg.wait_exit(Duration::from_secs(60)).await, Some(0), "{}", pg.log_tail(20));
    pg.spawn();
    pg.wait_ready(READY).await;
    assert_eq!(count(&pg, "postgres").await.unwrap(), 1100);
    assert_wal_in_wal_dir(&pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_and_the_old_primarys_rewind_keep_the_wal_in_wal_dir() {
    let mut cluster = TestCluster::start_with(3, FAST, |o| o.wal_dir = Some(WAL_DIR.into()));
    let all = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&all, READY).await, "pg-1");
    let p = cluster.get("pg-1");
    p.connect("postgres")
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT 1")
        .await
        .unwrap();
    for name in all {
        wait_rows(cluster.get(name), "postgres", 1).await;
        assert_wal_in_wal_dir(cluster.get(name));
    }

    // Node loss: the manager and Postgres of the primary die at once.
    cluster.get_mut("pg-1").kill_all();
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(60)).await;
    let primary = cluster.get(&new);
    primary
        .connect("postgres")
        .await
        .unwrap()
        .batch_execute("INSERT INTO t SELECT generate_series(2, 20)")
        .await
        .unwrap();
    let st = primary.status().await.unwrap();
    assert_eq!(st.timeline, Some(2));

    // The old primary comes back: it is rewound (pg_rewind follows the pg_wal link) and follows.
    cluster.get_mut("pg-1").spawn();
    assert_eq!(cluster.wait_primary(&all, Duration::from_secs(90)).await, new);
    let old = cluster.get("pg-1");
    wait_rows(old, "postgres", 20).await;
    let log = old.log();
    assert!(log.contains("rewinding this data directory onto the primary"), "no rewind:\n{}", old.log_tail(40));
    assert!(!log.contains("pg_rewind failed"), "the rewind failed:\n{}", old.log_tail(40));
    let wal = assert_wal_in_wal_dir(old);
    let on_new_timeline = wait_for("timeline 2 WAL in pg-1's walDir", Duration::from_secs(30), || async {
        let found = segments(&wal);
        match found.iter().find(|s| s.starts_with("00000002")) {
            Some(s) => Ok(s.clone()),
            None => Err(format!("{found:?}")),
        }
    })
    .await;
    assert!(on_new_timeline.starts_with("00000002"));
    wait_replica(old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rewind_re_clones_with_the_wal_in_the_same_wal_dir() {
    let mut cluster = TestCluster::start_with(2, FAST, |o| o.wal_dir = Some(WAL_DIR.into()));
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2"], READY).await, "pg-1");
    let p = cluster.get("pg-1");
    p.connect("postgres")
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT 1")
        .await
        .unwrap();
    wait_rows(cluster.get("pg-2"), "postgres", 1).await;
    cluster.get_mut("pg-1").kill_all();
    assert_eq!(cluster.wait_primary(&["pg-2"], Duration::from_secs(60)).await, "pg-2");
    cluster.get("pg-2").connect("postgres").await.unwrap().batch_execute("INSERT INTO t SELECT 2").await.unwrap();

    // The old primary lost its WAL: neither crash recovery nor pg_rewind can work, so it is
    // removed (its walDir with it) and cloned again, its WAL again in walDir.
    let old_wal = cluster.get("pg-1").wal_dir().unwrap();
    for segment in segments(&old_wal) {
        std::fs::remove_file(old_wal.join(segment)).unwrap();
    }
    cluster.get_mut("pg-1").spawn();
    let old = cluster.get("pg-1");
    wait_rows(old, "postgres", 2).await;
    let log = old.log();
    assert!(log.contains("pg_rewind failed; re-cloning from the primary"), "{}", old.log_tail(40));
    assert!(log.contains("removing WAL no data directory links to any more"), "{}", old.log_tail(40));
    assert_wal_in_wal_dir(old);
    wait_replica(old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_backup_restores_into_new_instances_with_their_own_wal_dir() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let archive = format!("backup:\n  store:\n    destination: file://{}\n", store.display());
    let mut o = with_wal_dir(InstanceOptions::primary("pg-1"));
    o.extra_yaml = archive.clone();
    let pg = TestInstance::start(root.path(), &o);
    pg.wait_ready(READY).await;
    let c = pg.connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)").await.unwrap();
    let client = pg.socket_client(Duration::from_secs(120));
    let _: serde_json::Value = client.post_json("/backup", &serde_json::json!({}), None).await.expect("backup");
    c.batch_execute("INSERT INTO t SELECT generate_series(101, 150)").await.unwrap();
    // Archived from walDir: the archiver finds the .ready files through the link.
    pg.switch_wal_and_wait_archived(Duration::from_secs(60)).await;

    // A recovery bootstrap: the backup, then the archive, replayed on the WAL volume.
    let mut r = with_wal_dir(InstanceOptions::primary("restored"));
    r.extra_yaml = format!(
        "bootstrap:\n  recovery:\n    sourceCluster: test\n    store:\n      destination: file://{}\n",
        store.display()
    );
    let restored = TestInstance::start(root.path(), &r);
    restored.wait_ready(READY).await;
    assert_eq!(count(&restored, "postgres").await.unwrap(), 150);
    let st = restored.status().await.unwrap();
    assert_eq!((st.role.as_str(), st.timeline), ("primary", Some(2)));
    assert_wal_in_wal_dir(&restored);
    assert!(!restored.data_dir().join("pgwarden-recovery.conf").exists());
    drop(restored);

    // A replica built from the backup, then streaming.
    let mut r = with_wal_dir(InstanceOptions::replica_of("pg-2", &pg));
    r.extra_yaml = format!("{archive}bootstrap:\n  replicaSource: backup\n");
    let replica = TestInstance::start(root.path(), &r);
    replica.wait_ready(READY).await;
    c.batch_execute("INSERT INTO t SELECT generate_series(151, 160)").await.unwrap();
    wait_rows(&replica, "postgres", 160).await;
    assert!(replica.log().contains("restored from a base backup"), "{}", replica.log_tail(30));
    assert_wal_in_wal_dir(&replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_killed_halfway_starts_over_without_leftovers() {
    let root = TestDir::new();
    let mut pg = TestInstance::start(root.path(), &with_wal_dir(InstanceOptions::primary("pg-1")));
    let wal = pg.wal_dir().unwrap();
    let staged = wal.with_file_name(".pg_wal.bootstrap");
    wait_for("initdb writing the staged WAL directory", Duration::from_secs(60), || async {
        if staged.join("archive_status").exists() || wal.exists() { Ok(()) } else { Err(pg.log_tail(5)) }
    })
    .await;
    pg.kill_all();
    pg.spawn();
    pg.wait_ready(READY).await;
    assert_wal_in_wal_dir(&pg);
    let c = pg.connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT 1").await.unwrap();
}

/// Starts `opts` and waits for the manager to exit; returns its log.
async fn refused(root: &Path, opts: &InstanceOptions) -> (TestInstance, String) {
    let mut inst = TestInstance::start(root, opts);
    let code = inst.wait_exit(Duration::from_secs(60)).await;
    let log = inst.log();
    assert_eq!(code, Some(2), "the configuration was not refused:\n{log}");
    (inst, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_dir_that_is_not_this_data_directorys_is_refused_naming_the_field() {
    let root = TestDir::new();

    // Inside the data directory.
    let mut o = InstanceOptions::primary("inside");
    o.wal_dir = Some("pgdata/pg_wal".into());
    let (inst, log) = refused(root.path(), &o).await;
    assert!(log.contains(r#""field":"walDir""#) && log.contains("is inside dataDir"), "{log}");
    assert!(!inst.data_dir().join("PG_VERSION").exists(), "a data directory was created");

    // Holding files no data directory links to: maybe another instance's WAL, never deleted.
    let o = with_wal_dir(InstanceOptions::primary("foreign"));
    let wal = root.path().join("foreign").join(WAL_DIR);
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::write(wal.join("000000010000000000000001"), b"someone else's WAL").unwrap();
    nix::unistd::chown(&wal, Some(postgres_uid()), None).unwrap();
    nix::unistd::chown(&wal.join("000000010000000000000001"), Some(postgres_uid()), None).unwrap();
    let (inst, log) = refused(root.path(), &o).await;
    assert!(
        log.contains(r#""field":"walDir""#) && log.contains("no data directory of this instance links to it"),
        "{log}"
    );
    assert_eq!(std::fs::read(wal.join("000000010000000000000001")).unwrap(), b"someone else's WAL");
    assert!(!inst.data_dir().exists(), "a data directory was created");

    // An existing data directory keeps its WAL inside: walDir set later is refused, not moved.
    let mut pg = TestInstance::start(root.path(), &InstanceOptions::primary("existing"));
    pg.wait_ready(READY).await;
    pg.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(pg.wait_exit(Duration::from_secs(60)).await, Some(0));
    let wal = root.path().join("existing").join(WAL_DIR);
    std::fs::create_dir_all(wal.parent().unwrap()).unwrap();
    let mut config = std::fs::read_to_string(&pg.config_path).unwrap();
    config.push_str(&format!("walDir: {}\n", wal.display()));
    std::fs::write(&pg.config_path, config).unwrap();
    pg.spawn();
    assert_eq!(pg.wait_exit(Duration::from_secs(60)).await, Some(2), "{}", pg.log_tail(20));
    let log = pg.log();
    assert!(log.contains(r#""field":"walDir""#) && log.contains("pg_wal is not a link to"), "{log}");
    assert!(log.contains("mv ") && log.contains("ln -s"), "the fix is given: {log}");
    assert!(pg.data_dir().join("pg_wal").symlink_metadata().unwrap().is_dir(), "pg_wal was not touched");
    assert!(!wal.exists(), "nothing was moved into walDir");
}

fn postgres_uid() -> nix::unistd::Uid {
    nix::unistd::User::from_name("postgres").unwrap().expect("the postgres OS user").uid
}
