//! How long to wait before reconciling a cluster again after a failed reconcile: 5 s, doubling
//! with each consecutive failure, at most 5 minutes; a successful reconcile resets it.
//!
//! A cluster that fails for a lasting reason (a quota, a missing StorageClass, an admission
//! webhook refusing a Pod) must not hammer the API server every few seconds, while one that
//! failed on a transient error (a conflict, an API server restart) comes back quickly. The
//! count is kept per cluster, so one broken cluster never slows the others down.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The wait after the first failure.
pub const FIRST_DELAY: Duration = Duration::from_secs(5);
/// The longest wait.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// A cluster: `(namespace, name)`.
pub type ClusterKey = (String, String);

/// The wait after `failures` consecutive failures (the first failure is 1).
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// The consecutive failures of each cluster that is failing.
#[derive(Debug, Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<ClusterKey, u32>>,
}

impl ErrorBackoff {
    /// Records a failure of `key`; returns its consecutive failures and the wait before the
    /// next attempt.
    pub fn failed(&self, key: &ClusterKey) -> (u32, Duration) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(key.clone()).or_insert(0);
        *count = count.saturating_add(1);
        (*count, delay(*count))
    }

    /// Records a success of `key`: its next failure waits [`FIRST_DELAY`] again.
    pub fn succeeded(&self, key: &ClusterKey) {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }

    /// Forgets every cluster for which `exists` is false (deleted clusters).
    pub fn retain(&self, exists: impl Fn(&ClusterKey) -> bool) {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).retain(|key, _| exists(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ClusterKey {
        ("db".into(), name.into())
    }

    #[test]
    fn delays_double_from_five_seconds_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| delay(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(0), FIRST_DELAY);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn failures_count_per_cluster_and_a_success_resets_only_that_cluster() {
        let backoff = ErrorBackoff::default();
        assert_eq!(backoff.failed(&key("a")), (1, Duration::from_secs(5)));
        assert_eq!(backoff.failed(&key("a")), (2, Duration::from_secs(10)));
        assert_eq!(backoff.failed(&key("b")), (1, Duration::from_secs(5)), "another cluster has its own count");
        assert_eq!(backoff.failed(&key("a")), (3, Duration::from_secs(20)));
        backoff.succeeded(&key("a"));
        assert_eq!(backoff.failed(&key("a")), (1, Duration::from_secs(5)));
        assert_eq!(backoff.failed(&key("b")), (2, Duration::from_secs(10)));
    }

    #[test]
    fn retain_forgets_deleted_clusters() {
        let backoff = ErrorBackoff::default();
        backoff.failed(&key("a"));
        backoff.failed(&key("b"));
        backoff.retain(|k| k.1 == "b");
        assert_eq!(backoff.failed(&key("a")).0, 1, "a was forgotten");
        assert_eq!(backoff.failed(&key("b")).0, 2, "b was kept");
        backoff.retain(|_| false);
        assert_eq!(backoff.failed(&key("b")).0, 1);
    }
}
