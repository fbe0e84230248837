#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! What the WAL archive and base backups need from an S3-compatible store, checked with the
//! real `object_store` client (configured as pgwarden configures it: endpoint, path-style,
//! HTTP allowed, `us-east-1`, SigV4 credentials) against the real test server
//! ([`TestS3`]: s3s over s3s-fs on loopback). Each test asserts something a user of the
//! archive would notice.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use instance_manager::testkit::{TestS3, TestS3Options};
use object_store::aws::{AmazonS3, S3CopyIfNotExists};
use object_store::path::Path;
use object_store::{
    Error, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};

/// A WAL segment's size.
const SEGMENT: usize = 16 * 1024 * 1024;

/// `len` bytes that differ with `seed` (xorshift; no two seeds give the same prefix).
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn wal(name: &str) -> Path {
    Path::from(format!("pg/main/wal/0000000100000000/{name}"))
}

async fn read(store: &AmazonS3, path: &Path) -> Vec<u8> {
    store.get(path).await.unwrap_or_else(|e| panic!("get {path}: {e}")).bytes().await.unwrap().to_vec()
}

async fn create(store: &AmazonS3, path: &Path, body: Vec<u8>) -> object_store::Result<()> {
    store.put_opts(path, PutPayload::from(body), PutOptions::from(PutMode::Create)).await.map(drop)
}

#[tokio::test]
async fn an_archived_segment_reads_back_lists_and_deletes() {
    let s3 = TestS3::start();
    let store = s3.store();
    let seg = wal("000000010000000000000001");
    let body = data(1, SEGMENT);

    store.put(&seg, PutPayload::from(body.clone())).await.expect("upload a WAL segment");
    assert!(read(&store, &seg).await == body, "the segment read back differs from the one archived");
    assert_eq!(store.head(&seg).await.unwrap().size, SEGMENT as u64, "head reports the segment's size");
    assert_eq!(std::fs::read(s3.object_file(seg.as_ref())).unwrap().len(), SEGMENT, "stored as a file");

    store.put(&wal("000000010000000000000002"), PutPayload::from(data(2, 100))).await.unwrap();
    store.put(&Path::from("pg/main/base/20250101T000000/backup.json"), PutPayload::from("{}")).await.unwrap();
    let mut listed: Vec<_> = store
        .list(Some(&Path::from("pg/main/wal")))
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect()
        .await
        .expect("list the WAL");
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("pg/main/wal/0000000100000000/000000010000000000000001".to_owned(), SEGMENT as u64),
            ("pg/main/wal/0000000100000000/000000010000000000000002".to_owned(), 100),
        ],
        "listing the WAL prefix shows exactly the two segments, with their sizes"
    );
    let top = store.list_with_delimiter(Some(&Path::from("pg/main"))).await.expect("list with delimiter");
    let dirs: Vec<String> = top.common_prefixes.iter().map(ToString::to_string).collect();
    assert_eq!(dirs, vec!["pg/main/base", "pg/main/wal"], "the cluster prefix holds base/ and wal/");

    store.delete(&seg).await.expect("delete the segment");
    assert!(matches!(store.get(&seg).await, Err(Error::NotFound { .. })), "a deleted segment is gone");
    assert!(matches!(store.head(&seg).await, Err(Error::NotFound { .. })), "head of a deleted segment: not found");
    // Deleting what is already gone is success, as on S3 (retention may race a manual cleanup).
    store.delete(&seg).await.expect("delete a missing segment");
}

#[tokio::test]
async fn a_ranged_get_returns_only_the_range() {
    let s3 = TestS3::start();
    let store = s3.store();
    let path = Path::from("pg/main/base/b1/data.0.tar.zst");
    let body = data(3, 1_000_000);
    store.put(&path, PutPayload::from(body.clone())).await.unwrap();

    let got = store.get_range(&path, 123_456..223_456).await.expect("ranged get");
    assert!(got.as_ref() == &body[123_456..223_456], "the range's bytes are the object's bytes at that offset");
    let ranges = store.get_ranges(&path, &[0..10, 999_990..1_000_000]).await.expect("two ranges");
    assert_eq!(ranges[0].as_ref(), &body[..10]);
    assert_eq!(ranges[1].as_ref(), &body[999_990..]);
}

