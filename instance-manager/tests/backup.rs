#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Base backups with real Postgres, to a `file://` store and to an S3-compatible server on
//! loopback: `backup create` through the CLI and `POST /backup` through the API, the catalog,
//! what a backup holds (label, no postmaster.pid, checksums), one backup at a time, delete,
//! retention by count (backups, their WAL, interrupted backups — and nothing else), backups
//! from a standby, and the schedule run by the primary only.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use instance_manager::api::{BackupList, Compression, InstanceStatus, Lsn};
use instance_manager::archive::compress;
use instance_manager::backup::BackupInfo;
use instance_manager::cli::{ApiClient, ClientError};
use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, TestS3, manager_binary, wait_for};
use sha2::Digest;

const READY: Duration = Duration::from_secs(90);
const BACKUP: Duration = Duration::from_secs(180);

fn with_store(opts: InstanceOptions, store: &str, extra: &str) -> InstanceOptions {
    InstanceOptions { extra_yaml: format!("backup:\n  store:\n{store}  base:\n    partSizeMiB: 5\n{extra}"), ..opts }
}

fn file_store(dir: &Path) -> String {
    format!("    destination: file://{}\n", dir.display())
}

/// The local socket: mutating endpoints need no token there.
fn local(inst: &TestInstance) -> ApiClient {
    inst.socket_client(BACKUP)
}

