#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The WAL archive with real Postgres and a `file://` store: every segment lands intact, a
//! conflicting segment is refused and kept, another cluster's archive is refused, and a
//! manager killed while archiving loses and duplicates nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use instance_manager::api::Compression;
use instance_manager::archive::{Layout, SegmentId, WalName, compress, parse_wal_name};
use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, wait_for};

const READY: Duration = Duration::from_secs(90);
const SEGMENT: u64 = 16 * 1024 * 1024;

fn with_archive(name: &str, store_dir: &Path, extra: &str) -> InstanceOptions {
    let mut o = InstanceOptions::primary(name);
    o.extra_yaml = format!(
        "backup:\n  store:\n    destination: file://{}\n  wal:\n    maxParallel: 4\n{extra}",
        store_dir.display()
    );
    o
}

/// Writes a little and switches to a new segment `n` times; returns the last switched-from
/// segment's name.
async fn switch_segments(inst: &TestInstance, n: usize) -> String {
    let c = inst.connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE IF NOT EXISTS filler (id serial, pad text)").await.unwrap();
    let mut last = String::new();
    for _ in 0..n {
        c.batch_execute("INSERT INTO filler (pad) SELECT repeat('x', 200) FROM generate_series(1, 500)").await.unwrap();
        last = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[]).await.unwrap().get(0);
        c.query_one("SELECT pg_switch_wal()", &[]).await.unwrap();
    }
    last
}

/// The segments in the store, by name, with their object paths.
fn stored_segments(store_dir: &Path, cluster: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let wal = store_dir.join(cluster).join("wal");
    for dir in std::fs::read_dir(&wal).unwrap().flatten().filter(|e| e.path().is_dir()) {
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let file = f.file_name().to_string_lossy().into_owned();
            let name = file.trim_end_matches(".zst").to_string();
            if matches!(parse_wal_name(&name), Some(WalName::Segment(_))) {
                out.push((name, f.path()));
            }
        }
    }
    out.sort();
    out
}

