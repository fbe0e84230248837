//! Tests of the fault-injecting store, in-process and through the fault file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::*;
use crate::lease::{MemoryLeaseStore, with_deadline};

fn record(holder: &str) -> LeaseRecord {
    LeaseRecord { holder: Some(holder.into()), lease_duration_seconds: 15, ..LeaseRecord::default() }
}

/// A faulty store over a memory store holding a lease at version 1.
async fn faulty() -> (Arc<FaultyStore<MemoryLeaseStore>>, Version) {
    let store = FaultyStore::new(MemoryLeaseStore::new());
    let v1 = store.create(&record("pg-1")).await.unwrap();
    (Arc::new(store), v1)
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn no_fault_passes_through() {
    let (store, v1) = faulty().await;
    assert_eq!(store.get().await.unwrap(), Some((record("pg-1"), v1.clone())));
    store.replace(&record("pg-2"), &v1).await.unwrap();
    assert_eq!(store.calls(Operation::Get), 1);
    assert_eq!(store.calls(Operation::Create), 1);
    assert_eq!(store.calls(Operation::Replace), 1);
    assert_eq!(store.describe(), "memory (with fault injection)");
}

#[tokio::test(start_paused = true)]
async fn error_conflict_and_rate_limited_skip_the_inner_store() {
    let (store, v1) = faulty().await;
    let down = LeaseError::Unavailable { message: "api server down".into() };
    store.set(Fault::Error(down.clone()));
    assert_eq!(store.get().await, Err(down.clone()));
    assert_eq!(store.replace(&record("pg-2"), &v1).await, Err(down));

    store.set(Fault::Conflict);
    assert_eq!(store.replace(&record("pg-2"), &v1).await, Err(LeaseError::Conflict));

    store.set(Fault::RateLimited(Some(SECOND)));
    assert_eq!(store.get().await, Err(LeaseError::RateLimited { retry_after: Some(SECOND) }));

    store.clear();
    assert_eq!(store.get().await.unwrap(), Some((record("pg-1"), v1)), "nothing was written");
}

#[tokio::test(start_paused = true)]
async fn delay_then_answers() {
    let (store, _) = faulty().await;
    store.set(Fault::Delay(3 * SECOND));
    let start = tokio::time::Instant::now();
    assert!(store.get().await.unwrap().is_some());
    assert_eq!(start.elapsed(), 3 * SECOND);
    assert_eq!(with_deadline(store.get(), SECOND).await, Err(LeaseError::Timeout(SECOND)));
}

#[tokio::test(start_paused = true)]
async fn hang_lasts_until_cleared() {
    let (store, v1) = faulty().await;
    store.set(Fault::Hang);
    assert_eq!(with_deadline(store.get(), 60 * SECOND).await, Err(LeaseError::Timeout(60 * SECOND)));

    let pending = tokio::spawn({
        let store = Arc::clone(&store);
        let v1 = v1.clone();
        async move { store.replace(&record("pg-2"), &v1).await }
    });
    tokio::time::sleep(10 * SECOND).await;
    assert!(!pending.is_finished());
    store.clear();
    assert_eq!(pending.await.unwrap(), Ok(Version("2".into())), "proceeds once cleared");
}

#[tokio::test(start_paused = true)]
async fn once_and_set_for_aim_at_operations() {
    let (store, v1) = faulty().await;
    store.set_for(Operation::Replace, Fault::Conflict);
    assert!(store.get().await.is_ok(), "get is not aimed at");
    assert_eq!(store.replace(&record("pg-2"), &v1).await, Err(LeaseError::Conflict));

    store.clear();
    store.once(Some(Operation::Get), Fault::Error(LeaseError::Timeout(SECOND)));
    assert_eq!(store.get().await, Err(LeaseError::Timeout(SECOND)));
    assert!(store.get().await.is_ok(), "a one-shot fault applies once");

    store.once(None, Fault::Hang);
    assert!(with_deadline(store.get(), SECOND).await.is_err(), "a one-shot hang hangs");
    assert!(store.get().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn write_then_conflict_lands_the_write_and_loses_the_answer() {
    let (store, v1) = faulty().await;
    store.set(Fault::WriteThenConflict);
    assert_eq!(store.replace(&record("pg-2"), &v1).await, Err(LeaseError::Conflict));
    // A re-read shows our own record: the write landed.
    let (read, v2) = store.get().await.unwrap().unwrap();
    assert_eq!((read, v2), (record("pg-2"), Version("2".into())));
    // A create over an existing lease also reports Conflict (and writes nothing).
    assert_eq!(store.create(&record("pg-3")).await, Err(LeaseError::Conflict));
    assert_eq!(store.inner().get().await.unwrap().unwrap().0, record("pg-2"));
}

fn write_fault_file(path: &std::path::Path, json: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn fault_file_is_read_on_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fault.json");
    let store = FaultyStore::new(MemoryLeaseStore::new()).with_fault_file(&path);
    let v1 = store.create(&record("pg-1")).await.unwrap();
    assert!(store.get().await.is_ok(), "absent file: no fault");

    write_fault_file(&path, "");
    assert!(store.get().await.is_ok(), "empty file: no fault");

    write_fault_file(&path, r#"{"fault":"error","message":"boom"}"#);
    assert_eq!(store.get().await, Err(LeaseError::Unavailable { message: "boom".into() }));
    write_fault_file(&path, r#"{"fault":"error","kind":"fatal","message":"forbidden"}"#);
    assert_eq!(store.get().await, Err(LeaseError::Fatal { message: "forbidden".into() }));

    write_fault_file(&path, r#"{"fault":"rate_limited","retry_after_ms":1500}"#);
    let limited = LeaseError::RateLimited { retry_after: Some(Duration::from_millis(1500)) };
    assert_eq!(store.get().await, Err(limited));

    write_fault_file(&path, r#"{"fault":"conflict","ops":["replace"]}"#);
    assert!(store.get().await.is_ok(), "ops limits the fault");
    assert_eq!(store.replace(&record("pg-2"), &v1).await, Err(LeaseError::Conflict));

    write_fault_file(&path, r#"{"fault":"delay","ms":30}"#);
    let start = std::time::Instant::now();
    assert!(store.get().await.is_ok());
    assert!(start.elapsed() >= Duration::from_millis(30));

    write_fault_file(&path, r#"{"fault":"write_then_conflict"}"#);
    assert_eq!(store.replace(&record("pg-2"), &v1).await, Err(LeaseError::Conflict));
    write_fault_file(&path, r#"{"fault":"none"}"#);
    assert_eq!(store.get().await.unwrap().unwrap().0, record("pg-2"));

    write_fault_file(&path, r#"{"fault":"explode"}"#);
    let Err(LeaseError::Fatal { message }) = store.get().await else { panic!("expected Fatal") };
    assert!(message.contains("fault.json") && message.contains("hint:"), "{message}");
}

#[tokio::test]
async fn fault_file_hang_lasts_until_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fault.json");
    let store = Arc::new(FaultyStore::new(MemoryLeaseStore::new()).with_fault_file(&path));
    store.create(&record("pg-1")).await.unwrap();
    write_fault_file(&path, r#"{"fault":"hang"}"#);
    assert_eq!(
        with_deadline(store.get(), Duration::from_millis(200)).await,
        Err(LeaseError::Timeout(Duration::from_millis(200)))
    );

    let pending = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.get().await }
    });
    write_fault_file(&path, r#"{"fault":"none"}"#);
    let answer = tokio::time::timeout(Duration::from_secs(10), pending).await;
    let answer = answer.expect("still hung 10 s after the fault file was cleared").unwrap();
    assert_eq!(answer.unwrap().unwrap().0, record("pg-1"));
}
