//! Tests of the file lease store: CAS semantics, corruption, and races between tasks and
//! between processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::lease::with_deadline;

fn record(holder: &str, transitions: u64) -> LeaseRecord {
    LeaseRecord {
        holder: Some(holder.into()),
        lease_duration_seconds: 15,
        renew_time: Some(jiff::Timestamp::now()),
        transitions,
        ..LeaseRecord::default()
    }
}

fn store() -> (tempfile::TempDir, FileLeaseStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileLeaseStore::new(dir.path().join("lease.json"));
    (dir, store)
}

#[tokio::test]
async fn create_get_replace() {
    let (_dir, store) = store();
    assert_eq!(store.get().await, Ok(None));

    let first = record("pg-1", 1);
    let v1 = store.create(&first).await.unwrap();
    assert!(v1.0.ends_with(".1"), "{v1}");
    assert_eq!(store.get().await, Ok(Some((first.normalized(), v1.clone()))));

    let second = LeaseRecord { sync_standbys: vec!["pg-3".into(), "pg-2".into()], ..record("pg-1", 1) };
    let v2 = store.replace(&second, &v1).await.unwrap();
    assert!(v2.0.ends_with(".2") && v2.0.split('.').next() == v1.0.split('.').next(), "{v1} then {v2}");
    let (read, version) = store.get().await.unwrap().unwrap();
    assert_eq!(version, v2);
    assert_eq!(read.sync_standbys, vec!["pg-2", "pg-3"], "stored normalized");
    assert_eq!(read, second.normalized());

    let on_disk: serde_json::Value = serde_json::from_slice(&fs::read(store.path()).unwrap()).unwrap();
    assert_eq!(on_disk["version"], 2);
    assert_eq!(on_disk["record"]["holder"], "pg-1");
}

#[tokio::test]
async fn stale_version_conflicts_and_changes_nothing() {
    let (_dir, store) = store();
    let v1 = store.create(&record("pg-1", 1)).await.unwrap();
    let v2 = store.replace(&record("pg-1", 1), &v1).await.unwrap();
    assert_eq!(store.replace(&record("pg-2", 2), &v1).await, Err(LeaseError::Conflict));
    assert_eq!(store.replace(&record("pg-2", 2), &Version("not-a-number".into())).await, Err(LeaseError::Conflict));
    let (read, version) = store.get().await.unwrap().unwrap();
    assert_eq!((read.holder.as_deref(), version), (Some("pg-1"), v2));
}

#[tokio::test]
async fn create_twice_conflicts_and_replace_of_missing_conflicts() {
    let (_dir, store) = store();
    assert_eq!(store.replace(&record("pg-1", 1), &Version("1".into())).await, Err(LeaseError::Conflict));
    store.create(&record("pg-1", 1)).await.unwrap();
    assert_eq!(store.create(&record("pg-2", 1)).await, Err(LeaseError::Conflict));
    assert_eq!(store.get().await.unwrap().unwrap().0.holder.as_deref(), Some("pg-1"));
}

#[tokio::test]
async fn corrupt_file_is_fatal_with_path_and_hint() {
    let (_dir, store) = store();
    fs::write(store.path(), b"{ not json").unwrap();
    let Err(LeaseError::Fatal { message }) = store.get().await else { panic!("expected Fatal") };
    assert!(message.contains(&store.path().display().to_string()), "{message}");
    assert!(message.contains("hint:"), "{message}");
    assert!(matches!(store.create(&record("pg-1", 1)).await, Err(LeaseError::Fatal { .. })));
}

#[tokio::test]
async fn missing_directory_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileLeaseStore::new(dir.path().join("absent/lease.json"));
    let Err(LeaseError::Fatal { message }) = store.get().await else { panic!("expected Fatal") };
    assert!(message.contains("absent/lease.json.lock") && message.contains("hint:"), "{message}");
    assert_eq!(store.describe(), format!("file {}", store.path().display()));
}