#[tokio::test]
async fn a_second_create_of_a_wal_segment_is_refused_and_the_first_content_stays() {
    let s3 = TestS3::start();
    let store = s3.store();
    let seg = wal("000000010000000000000003");
    let first = data(10, SEGMENT);

    create(&store, &seg, first.clone()).await.expect("the first create of a segment succeeds");
    let second = create(&store, &seg, data(11, SEGMENT)).await;
    assert!(matches!(second, Err(Error::AlreadyExists { .. })), "second create must be AlreadyExists, got {second:?}");
    assert!(read(&store, &seg).await == first, "the refused create must not have replaced the archived segment");
    // A create of another name is unaffected.
    create(&store, &wal("000000010000000000000004"), data(12, 10)).await.expect("create another segment");
}

#[tokio::test]
async fn concurrent_creates_of_one_segment_have_exactly_one_winner() {
    let s3 = TestS3::start();
    let store = Arc::new(s3.store());
    for round in 0..6u64 {
        let seg = wal(&format!("0000000100000000000000{round:02X}"));
        let tasks: Vec<_> = (0..8u64)
            .map(|writer| {
                let (store, seg) = (Arc::clone(&store), seg.clone());
                tokio::spawn(async move { (writer, create(&store, &seg, data(round * 100 + writer, 1 << 20)).await) })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (writer, Ok(())) => winners.push(writer),
                (_, Err(Error::AlreadyExists { .. })) => {}
                (writer, Err(e)) => panic!("round {round}: writer {writer} failed otherwise: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one create may win, winners: {winners:?}");
        let stored = read(&store, &seg).await;
        assert!(stored == data(round * 100 + winners[0], 1 << 20), "round {round}: the stored segment is the winner's");
    }
}

#[tokio::test]
async fn a_multipart_backup_with_parallel_parts_reads_back_whole() {
    let s3 = TestS3::start();
    let store = s3.store();
    let path = Path::from("pg/main/base/b2/data.0.tar.zst");
    // 23 MiB in 5 MiB parts (S3's minimum part size), up to 4 in flight, written in odd-sized
    // pieces as a tar stream would be.
    let body = data(20, 23 * 1024 * 1024 + 12_345);
    let upload = store.put_multipart(&path).await.expect("start a multipart upload");
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
    for piece in body.chunks(700_001) {
        writer.wait_for_capacity(4).await.expect("a part upload failed");
        writer.write(piece);
    }
    writer.finish().await.expect("complete the multipart upload");

    assert_eq!(store.head(&path).await.unwrap().size, body.len() as u64, "the object has the whole size");
    assert!(read(&store, &path).await == body, "the parts are assembled in order");
}

#[tokio::test]
async fn parts_uploaded_out_of_order_and_concurrently_assemble_in_order() {
    let s3 = TestS3::start();
    let store = s3.store();
    let path = Path::from("pg/main/base/b3/data.1.tar.zst");
    let parts: Vec<Vec<u8>> = (0..4).map(|i| data(30 + i, 5 * 1024 * 1024 + i as usize)).collect();
    let mut upload = store.put_multipart(&path).await.unwrap();
    let futures: Vec<_> = parts.iter().map(|p| upload.put_part(PutPayload::from(p.clone()))).collect();
    // Poll the last part first, all together.
    futures_util::future::try_join_all(futures.into_iter().rev()).await.expect("upload the parts");
    upload.complete().await.expect("complete");
    assert!(read(&store, &path).await == parts.concat(), "part numbers, not arrival order, decide the layout");
}

#[tokio::test]
async fn an_aborted_multipart_upload_leaves_no_object() {
    let s3 = TestS3::start();
    let store = s3.store();
    let path = Path::from("pg/main/base/b4/data.0.tar.zst");
    let mut upload = store.put_multipart(&path).await.unwrap();
    upload.put_part(PutPayload::from(data(40, 5 * 1024 * 1024))).await.unwrap();
    upload.abort().await.expect("abort the upload");
    assert!(matches!(store.head(&path).await, Err(Error::NotFound { .. })), "an aborted backup is not visible");
}

#[tokio::test]
async fn copy_duplicates_and_copy_if_not_exists_refuses_an_existing_target() {
    let s3 = TestS3::start();
    let store = s3.store_builder().with_copy_if_not_exists(S3CopyIfNotExists::Multipart).build().unwrap();
    let (a, b) = (Path::from("pg/main/wal/00000002.history"), Path::from("pg/other/wal/00000002.history"));
    store.put(&a, PutPayload::from("1\t0/3000000\tno recovery target specified\n")).await.unwrap();

    store.copy(&a, &b).await.expect("copy");
    assert_eq!(read(&store, &b).await, read(&store, &a).await, "the copy has the source's bytes");

    let c = Path::from("pg/main/wal/00000003.history");
    store.copy_if_not_exists(&a, &c).await.expect("copy to a new name");
    store.put(&b, PutPayload::from("different")).await.unwrap();
    let again = store.copy_if_not_exists(&a, &b).await;
    assert!(matches!(again, Err(Error::AlreadyExists { .. })), "copy over an existing object: {again:?}");
    assert_eq!(read(&store, &b).await, b"different", "the refused copy left the target alone");
}

#[tokio::test]
async fn an_update_of_a_stale_version_is_refused() {
    let s3 = TestS3::start();
    let store = s3.store();
    let path = Path::from("pg/main/base/catalog.json");
    let v1 = store.put(&path, PutPayload::from("[1]")).await.unwrap();
    let update = |v: &object_store::PutResult| PutOptions::from(PutMode::Update(UpdateVersion::from(v.clone())));

    let v2 = store.put_opts(&path, PutPayload::from("[1,2]"), update(&v1)).await.expect("update the current version");
    let stale = store.put_opts(&path, PutPayload::from("[1,3]"), update(&v1)).await;
    assert!(matches!(stale, Err(Error::Precondition { .. })), "an update from a stale version: {stale:?}");
    assert_eq!(read(&store, &path).await, b"[1,2]", "the catalog keeps the newer write");
    store.put_opts(&path, PutPayload::from("[1,2,3]"), update(&v2)).await.expect("update from the current version");
}

#[tokio::test]
async fn retention_deletes_many_segments_in_bulk() {
    let s3 = TestS3::start();
    let store = s3.store();
    let names: Vec<Path> = (1..=25).map(|i| wal(&format!("0000000100000000000000{i:02X}"))).collect();
    for p in &names {
        store.put(p, PutPayload::from(data(50, 100))).await.unwrap();
    }
    let keep = wal("000000010000000000000019");
    let doomed: Vec<_> = names.iter().filter(|p| **p != keep).cloned().map(Ok).collect();
    let deleted: Vec<Path> =
        store.delete_stream(futures_util::stream::iter(doomed).boxed()).try_collect().await.expect("bulk delete");
    assert_eq!(deleted.len(), 24);
    let left: Vec<_> = store.list(Some(&Path::from("pg/main/wal"))).map_ok(|m| m.location).try_collect().await.unwrap();
    assert_eq!(left, vec![keep], "only the kept segment remains");
}

#[tokio::test]
async fn listing_after_an_offset_starts_past_it() {
    let s3 = TestS3::start();
    let store = s3.store();
    for i in 1..=5 {
        store.put(&wal(&format!("00000001000000000000000{i}")), PutPayload::from("x")).await.unwrap();
    }
    let after: Vec<String> = store
        .list_with_offset(Some(&Path::from("pg/main/wal")), &wal("000000010000000000000003"))
        .map_ok(|m| m.location.filename().unwrap_or_default().to_owned())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(after, vec!["000000010000000000000004", "000000010000000000000005"]);
}

#[tokio::test]
async fn a_request_signed_with_the_wrong_secret_is_refused_and_writes_nothing() {
    let s3 = TestS3::start();
    let wrong = s3.store_builder().with_secret_access_key("not-the-secret").build().unwrap();
    let seg = wal("000000010000000000000009");
    // A whole segment: the refusal comes before the body is read, and must still arrive as 403.
    let put = wrong.put(&seg, PutPayload::from(data(80, SEGMENT))).await;
    assert!(matches!(put, Err(Error::PermissionDenied { .. })), "a forged signature must be refused: {put:?}");
    assert!(!s3.object_file(seg.as_ref()).exists(), "a refused upload must not reach the disk");
    let get = wrong.get(&seg).await;
    assert!(matches!(get, Err(Error::PermissionDenied { .. })), "reads are authenticated too: {get:?}");
}

#[tokio::test]
async fn the_store_works_over_tls_with_the_generated_ca_only() {
    let s3 = TestS3::start_tls();
    assert!(s3.endpoint().starts_with("https://127.0.0.1:"), "endpoint {}", s3.endpoint());
    let store = s3.store();
    let seg = wal("00000001000000000000000A");
    store.put(&seg, PutPayload::from(data(60, SEGMENT))).await.expect("upload over TLS");
    assert!(read(&store, &seg).await == data(60, SEGMENT), "the segment reads back over TLS");

    let untrusting = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_bucket_name(s3.bucket())
        .with_region(s3.region())
        .with_access_key_id(s3.access_key())
        .with_secret_access_key(s3.secret_key())
        .with_retry(object_store::RetryConfig { max_retries: 0, ..Default::default() })
        .build()
        .unwrap();
    assert!(untrusting.head(&seg).await.is_err(), "a client that does not trust the test CA must fail");
}

#[tokio::test(flavor = "current_thread")]
async fn a_store_in_a_given_directory_and_bucket_survives_a_restart() {
    let dir = instance_manager::testkit::TestDir::new();
    let options = TestS3Options { root: Some(dir.path().join("s3")), bucket: Some("archive".into()), tls: false };
    let seg = wal("00000001000000000000000B");
    {
        let s3 = TestS3::start_with(options.clone());
        assert_eq!(s3.bucket(), "archive");
        s3.store().put(&seg, PutPayload::from("kept")).await.unwrap();
    }
    let s3 = TestS3::start_with(options);
    assert_eq!(read(&s3.store(), &seg).await, b"kept", "objects persist in the directory across servers");
}

/// A plain `#[test]`: the server needs no runtime from the test, and dropping it closes the port.
#[test]
fn a_sync_test_can_use_it_and_drop_closes_the_port() {
    let s3 = TestS3::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = s3.store();
    let seg = wal("00000001000000000000000C");
    runtime.block_on(store.put(&seg, PutPayload::from("sync"))).unwrap();
    // The test's runtime goes first; the server does not depend on it.
    drop(runtime);
    let addr = s3.endpoint().trim_start_matches("http://").to_owned();
    assert!(std::fs::read(s3.object_file(seg.as_ref())).unwrap() == b"sync");
    drop(s3);
    let refused = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2));
    assert!(refused.is_err(), "after drop nothing may listen on {addr}");
}