fn cli(inst: &TestInstance, args: &[&str]) -> Output {
    let out = std::process::Command::new(manager_binary())
        .arg("--api")
        .arg(inst.socket_url())
        .args(args)
        .output()
        .expect("run the CLI");
    assert!(
        out.status.success(),
        "instance-manager {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn backup(inst: &TestInstance, body: serde_json::Value) -> Result<BackupInfo, ClientError> {
    local(inst).post_json("/backup", &body, None).await
}

async fn list(inst: &TestInstance) -> BackupList {
    inst.client().get_json("/backups").await.expect("GET /backups")
}

/// Writes `rows` rows of ~100 bytes (a table big enough that a backup takes a moment).
async fn fill(inst: &TestInstance, rows: i32) {
    let c = inst.connect("postgres").await.unwrap();
    c.execute(
        "CREATE TABLE IF NOT EXISTS filler AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS pad \
         FROM generate_series(1, $1) g",
        &[&rows],
    )
    .await
    .unwrap();
}

/// The store's objects under `dir`, relative to it.
fn objects(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The entries of a backup's data object: path → content (files only, up to 4 KiB).
fn tar_entries(data: &Path, c: Compression) -> Vec<(String, tar::EntryType, Vec<u8>)> {
    let file = std::fs::File::open(data).unwrap();
    let mut archive = tar::Archive::new(compress::decoder(c, file).unwrap());
    let mut out = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let kind = e.header().entry_type();
        let mut head = Vec::new();
        e.by_ref().take(4096).read_to_end(&mut head).unwrap();
        std::io::copy(&mut e, &mut std::io::sink()).unwrap();
        out.push((path, kind, head));
    }
    out
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn lsn(l: &Lsn) -> u64 {
    l.as_u64()
}

/// Checks what `backup.json` says against the objects and the tar it describes.
fn check_backup(store: &Path, info: &BackupInfo, from_standby: bool) {
    let dir = store.join("test/base").join(&info.id);
    let on_disk: BackupInfo = serde_json::from_slice(&std::fs::read(dir.join("backup.json")).unwrap()).unwrap();
    assert_eq!(&on_disk, info, "backup.json is what the API answered");
    assert_eq!(info.cluster, "test");
    assert_eq!(info.from_standby, from_standby);
    assert_eq!(info.timeline, 1);
    assert_eq!(info.segment_size, 16 << 20);
    assert!(info.postgres_version.starts_with("15"), "{}", info.postgres_version);
    assert!(info.postgres_version_num >= 150000);
    assert!(lsn(&info.start_lsn) <= lsn(&info.stop_lsn), "{} > {}", info.start_lsn, info.stop_lsn);
    assert!(info.start_wal <= info.stop_wal, "{} > {}", info.start_wal, info.stop_wal);
    assert!(info.started_at <= info.stopped_at);
    assert_eq!(info.compression, Compression::Zstd);
    assert_eq!(info.files.len(), 1);
    let file = &info.files[0];
    assert_eq!(file.name, "data.tar.zst");
    let data = dir.join(&file.name);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), file.size);
    assert_eq!(file.size, info.stored_bytes);
    assert_eq!(sha256_hex(&data), file.sha256, "the checksum is of the stored object");
    assert!(info.data_bytes > 10 << 20 && info.stored_bytes < info.data_bytes, "{info:?}");

    if !from_standby {
        // A primary's backup exists only once the WAL up to its stop point is archived.
        let wal = store.join("test/wal").join(&info.stop_wal[..16]);
        assert!(wal.join(format!("{}.zst", info.stop_wal)).exists(), "{} is not archived", info.stop_wal);
        let history = std::fs::read_dir(store.join("test/wal").join(&info.start_wal[..16]))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&format!("{}.", info.start_wal)));
        assert!(history, "the backup history file of {} is not archived", info.id);
    }

    let entries = tar_entries(&data, Compression::Zstd);
    let names: BTreeSet<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
    for present in ["PG_VERSION", "backup_label", "global/pg_control", "pg_wal", "pg_wal/archive_status", "base"] {
        assert!(names.contains(present), "{present} missing from the tar");
    }
    for absent in ["postmaster.pid", "postmaster.opts", "standby.signal", "pgwarden-recovery.conf", "tablespace_map"] {
        assert!(!names.contains(absent), "{absent} is in the tar");
    }
    assert!(!names.iter().any(|n| n.starts_with("pg_wal/0")), "WAL segments are in the tar");
    assert!(!names.iter().any(|n| n.starts_with("pg_replslot/") || n.contains("pgsql_tmp")));
    let label = &entries.iter().find(|(p, _, _)| p == "backup_label").unwrap().2;
    let label = String::from_utf8_lossy(label);
    assert!(label.contains(&format!("(file {})", info.start_wal)), "{label}");
    assert!(label.contains(&format!("LABEL: pgwarden {}", info.id)), "{label}");
    let from = if from_standby { "standby" } else { "primary" };
    assert!(label.contains(&format!("BACKUP FROM: {from}")), "{label}");
    let version = &entries.iter().find(|(p, _, _)| p == "PG_VERSION").unwrap().2;
    assert_eq!(version.as_slice(), b"15\n");
    // The label comes after the data directory, pg_control just before it.
    let n = entries.len();
    assert_eq!(entries[n - 1].0, "backup_label");
    assert_eq!(entries[n - 2].0, "global/pg_control");
}