/// Checks that `data` is the WAL segment `name` of the cluster `sysid`: its long page header
/// names the right timeline, position and system.
fn assert_intact_segment(name: &str, data: &[u8], sysid: u64) {
    let Some(WalName::Segment(id)) = parse_wal_name(name) else { panic!("{name} is not a segment") };
    assert_eq!(data.len() as u64, SEGMENT, "{name} has the wrong size");
    let u16_at = |o: usize| u16::from_le_bytes(data[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap());
    assert_eq!(u16_at(0), 0xD110, "{name}: not a PostgreSQL 15 WAL page");
    assert_eq!(u32_at(4), id.timeline, "{name}: timeline");
    assert_eq!(u64_at(8), ((id.log as u64) << 32) + id.seg as u64 * SEGMENT, "{name}: page address");
    assert_eq!(u64_at(24), sysid, "{name}: system identifier");
}

async fn sysid(inst: &TestInstance) -> u64 {
    inst.status().await.unwrap().system_identifier.unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_segment_lands_intact_and_in_order() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let pg = TestInstance::start(root.path(), &with_archive("pg-1", &store, ""));
    pg.wait_ready(READY).await;
    let last = switch_segments(&pg, 12).await;
    pg.wait_archived(&last, Duration::from_secs(60)).await;

    let segments = stored_segments(&store, "test");
    let sysid = sysid(&pg).await;
    let names: Vec<&str> = segments.iter().map(|(n, _)| n.as_str()).collect();
    // No gap from the first segment to the last one switched from.
    let Some(WalName::Segment(first)) = parse_wal_name(names[0]) else { panic!() };
    let mut expect = first;
    for name in &names {
        assert_eq!(*name, expect.file_name(), "a gap in the archive: {names:?}");
        expect = expect.next(SEGMENT);
        if *name == last {
            break;
        }
    }
    assert!(names.contains(&last.as_str()), "{last} missing from {names:?}");
    for (name, path) in &segments {
        let packed = std::fs::read(path).unwrap();
        assert!(packed.len() < (SEGMENT / 4) as usize, "{name} is not compressed ({} bytes)", packed.len());
        let data = compress::decompress(Compression::Zstd, &packed, SEGMENT as usize).unwrap();
        assert_intact_segment(name, &data, sysid);
    }
    // The identity document names this cluster.
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("test/cluster.json")).unwrap()).unwrap();
    assert_eq!(identity["systemIdentifier"], sysid.to_string());

    let st = pg.status().await.unwrap();
    let a = st.archive.expect("archive status");
    assert_eq!(a.failures_total, 0, "{a:?}");
    assert!(a.last_archived_wal.as_deref() >= Some(last.as_str()), "{a:?}");
    assert_eq!(a.destination, format!("file://{}", store.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_segment_of_the_same_name_is_refused_and_kept() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let pg = TestInstance::start(root.path(), &with_archive("pg-1", &store, ""));
    pg.wait_ready(READY).await;
    // The archive is this cluster's (one segment archived, cluster.json written).
    let first = switch_segments(&pg, 1).await;
    pg.wait_archived(&first, Duration::from_secs(30)).await;
    let c = pg.connect("postgres").await.unwrap();
    let current: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[]).await.unwrap().get(0);
    // Something else already sits where the current segment will be archived.
    let layout = Layout::new("", "test");
    let object = store.join(layout.wal_object(&current, Compression::Zstd).unwrap().as_ref());
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    let foreign = compress::compress(Compression::Zstd, b"not this cluster's WAL").unwrap();
    std::fs::write(&object, &foreign).unwrap();
    c.query_one("SELECT pg_switch_wal()", &[]).await.unwrap();

    let failure = wait_for("the archive to refuse the segment", Duration::from_secs(30), || async {
        let a = pg.status().await?.archive.ok_or("no archive status")?;
        a.last_failure.filter(|_| a.failures_total > 0).ok_or_else(|| format!("{:?}", a.last_archived_wal))
    })
    .await;
    assert!(failure.contains("refusing to overwrite") && failure.contains(&current), "{failure}");
    assert_eq!(std::fs::read(&object).unwrap(), foreign, "the archived object was overwritten");
    // Postgres keeps the segment and retries.
    let ready = pg.data_dir().join(format!("pg_wal/archive_status/{current}.ready"));
    assert!(ready.exists(), "the segment is no longer waiting to be archived");
    let failed: i64 = c.query_one("SELECT failed_count FROM pg_stat_archiver", &[]).await.unwrap().get(0);
    assert!(failed > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_archive_is_refused() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let first = TestInstance::start(root.path(), &with_archive("pg-1", &store, ""));
    first.wait_ready(READY).await;
    let last = switch_segments(&first, 1).await;
    first.wait_archived(&last, Duration::from_secs(30)).await;

    // A second, unrelated cluster with the same name and destination.
    let other_root = TestDir::new();
    let second = TestInstance::start(other_root.path(), &with_archive("pg-1", &store, ""));
    second.wait_ready(READY).await;
    switch_segments(&second, 1).await;
    let failure = wait_for("the second cluster to be refused", Duration::from_secs(30), || async {
        let a = second.status().await?.archive.ok_or("no archive status")?;
        a.last_failure.ok_or_else(|| "no failure yet".to_string())
    })
    .await;
    assert!(failure.contains("belongs to another cluster"), "{failure}");
    // Nothing of the second cluster's WAL was written.
    let sysid2 = sysid(&second).await;
    for (name, path) in stored_segments(&store, "test") {
        let data = compress::decompress(Compression::Zstd, &std::fs::read(path).unwrap(), SEGMENT as usize).unwrap();
        let u64_at = u64::from_le_bytes(data[24..32].try_into().unwrap());
        assert_ne!(u64_at, sysid2, "{name} of the second cluster reached the first one's archive");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_killed_while_archiving_loses_and_duplicates_nothing() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let mut pg = TestInstance::start(root.path(), &with_archive("pg-1", &store, "    compression: lz4\n"));
    pg.wait_ready(READY).await;
    let sysid = sysid(&pg).await;
    let last = switch_segments(&pg, 16).await;
    // Kill everything while uploads are in flight, then start again.
    pg.kill_all();
    pg.spawn();
    pg.wait_ready(READY).await;
    pg.wait_archived(&last, Duration::from_secs(90)).await;

    let wal = store.join("test/wal");
    let mut seen = std::collections::BTreeMap::<String, Vec<PathBuf>>::new();
    for dir in std::fs::read_dir(&wal).unwrap().flatten().filter(|e| e.path().is_dir()) {
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let file = f.file_name().to_string_lossy().into_owned();
            let name = file.trim_end_matches(".lz4").to_string();
            if parse_wal_name(&name).is_some() {
                seen.entry(name).or_default().push(f.path());
            }
        }
    }
    let Some(WalName::Segment(first)) = seen.keys().next().and_then(|n| parse_wal_name(n)) else { panic!("{seen:?}") };
    let mut id: SegmentId = first;
    loop {
        let name = id.file_name();
        let paths = seen.get(&name).unwrap_or_else(|| panic!("{name} was lost: {:?}", seen.keys()));
        assert_eq!(paths.len(), 1, "{name} is stored twice: {paths:?}");
        let data =
            compress::decompress(Compression::Lz4, &std::fs::read(&paths[0]).unwrap(), SEGMENT as usize).unwrap();
        assert_intact_segment(&name, &data, sysid);
        if name == last {
            break;
        }
        id = id.next(SEGMENT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_archive_is_opaque_without_the_key() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let key_file = root.path().join("archive.key");
    std::fs::write(&key_file, format!("{}\n", "5a".repeat(32))).unwrap();
    let extra = format!("    encryption:\n      keyFile: {}\n", key_file.display());
    let mut o = InstanceOptions::primary("pg-1");
    o.extra_yaml = format!("backup:\n  store:\n    destination: file://{}\n{extra}", store.display());
    let pg = TestInstance::start(root.path(), &o);
    pg.wait_ready(READY).await;
    let last = switch_segments(&pg, 2).await;
    pg.wait_archived(&last, Duration::from_secs(30)).await;
    let sysid = sysid(&pg).await;
    let cipher = instance_manager::archive::cipher::Cipher::from_key_file(&key_file).unwrap();
    let segments = stored_segments(&store, "test");
    assert!(!segments.is_empty());
    for (name, path) in segments {
        let stored = std::fs::read(&path).unwrap();
        assert!(stored.starts_with(b"PGWENC01"), "{name} is not encrypted");
        let packed = cipher.open(&stored).unwrap();
        let data = compress::decompress(Compression::Zstd, &packed, SEGMENT as usize).unwrap();
        assert_intact_segment(&name, &data, sysid);
        let wrong = instance_manager::archive::cipher::Cipher::new(&[0; 32]);
        assert!(wrong.open(&stored).is_err(), "{name} opens with the wrong key");
    }
}