#[tokio::test]
async fn the_binary_prints_its_endpoint_serves_and_stops_on_sigterm() {
    let dir = instance_manager::testkit::TestDir::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgwarden-test-s3"))
        .args(["--dir", dir.path().join("s3").to_str().unwrap(), "--listen", "127.0.0.1:0", "--bucket", "bench"])
        .args(["--access-key", "AK", "--secret-key", "SK"])
        .stdout(Stdio::piped())
        .spawn()
        .map(KillOnDrop)
        .expect("start pgwarden-test-s3");
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line =
        tokio::time::timeout(Duration::from_secs(30), line).await.expect("no ready line in 30 s").unwrap().unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
    assert_eq!(
        (ready["bucket"].as_str(), ready["accessKey"].as_str(), ready["secretKey"].as_str()),
        (Some("bench"), Some("AK"), Some("SK"))
    );

    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(ready["endpoint"].as_str().unwrap())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_region("us-east-1")
        .with_bucket_name("bench")
        .with_access_key_id("AK")
        .with_secret_access_key("SK")
        .build()
        .unwrap();
    let seg = wal("00000001000000000000000D");
    create(&store, &seg, data(70, 1000)).await.expect("create through the binary");
    let again = create(&store, &seg, data(71, 1000)).await;
    assert!(matches!(again, Err(Error::AlreadyExists { .. })), "the binary refuses a second create: {again:?}");
    assert!(read(&store, &seg).await == data(70, 1000));

    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            panic!("pgwarden-test-s3 still running 10 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "pgwarden-test-s3 exits cleanly on SIGTERM: {status}");
}

/// Kills (and reaps) the child if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