async fn status(inst: &TestInstance) -> InstanceStatus {
    inst.status().await.expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_taken_listed_checked_and_deleted() {
    let root = TestDir::new();
    let store = root.path().join("store");
    let pg = TestInstance::start(root.path(), &with_store(InstanceOptions::primary("pg-1"), &file_store(&store), ""));
    pg.wait_ready(READY).await;
    fill(&pg, 200_000).await;

    // Through the CLI.
    let out = cli(&pg, &["backup", "create", "--wait", "-o", "json"]);
    let first: BackupInfo = serde_json::from_slice(&out.stdout).expect("backup create prints backup.json");
    check_backup(&store, &first, false);
    assert_eq!(first.instance, "pg-1");

    // Through the API.
    let second = backup(&pg, serde_json::json!({})).await.expect("POST /backup");
    check_backup(&store, &second, false);
    assert!(second.id > first.id);
    assert!(lsn(&second.start_lsn) >= lsn(&first.stop_lsn));

    // The catalog, oldest first, through the API and the CLI.
    let l = list(&pg).await;
    let ids: Vec<&str> = l.backups.iter().map(|b| b.info.id.as_str()).collect();
    assert_eq!(ids, [first.id.as_str(), second.id.as_str()]);
    assert!(l.backups.iter().all(|b| b.retention.is_none()), "no policy, no verdict");
    let table = String::from_utf8(cli(&pg, &["backup", "list"]).stdout).unwrap();
    assert!(
        table.contains(&first.id) && table.contains(&second.id) && table.contains(&second.stop_lsn.to_string()),
        "{table}"
    );
    let json: BackupList = serde_json::from_slice(&cli(&pg, &["backup", "list", "-o", "json"]).stdout).unwrap();
    assert_eq!(json, l);
    let st = status(&pg).await;
    let last = st.backup.as_ref().and_then(|b| b.last_backup.clone()).expect("last backup in /status");
    assert_eq!((last.id.as_str(), last.instance.as_str()), (second.id.as_str(), "pg-1"));
    assert!(last.age_seconds < 120);
    let table = String::from_utf8(cli(&pg, &["status"]).stdout).unwrap();
    assert!(table.contains("Last backup:") && table.contains(&second.id), "{table}");

    // One backup at a time: a second request while one runs is refused with 409.
    let started: instance_manager::api::BackupStarted =
        local(&pg).post_json("/backup", &serde_json::json!({"wait": false}), None).await.expect("start");
    let refused = backup(&pg, serde_json::json!({})).await.expect_err("a second backup at once");
    let ClientError::Api { status: 409, error, .. } = &refused else { panic!("not a 409: {refused}") };
    assert!(error.contains(&started.id) && error.contains("already running"), "{error}");
    let done = wait_for("the started backup to finish", BACKUP, || async {
        let b = status(&pg).await.backup.unwrap();
        match (&b.running, &b.last_backup) {
            (None, Some(l)) if l.id == started.id => Ok(()),
            _ => Err(format!("{b:?}")),
        }
    });
    done.await;
    assert!(status(&pg).await.backup.unwrap().last_failure.is_none());

    // A standby backup is refused on the primary.
    let refused = backup(&pg, serde_json::json!({"fromStandby": true})).await.expect_err("fromStandby on the primary");
    assert!(matches!(&refused, ClientError::Api { status: 409, error, .. } if error.contains("primary")), "{refused}");

    // Delete, through the CLI: the backup and its objects are gone; the others stay.
    cli(&pg, &["backup", "delete", &first.id]);
    assert!(objects(&store.join("test/base").join(&first.id)).is_empty());
    let ids: Vec<String> = list(&pg).await.backups.into_iter().map(|b| b.info.id).collect();
    assert_eq!(ids, [second.id.clone(), started.id.clone()]);
    let missing = local(&pg).delete_json::<serde_json::Value>(&format!("/backups/{}", first.id), None).await;
    assert!(matches!(missing, Err(ClientError::Api { status: 404, .. })), "{missing:?}");
    let odd = local(&pg).delete_json::<serde_json::Value>("/backups/..%2Fwal", None).await;
    assert!(matches!(odd, Err(ClientError::Api { status: 400, .. })), "{odd:?}");
    // Mutating over TCP needs a token (none is configured).
    let tcp = pg.client().post_json::<_, serde_json::Value>("/backup", &serde_json::json!({}), None).await;
    assert!(matches!(tcp, Err(ClientError::Api { status: 401, .. })), "{tcp:?}");
}

/// Switches to a new WAL segment and waits until it is archived (pg_stat_archiver).
async fn archive_a_segment(inst: &TestInstance) {
    let c = inst.connect("postgres").await.unwrap();
    c.batch_execute("INSERT INTO filler SELECT g, 'x' FROM generate_series(1, 1000) g").await.unwrap();
    inst.switch_wal_and_wait_archived(Duration::from_secs(60)).await;
}

/// Sets a file's modification time to two days ago.
fn age(path: &Path) {
    let ok = std::process::Command::new("touch").arg("-d").arg("2 days ago").arg(path).status().unwrap().success();
    assert!(ok, "touch {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_count_deletes_the_oldest_backup_and_its_wal_and_nothing_else() {
    let root = TestDir::new();
    let store = root.path().join("store");
    let extra = "  retention:\n    count: 2\n";
    let pg =
        TestInstance::start(root.path(), &with_store(InstanceOptions::primary("pg-1"), &file_store(&store), extra));
    pg.wait_ready(READY).await;
    fill(&pg, 100_000).await;
    archive_a_segment(&pg).await;
    let b1 = backup(&pg, serde_json::json!({})).await.unwrap();
    archive_a_segment(&pg).await;
    let b2 = backup(&pg, serde_json::json!({})).await.unwrap();
    archive_a_segment(&pg).await;
    assert!(b1.start_wal < b2.start_wal);
    assert_eq!(list(&pg).await.backups.len(), 2, "count 2: nothing deleted yet");

    // Interrupted backups: an old one goes, a recent one stays.
    let base = store.join("test/base");
    for (id, old) in [("20200101T000000Z", true), ("20990101T000000Z", false)] {
        std::fs::create_dir_all(base.join(id)).unwrap();
        std::fs::write(base.join(id).join("data.tar.zst"), b"partial").unwrap();
        if old {
            age(&base.join(id).join("data.tar.zst"));
        }
    }
    let l = list(&pg).await;
    let verdicts: Vec<_> = l.backups.iter().map(|b| b.retention).collect();
    assert_eq!(verdicts, [Some(instance_manager::api::RetentionVerdict::Keep); 2]);
    assert_eq!(l.retention.as_deref(), Some("the newest 2 backups"));

    // Copies the archiver kept aside beside an old and a new segment go with their segment.
    let wal_objects: Vec<String> = objects(&store)
        .into_iter()
        .filter(|p| p.starts_with("test/wal/") && p.ends_with(".zst") && p.len() == "test/wal/".len() + 17 + 28)
        .collect();
    let (oldest, newest) = (wal_objects.first().unwrap(), wal_objects.last().unwrap());
    assert!(oldest[26..50] < *b2.start_wal && newest[26..50] >= *b2.start_wal, "{wal_objects:?}");
    for object in [oldest, newest] {
        let aside = store.join(format!("{object}.diverged-1733380000123"));
        std::fs::write(&aside, b"a copy kept aside").unwrap();
    }

    let before = objects(&store);
    let b3 = backup(&pg, serde_json::json!({})).await.unwrap();
    let after = objects(&store);

    // Exactly: backup 1, the WAL before backup 2's first segment, the old interrupted backup.
    let wal_name = |p: &str| -> Option<String> {
        let file = p.strip_prefix("test/wal/")?.rsplit('/').next()?.trim_end_matches(".zst").to_string();
        (file.len() >= 24 && !file.ends_with(".history")).then_some(file)
    };
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|p| {
            p.starts_with(&format!("test/base/{}/", b1.id))
                || p.starts_with("test/base/20200101T000000Z/")
                || wal_name(p).is_some_and(|n| n[..24] < *b2.start_wal)
        })
        .cloned()
        .collect();
    let deleted: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert!(expected.iter().any(|p| p.starts_with("test/wal/")), "some WAL is older than backup 2: {before:?}");
    assert!(expected.iter().any(|p| p.ends_with(".backup.zst") || p.ends_with(".backup")), "{before:?}");
    assert_eq!(deleted, expected, "retention deleted exactly this");
    assert!(after.contains("test/cluster.json"));
    assert!(after.contains("test/base/20990101T000000Z/data.tar.zst"));
    for b in [&b2, &b3] {
        assert!(after.contains(&format!("test/base/{}/backup.json", b.id)));
        let first_wal = after.iter().filter_map(|p| wal_name(p)).filter(|n| n.len() == 24).min().unwrap();
        assert!(first_wal <= b.start_wal, "{} needs {}, oldest archived {first_wal}", b.id, b.start_wal);
    }
    let ids: Vec<String> = list(&pg).await.backups.into_iter().map(|b| b.info.id).collect();
    assert_eq!(ids, [b2.id.clone(), b3.id.clone()]);
    assert!(status(&pg).await.backup.unwrap().retention_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_from_a_standby_gets_its_wal_from_the_primarys_archive() {
    let root = TestDir::new();
    let store = root.path().join("store");
    let primary =
        TestInstance::start(root.path(), &with_store(InstanceOptions::primary("pg-1"), &file_store(&store), ""));
    primary.wait_ready(READY).await;
    fill(&primary, 100_000).await;
    let replica = TestInstance::start(
        root.path(),
        &with_store(InstanceOptions::replica_of("pg-2", &primary), &file_store(&store), ""),
    );
    replica.wait_ready(READY).await;
    wait_for("the filler table on the replica", Duration::from_secs(60), || async {
        let c = replica.connect("postgres").await?;
        c.query_one("SELECT count(*) FROM filler", &[]).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;

    // The caller picks: a primary backup is refused on a replica, and the other way round.
    let refused = backup(&replica, serde_json::json!({})).await.expect_err("a primary backup on a replica");
    assert!(matches!(&refused, ClientError::Api { status: 409, error, .. } if error.contains("replica")), "{refused}");

    let out = cli(&replica, &["backup", "create", "--wait", "--from-standby", "-o", "json"]);
    let info: BackupInfo = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info.instance, "pg-2");
    check_backup(&store, &info, true);
    assert_eq!(list(&primary).await.backups.len(), 1, "one catalog, seen from every instance");

    // Its WAL, up to stopWal, arrives through the primary's archive.
    archive_a_segment(&primary).await;
    let stop = store.join("test/wal").join(&info.stop_wal[..16]).join(format!("{}.zst", info.stop_wal));
    wait_for(&format!("{} in the archive", stop.display()), Duration::from_secs(60), || async {
        if stop.exists() { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_runs_on_the_primary_only_and_applies_retention() {
    let root = TestDir::new();
    let store = root.path().join("store");
    // Every 4 seconds (a seconds field first), keeping the newest backup only.
    let extra = "  schedule: '*/4 * * * * *'\n  retention:\n    count: 1\n";
    let primary =
        TestInstance::start(root.path(), &with_store(InstanceOptions::primary("pg-1"), &file_store(&store), extra));
    primary.wait_ready(READY).await;
    let replica = TestInstance::start(
        root.path(),
        &with_store(InstanceOptions::replica_of("pg-2", &primary), &file_store(&store), extra),
    );
    replica.wait_ready(READY).await;
    let st = status(&primary).await.backup.unwrap();
    assert!(st.next_scheduled_at.is_some(), "{st:?}");
    assert!(status(&replica).await.backup.unwrap().next_scheduled_at.is_none(), "a replica does not schedule");
    let dirs = |store: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(store.join("test/base")).into_iter().flatten().flatten().map(|e| e.path()).collect()
    };
    let mut seen = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for 3 scheduled backups; saw {seen:?}");
        for b in list(&primary).await.backups {
            assert_eq!(b.info.instance, "pg-1", "only the primary takes scheduled backups");
            seen.insert(b.info.id);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Retention keeps the newest one (the one running, if any, has no backup.json yet).
    let l = list(&primary).await;
    assert!(l.backups.len() <= 2, "{:?}", l.backups.iter().map(|b| &b.info.id).collect::<Vec<_>>());
    assert!(dirs(&store).len() <= 3, "{:?}", dirs(&store));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_is_reported_and_leaves_nothing() {
    let root = TestDir::new();
    let store = root.path().join("store");
    let pg = TestInstance::start(root.path(), &with_store(InstanceOptions::primary("pg-1"), &file_store(&store), ""));
    pg.wait_ready(READY).await;
    // The data object cannot be completed: its name is taken by a directory, for every id of
    // the next seconds. The backup fails after the data directory was read and stopped.
    let base = store.join("test/base");
    let now = jiff::Timestamp::now();
    let blocked: Vec<PathBuf> = (0..20)
        .map(|s| base.join(instance_manager::backup::catalog::new_id(now + jiff::SignedDuration::from_secs(s))))
        .collect();
    for dir in &blocked {
        std::fs::create_dir_all(dir.join("data.tar.zst")).unwrap();
    }
    let failed = backup(&pg, serde_json::json!({})).await.expect_err("a backup that cannot be stored");
    let ClientError::Api { status: 500, error, .. } = &failed else { panic!("not a 500: {failed}") };
    assert!(error.contains("failed") && error.contains("data.tar.zst"), "{error}");
    let b = status(&pg).await.backup.unwrap();
    assert!(b.running.is_none() && b.last_backup.is_none(), "{b:?}");
    assert!(b.last_failure.as_deref().is_some_and(|f| f.contains("data.tar.zst")), "{b:?}");
    assert!(list(&pg).await.backups.is_empty());
    assert!(!objects(&base).iter().any(|o| o.ends_with("backup.json")), "{:?}", objects(&base));

    // Postgres' side of it ended with the connection: the next backup runs.
    for dir in &blocked {
        std::fs::remove_dir_all(dir).unwrap();
    }
    let info = backup(&pg, serde_json::json!({})).await.expect("a backup once the store is fixed");
    check_backup(&store, &info, false);
    let ids: Vec<String> = list(&pg).await.backups.into_iter().map(|b| b.info.id).collect();
    assert_eq!(ids, std::slice::from_ref(&info.id));
    assert!(status(&pg).await.backup.unwrap().last_backup.is_some_and(|l| l.id == info.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_wal_the_archive_refuses_fails_at_once_naming_it() {
    let root = TestDir::new();
    let store = root.path().join("store");
    let pg = TestInstance::start(root.path(), &with_store(InstanceOptions::primary("pg-1"), &file_store(&store), ""));
    pg.wait_ready(READY).await;
    pg.switch_wal_and_wait_archived(Duration::from_secs(60)).await;
    // The segment the backup will end in is already in the archive with other content (as
    // if another cluster archived there): the archiver refuses it, and Postgres, which
    // archives in order, can never archive what the backup needs.
    let c = pg.connect("postgres").await.unwrap();
    let wal: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[]).await.unwrap().get(0);
    let dir = store.join("test/wal").join(&wal[..16]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{wal}.zst")), zstd::encode_all(&b"another cluster's WAL"[..], 3).unwrap())
        .unwrap();

    let started = std::time::Instant::now();
    let failed = backup(&pg, serde_json::json!({})).await.expect_err("a backup whose WAL cannot be archived");
    let ClientError::Api { status: 500, error, .. } = &failed else { panic!("not a 500: {failed}") };
    assert!(error.contains("archive refused") && error.contains(&wal), "{error}");
    assert!(started.elapsed() < Duration::from_secs(100), "it waited {:?}", started.elapsed());
    let b = status(&pg).await.backup.unwrap();
    assert!(b.last_failure.as_deref().is_some_and(|f| f.contains("archive refused")), "{b:?}");
    assert!(list(&pg).await.backups.is_empty());
    assert!(!objects(&store.join("test/base")).iter().any(|o| o.ends_with("backup.json")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablespace_is_stored_apart_and_located_by_the_map() {
    let root = TestDir::new();
    let store = root.path().join("store");
    let pg = TestInstance::start(root.path(), &with_store(InstanceOptions::primary("pg-1"), &file_store(&store), ""));
    pg.wait_ready(READY).await;
    let location = root.path().join("tablespace");
    std::fs::create_dir_all(&location).unwrap();
    assert!(std::process::Command::new("chown").arg("postgres:").arg(&location).status().unwrap().success());
    let c = pg.connect("postgres").await.unwrap();
    c.batch_execute(&format!("CREATE TABLESPACE t1 LOCATION '{}'", location.display())).await.unwrap();
    c.batch_execute("CREATE TABLE x TABLESPACE t1 AS SELECT g FROM generate_series(1, 1000) g").await.unwrap();
    fill(&pg, 100_000).await;
    let row = c
        .query_one("SELECT oid::text, pg_relation_filepath('x') FROM pg_tablespace WHERE spcname = 't1'", &[])
        .await
        .unwrap();
    let (oid, relation): (String, String) = (row.get(0), row.get(1));

    let info = backup(&pg, serde_json::json!({})).await.unwrap();
    let names: Vec<&str> = info.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["data.tar.zst".to_string(), format!("tablespace-{oid}.tar.zst")]);
    assert_eq!(info.stored_bytes, info.files.iter().map(|f| f.size).sum::<u64>());
    let dir = store.join("test/base").join(&info.id);
    for f in &info.files {
        assert_eq!(sha256_hex(&dir.join(&f.name)), f.sha256, "{}", f.name);
    }
    let data = tar_entries(&dir.join("data.tar.zst"), Compression::Zstd);
    let map = &data.iter().find(|e| e.0 == "tablespace_map").expect("tablespace_map in the data tar").2;
    assert_eq!(String::from_utf8_lossy(map).trim(), format!("{oid} {}", location.display()));
    assert!(data.iter().any(|e| e.0 == "pg_tblspc"));
    assert!(!data.iter().any(|e| e.0.starts_with(&format!("pg_tblspc/{oid}"))), "the link is left out");
    let space = tar_entries(&dir.join(format!("tablespace-{oid}.tar.zst")), Compression::Zstd);
    let inside = relation.strip_prefix(&format!("pg_tblspc/{oid}/")).unwrap();
    assert!(
        space.iter().any(|e| e.0 == inside),
        "{inside} not in {:?}",
        space.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    assert!(space.iter().all(|e| e.0.starts_with("PG_15_")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_to_s3_is_uploaded_in_parts_and_checksummed() {
    let s3 = TestS3::start();
    let root = TestDir::new();
    let secrets = root.path().join("s3-secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("key"), s3.access_key()).unwrap();
    std::fs::write(secrets.join("secret"), s3.secret_key()).unwrap();
    let spec = format!(
        "    destination: {}/backups\n    s3:\n      endpoint: {}\n      region: {}\n      \
         accessKeyIdFile: {}\n      secretAccessKeyFile: {}\n",
        s3.url(),
        s3.endpoint(),
        s3.region(),
        secrets.join("key").display(),
        secrets.join("secret").display()
    );
    // Uncompressed: ~30 MiB in 5 MiB parts.
    let mut opts = with_store(InstanceOptions::primary("pg-1"), &spec, "");
    opts.extra_yaml = opts.extra_yaml.replace("  base:\n", "  base:\n    compression: none\n    maxParallel: 3\n");
    let pg = TestInstance::start(root.path(), &opts);
    pg.wait_ready(READY).await;
    fill(&pg, 100_000).await;
    let info = backup(&pg, serde_json::json!({})).await.expect("backup to S3");
    assert_eq!(info.files[0].name, "data.tar");
    assert!(info.stored_bytes > 15 << 20, "{}", info.stored_bytes);
    let object = s3.object_file(&format!("backups/test/base/{}/data.tar", info.id));
    assert_eq!(std::fs::metadata(&object).unwrap().len(), info.stored_bytes);
    assert_eq!(sha256_hex(&object), info.files[0].sha256);
    let names: Vec<String> = tar_entries(&object, Compression::None).into_iter().map(|e| e.0).collect();
    assert!(names.contains(&"backup_label".to_string()) && names.contains(&"PG_VERSION".to_string()));
    assert!(!names.contains(&"postmaster.pid".to_string()));
    let l = list(&pg).await;
    assert_eq!(l.backups.len(), 1);
    assert!(l.destination.starts_with("s3://"), "{}", l.destination);
    let _: serde_json::Value = local(&pg).delete_json(&format!("/backups/{}", info.id), None).await.unwrap();
    assert!(list(&pg).await.backups.is_empty());
    assert!(!object.exists());
}