#[tokio::test]
async fn operation_abandoned_while_waiting_for_the_lock_does_not_write() {
    let (_dir, store) = store();
    let v1 = store.create(&record("pg-1", 1)).await.unwrap();
    // Another "process" holds the lock (flock locks belong to the open file description).
    let held = lock(&store.paths.lock).unwrap();
    let stale = with_deadline(store.replace(&record("pg-2", 2), &v1), Duration::from_millis(100)).await;
    assert_eq!(stale, Err(LeaseError::Timeout(Duration::from_millis(100))));
    drop(held);
    // The abandoned write never lands: v1 is still current, whoever gets the lock first.
    let v2 = store.replace(&record("pg-1", 1), &v1).await.unwrap();
    let (read, version) = store.get().await.unwrap().unwrap();
    assert_eq!((read.holder.as_deref(), version), (Some("pg-1"), v2));
}

/// Increments `transitions` `n` times with get + replace, re-reading on every conflict.
async fn increment(store: &FileLeaseStore, n: u32) -> u32 {
    let (mut done, mut conflicts) = (0, 0);
    for _attempt in 0..1_000_000 {
        if done == n {
            return conflicts;
        }
        let (mut rec, version) = store.get().await.unwrap().unwrap();
        rec.transitions += 1;
        match store.replace(&rec, &version).await {
            Ok(_) => done += 1,
            Err(LeaseError::Conflict) => conflicts += 1,
            Err(e) => panic!("unexpected error after {done} increments: {e}"),
        }
    }
    panic!("gave up after {done} of {n} increments and {conflicts} conflicts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_tasks_lose_no_increment() {
    let (_dir, store) = store();
    store.create(&record("pg-1", 0)).await.unwrap();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { increment(&store, 50).await })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let (read, version) = store.get().await.unwrap().unwrap();
    assert_eq!(read.transitions, 400, "lost increments ({conflicts} conflicts seen)");
    assert!(version.0.ends_with(".401"), "{version}");
}

#[tokio::test]
async fn a_recreated_file_never_accepts_a_version_of_the_deleted_one() {
    let (_dir, store) = store();
    let v1 = store.create(&record("pg-1", 5)).await.unwrap();
    fs::remove_file(store.path()).unwrap();
    let new = store.create(&record("pg-2", 6)).await.unwrap();
    assert_ne!(new, v1, "versions of a re-created file must not repeat");
    assert_eq!(store.replace(&record("pg-1", 5), &v1).await, Err(LeaseError::Conflict), "a stale holder's renew");
    assert_eq!(store.get().await.unwrap().unwrap().0.holder.as_deref(), Some("pg-2"));
}

#[tokio::test]
async fn files_without_a_generation_keep_their_bare_versions() {
    let (_dir, store) = store();
    let legacy = serde_json::json!({"version": 3, "record": {"holder": "pg-1", "leaseTransitions": 2}});
    fs::write(store.path(), serde_json::to_vec(&legacy).unwrap()).unwrap();
    let (_, version) = store.get().await.unwrap().unwrap();
    assert_eq!(version, Version("3".into()));
    assert_eq!(store.replace(&record("pg-1", 2), &version).await, Ok(Version("4".into())));
}

const CHILD_LEASE_ENV: &str = "PGWARDEN_TEST_LEASE_FILE";
const CHILD_INCREMENTS: u32 = 100;

/// The worker of `concurrent_processes_lose_no_increment`, run in a child process. Does
/// nothing when run directly.
#[tokio::test]
#[ignore = "run as a child process by concurrent_processes_lose_no_increment"]
async fn process_race_child() {
    let Some(path) = std::env::var_os(CHILD_LEASE_ENV) else { return };
    increment(&FileLeaseStore::new(path), CHILD_INCREMENTS).await;
}

/// Kills and reaps the child if the test fails before waiting for it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn concurrent_processes_lose_no_increment() {
    let (_dir, store) = store();
    store.create(&record("pg-1", 0)).await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            let child = Command::new(&exe)
                .args(["--exact", "lease::file::tests::process_race_child", "--ignored", "--test-threads=1"])
                .env(CHILD_LEASE_ENV, store.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            KillOnDrop(child)
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for child in &mut children {
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "child {} still running after 120 s", child.0.id());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "child failed: {status}");
    }
    let (read, _) = store.get().await.unwrap().unwrap();
    assert_eq!(read.transitions, u64::from(2 * CHILD_INCREMENTS), "increments lost across processes");
}
