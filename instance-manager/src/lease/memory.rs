//! An in-memory [`LeaseStore`] for tests of a single process: the compare-and-swap semantics
//! of the real backends without I/O, so it also runs under tokio's paused time.

use std::sync::{Arc, Mutex, PoisonError};

use super::{LeaseError, LeaseFuture, LeaseRecord, LeaseStore, Version};

/// A lease held in memory. Clones share the same lease, like instances sharing a store.
#[derive(Clone, Debug, Default)]
pub struct MemoryLeaseStore {
    lease: Arc<Mutex<Option<(LeaseRecord, u64)>>>,
}

impl MemoryLeaseStore {
    /// A store with no lease.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Option<(LeaseRecord, u64)>) -> T) -> T {
        f(&mut self.lease.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl LeaseStore for MemoryLeaseStore {
    fn get(&self) -> LeaseFuture<'_, Option<(LeaseRecord, Version)>> {
        let current = self.with(|lease| lease.clone());
        Box::pin(std::future::ready(Ok(current.map(|(record, v)| (record, Version(v.to_string()))))))
    }

    fn create<'a>(&'a self, record: &'a LeaseRecord) -> LeaseFuture<'a, Version> {
        let result = self.with(|lease| match lease {
            Some(_) => Err(LeaseError::Conflict),
            None => {
                *lease = Some((record.normalized(), 1));
                Ok(Version("1".into()))
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn replace<'a>(&'a self, record: &'a LeaseRecord, expected: &'a Version) -> LeaseFuture<'a, Version> {
        let result = self.with(|lease| match lease {
            Some((current, v)) if v.to_string() == expected.0 => {
                *v += 1;
                *current = record.normalized();
                Ok(Version(v.to_string()))
            }
            _ => Err(LeaseError::Conflict),
        });
        Box::pin(std::future::ready(result))
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn compare_and_swap() {
        let store = MemoryLeaseStore::new();
        let shared = store.clone();
        assert_eq!(store.get().await, Ok(None));
        assert_eq!(store.replace(&LeaseRecord::default(), &Version("1".into())).await, Err(LeaseError::Conflict));
        let v1 = store.create(&LeaseRecord::default()).await.unwrap();
        assert_eq!(shared.create(&LeaseRecord::default()).await, Err(LeaseError::Conflict));
        let record = LeaseRecord { holder: Some("pg-1".into()), ..LeaseRecord::default() };
        let v2 = shared.replace(&record, &v1).await.unwrap();
        assert_eq!(store.replace(&record, &v1).await, Err(LeaseError::Conflict));
        assert_eq!(store.get().await, Ok(Some((record, v2))));
    }
}
