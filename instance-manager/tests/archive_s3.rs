#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The WAL archive against a real S3-compatible server on loopback (SigV4, TLS with a private
//! CA): segments land intact and compressed; wrong credentials are reported clearly and
//! never shown.

use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use instance_manager::api::Compression;
use instance_manager::archive::{WalName, compress, parse_wal_name};
use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, TestS3, wait_for};
use object_store::{ObjectStore, ObjectStoreExt};

const READY: Duration = Duration::from_secs(90);

fn s3_primary(root: &Path, s3: &TestS3, secret: &str) -> TestInstance {
    let dir = root.join("s3-secrets");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("key"), format!("{}\n", s3.access_key())).unwrap();
    std::fs::write(dir.join("secret"), format!("{secret}\n")).unwrap();
    let ca = s3.ca_pem().map(|pem| {
        std::fs::write(dir.join("ca.pem"), pem).unwrap();
        format!("      caFile: {}\n", dir.join("ca.pem").display())
    });
    let mut o = InstanceOptions::primary("pg-1");
    o.extra_yaml = format!(
        "backup:\n  store:\n    destination: s3://{}/prod\n    s3:\n      endpoint: {}\n      accessKeyIdFile: {}\n      secretAccessKeyFile: {}\n{}",
        s3.bucket(),
        s3.endpoint(),
        dir.join("key").display(),
        dir.join("secret").display(),
        ca.unwrap_or_default(),
    );
    TestInstance::start(root, &o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_land_in_s3_over_tls_with_a_private_ca() {
    let s3 = TestS3::start_tls();
    let root = TestDir::new();
    let pg = s3_primary(root.path(), &s3, s3.secret_key());
    pg.wait_ready(READY).await;
    let c = pg.connect("postgres").await.unwrap();
    let mut last = String::new();
    for _ in 0..4 {
        c.batch_execute("CREATE TABLE IF NOT EXISTS f (x int); INSERT INTO f SELECT generate_series(1, 10000)")
            .await
            .unwrap();
        last = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[]).await.unwrap().get(0);
        c.query_one("SELECT pg_switch_wal()", &[]).await.unwrap();
    }
    wait_for(&format!("{last} archived"), Duration::from_secs(60), || async {
        let a = pg.status().await?.archive.ok_or("no archive status")?;
        if a.last_archived_wal.as_deref() >= Some(last.as_str()) { Ok(()) } else { Err(format!("{a:?}")) }
    })
    .await;

    let store = s3.store();
    let objects: Vec<_> = store.list(Some(&"prod/test/wal".into())).try_collect().await.unwrap();
    let mut segments = 0;
    for meta in objects {
        let file = meta.location.filename().unwrap().to_string();
        let name = file.trim_end_matches(".zst");
        let Some(WalName::Segment(id)) = parse_wal_name(name) else { continue };
        let packed = store.get(&meta.location).await.unwrap().bytes().await.unwrap();
        assert!(packed.len() < 4 << 20, "{name} is not compressed");
        let data = compress::decompress(Compression::Zstd, &packed, 16 << 20).unwrap();
        assert_eq!(u16::from_le_bytes([data[0], data[1]]), 0xD110, "{name} is not WAL");
        assert_eq!(u32::from_le_bytes(data[4..8].try_into().unwrap()), id.timeline);
        segments += 1;
    }
    assert!(segments >= 4, "only {segments} segments in the bucket");
    assert!(store.head(&"prod/test/cluster.json".into()).await.is_ok());
    // A missing object is "not found", not a failure: what `Archiver::is_archived` relies on.
    let missing = store.head(&"prod/test/wal/0000000100000000/0000000100000000000000FF.zst".into()).await;
    assert!(matches!(missing, Err(object_store::Error::NotFound { .. })), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_reported_and_never_shown() {
    let s3 = TestS3::start();
    let root = TestDir::new();
    let pg = s3_primary(root.path(), &s3, "not-the-secret-4b1d");
    pg.wait_ready(READY).await;
    let c = pg.connect("postgres").await.unwrap();
    c.query_one("SELECT pg_switch_wal()", &[]).await.unwrap();
    let failure = wait_for("the archive failure", Duration::from_secs(60), || async {
        let a = pg.status().await?.archive.ok_or("no archive status")?;
        a.last_failure.ok_or_else(|| "no failure yet".to_string())
    })
    .await;
    let lower = failure.to_lowercase();
    assert!(
        lower.contains("403")
            || lower.contains("forbidden")
            || lower.contains("permission")
            || lower.contains("signature"),
        "{failure}"
    );
    let status = pg.get("/status").await.unwrap().1;
    assert!(!status.contains("not-the-secret-4b1d") && !pg.log().contains("not-the-secret-4b1d"), "the secret leaked");
}
