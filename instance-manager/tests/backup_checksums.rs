#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Data page checksums verified while a base backup reads the data directory, with real
//! Postgres (pgwarden's `initdb` turns data checksums on): a clean cluster's backup finds no
//! bad page; one byte changed on disk in a table's page (written before the backup started)
//! is found, named by file and block, the backup is kept but reported as failed, and
//! retention does not run after it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use instance_manager::api::BackupList;
use instance_manager::backup::BackupInfo;
use instance_manager::backup::tarball::checksum::BadPage;
use instance_manager::cli::ClientError;
use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance};

const READY: Duration = Duration::from_secs(90);
const BACKUP: Duration = Duration::from_secs(180);
const BLCKSZ: u64 = 8192;

async fn backup(inst: &TestInstance) -> Result<BackupInfo, ClientError> {
    inst.socket_client(BACKUP).post_json("/backup", &serde_json::json!({}), None).await
}

async fn list(inst: &TestInstance) -> Vec<BackupInfo> {
    let l: BackupList = inst.client().get_json("/backups").await.expect("GET /backups");
    l.backups.into_iter().map(|b| b.info).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_page_is_found_named_and_fails_the_backup_which_is_kept() {
    let root = TestDir::new();
    let store = root.path().join("store");
    let yaml = format!(
        "backup:\n  store:\n    destination: file://{}\n  base:\n    partSizeMiB: 5\n  retention:\n    count: 1\n",
        store.display()
    );
    let pg =
        TestInstance::start(root.path(), &InstanceOptions { extra_yaml: yaml, ..InstanceOptions::primary("pg-1") });
    pg.wait_ready(READY).await;

    // A table of several pages, frozen (no hint bit will change them again) and written out;
    // nothing touches it afterwards, so its pages' LSNs stay before any backup's start.
    let c = pg.connect("postgres").await.unwrap();
    c.batch_execute(
        "CREATE TABLE victim WITH (autovacuum_enabled = off) AS \
         SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 2000) g",
    )
    .await
    .unwrap();
    c.batch_execute("VACUUM FREEZE victim").await.unwrap();
    c.batch_execute("CHECKPOINT").await.unwrap();
    let file: String = c.query_one("SELECT pg_relation_filepath('victim')", &[]).await.unwrap().get(0);
    let pages: i64 = c.query_one("SELECT pg_relation_size('victim') / 8192", &[]).await.unwrap().get(0);
    assert!(pages >= 3, "victim has {pages} pages");

    let clean = backup(&pg).await.expect("a clean cluster's backup");
    assert_eq!(clean.checksum_failures, Some(0), "checksums verified, none bad: {clean:?}");
    assert!(clean.checksum_failed_pages.is_empty());
    let b = pg.status().await.unwrap().backup.unwrap();
    assert_eq!(b.last_backup.as_ref().and_then(|l| l.checksum_failures), Some(0), "{b:?}");
    assert!(b.last_failure.is_none() && b.failures_total == 0, "{b:?}");

    // One byte of block 1's tuples, changed behind Postgres' back (its buffer is clean: it
    // is never written over).
    let path = pg.data_dir().join(&file);
    let at = BLCKSZ + 6000;
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[byte[0] ^ 0x5A]).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let failed = backup(&pg).await.expect_err("a backup that finds a bad page fails");
    let ClientError::Api { status: 500, error, .. } = &failed else { panic!("not a 500: {failed}") };
    let named = format!("1 data page(s) failed checksum verification, the first in {file} block 1");
    assert!(error.contains(&named), "{error}");

    // Kept, described, and not followed by retention (count 1 would have deleted the clean one).
    let all = list(&pg).await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].id, clean.id);
    let corrupt = &all[1];
    assert_eq!(corrupt.checksum_failures, Some(1), "{corrupt:?}");
    assert_eq!(corrupt.checksum_failed_pages, [BadPage { file: file.clone(), block: 1 }]);
    let on_disk: BackupInfo =
        serde_json::from_slice(&std::fs::read(store.join("test/base").join(&corrupt.id).join("backup.json")).unwrap())
            .unwrap();
    assert_eq!(&on_disk, corrupt);

    let b = pg.status().await.unwrap().backup.unwrap();
    let last = b.last_backup.as_ref().expect("the corrupt backup is the last one");
    assert_eq!((last.id.as_str(), last.checksum_failures), (corrupt.id.as_str(), Some(1)));
    assert_eq!(b.failures_total, 1, "{b:?}");
    let why = b.last_failure.as_deref().unwrap_or_default();
    assert!(why.starts_with(&corrupt.id) && why.contains(&named), "{why}");
    let metrics = pg.scrape().await.unwrap();
    assert!(metrics.contains("pgwarden_backup_last_checksum_failures 1"), "{metrics}");
    assert!(metrics.contains("pgwarden_backup_failures_total 1"), "{metrics}");
}
