//! The leader-election lease: its record, the storage trait and its backends (docs/architecture.md §4.1).
//!
//! One lease per cluster says who the primary is. Its storage is a [`LeaseStore`] with
//! **compare-and-swap** semantics:
//!
//! - [`get`](LeaseStore::get) returns the record and an opaque [`Version`];
//! - [`create`](LeaseStore::create) succeeds only if no lease exists;
//! - [`replace`](LeaseStore::replace) succeeds only if the stored version is still the one the
//!   caller read. Every successful write yields a new version.
//!
//! A [`LeaseError::Conflict`] therefore means *someone wrote between our read and our write*.
//! The only correct reaction is to **re-read and decide again**, never to retry the same write:
//! the record we wanted to write was computed from a state that no longer exists, and blindly
//! writing it again (with the new version) would overwrite another instance's acquisition. A
//! conflict can also be the echo of our own earlier write that landed although its answer was
//! lost (a timeout, a dropped connection): the re-read then shows our own record, which is how
//! the caller learns that the write succeeded. For the same reason a write that failed with
//! [`Timeout`](LeaseError::Timeout) or [`Unavailable`](LeaseError::Unavailable) has an
//! unknown outcome ([`LeaseError::outcome_unknown`]) and is settled by the next read, never
//! assumed either way. Because the CAS is on the version and not on the content, the version
//! used for a write must come from the very read that decided the write: one task owns it.
//!
//! Backends:
//! - [`KubernetesLeaseStore`]: a `coordination.k8s.io/v1` Lease, CAS on `resourceVersion`;
//! - [`FileLeaseStore`]: a JSON file under `flock`, for instances sharing one host;
//! - [`MemoryLeaseStore`]: in memory, for single-process tests;
//! - `FaultyStore` (cargo feature `testkit`, and unit tests): a wrapper injecting delays,
//!   errors, hangs and 429s for tests; never part of a production build.
//!
//! Time: wall-clock times in the record ([`LeaseRecord::renew_time`], ...) are change detectors
//! for humans and tools only; deadlines are measured on [`crate::clock::BootInstant`]. The
//! per-call helpers [`with_deadline`] and [`retry_rate_limited`] bound how long a call may
//! take; the renew deadline itself is enforced by the HA state machine on its own clock.

mod deadline;
#[cfg(any(test, feature = "testkit"))]
mod faulty;
mod file;
mod kubernetes;
mod memory;
mod timing;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use deadline::{retry_rate_limited, with_deadline};
#[cfg(any(test, feature = "testkit"))]
pub use faulty::{Fault, FaultyStore, Operation};
pub use file::FileLeaseStore;
pub use kubernetes::{KubernetesLeaseStore, SWITCHOVER_TO_ANNOTATION, SYNC_STANDBYS_ANNOTATION};
pub use memory::MemoryLeaseStore;
pub use timing::LeaseTiming;

/// What the lease says, independent of where it is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LeaseRecord {
    /// The instance that holds the lease (the primary), `None` when released.
    pub holder: Option<String>,
    /// How long the holder may go without renewing before others may take the lease.
    pub lease_duration_seconds: u32,
    /// When the current holder acquired it (wall clock; informational).
    pub acquire_time: Option<jiff::Timestamp>,
    /// When the holder last renewed it (wall clock; a change detector, never a deadline).
    pub renew_time: Option<jiff::Timestamp>,
    /// The term: incremented at every change of holder. It is the fencing token stamped on
    /// every derived write (architecture invariant 6). Kubernetes stores it in an `i32`
    /// (`leaseTransitions`); values beyond `i32::MAX` saturate there.
    pub transitions: u64,
    /// The published synchronous standby set (annotation `pgwarden.io/sync-standbys`,
    /// comma-separated). Any member may be promoted; stores keep it sorted and deduplicated.
    pub sync_standbys: Vec<String>,
    /// A pending planned handover to this instance (annotation `pgwarden.io/switchover-to`).
    pub switchover_to: Option<String>,
    /// The cluster the lease belongs to (annotation `pgwarden.io/cluster`): a member of another
    /// cluster pointed at this lease by mistake refuses it instead of acting on it.
    pub cluster: Option<String>,
    /// The Postgres system identifier of the cluster, once known (annotation
    /// `pgwarden.io/system-identifier`): two clusters of the same name are told apart by it.
    pub system_identifier: Option<String>,
}

impl LeaseRecord {
    /// The canonical form the stores write and read back: the synchronous set sorted and
    /// deduplicated, times truncated to microseconds (the precision of a Kubernetes
    /// `MicroTime`). Comparing a re-read record with the one we wrote ("did our write land?")
    /// must compare normalized records.
    pub fn normalized(&self) -> LeaseRecord {
        let mut sync_standbys = self.sync_standbys.clone();
        sync_standbys.sort();
        sync_standbys.dedup();
        LeaseRecord {
            acquire_time: self.acquire_time.map(truncate_to_micros),
            renew_time: self.renew_time.map(truncate_to_micros),
            sync_standbys,
            ..self.clone()
        }
    }

    /// Whether `instance` holds this lease.
    pub fn is_held_by(&self, instance: &str) -> bool {
        self.holder.as_deref() == Some(instance)
    }

    /// Why this lease is not one a member of `cluster` (system identifier `system_identifier`,
    /// when known) may act on: it names another cluster. `None` when it is ours, or when it
    /// carries no identity yet (written by an older version; the holder stamps it).
    pub fn foreign_to(&self, cluster: &str, system_identifier: Option<&str>) -> Option<String> {
        if let Some(theirs) = self.cluster.as_deref().filter(|c| *c != cluster) {
            return Some(format!("the lease belongs to cluster {theirs:?}, not {cluster:?}"));
        }
        match (self.system_identifier.as_deref(), system_identifier) {
            (Some(theirs), Some(ours)) if theirs != ours => Some(format!(
                "the lease belongs to a cluster with system identifier {theirs}, this data directory's is {ours}"
            )),
            _ => None,
        }
    }
}

fn truncate_to_micros(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

/// The opaque version of a stored lease: a Kubernetes `resourceVersion`, or the lease file's
/// counter. Only ever compared for equality, and only by the store that issued it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(pub String);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a lease operation failed, classified by what the caller must do next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Someone else wrote first (or the lease already exists, or it is gone). Re-read the
    /// lease and decide again; never retry the same write.
    #[error("the lease was changed by someone else since it was read (compare-and-swap conflict); re-read it")]
    Conflict,
    /// The store could not be reached or failed transiently (network, HTTP 5xx, I/O).
    #[error("lease store unavailable: {message}")]
    Unavailable {
        /// What failed, on what.
        message: String,
    },
    /// The store asked us to slow down (HTTP 429).
    #[error("lease store rate-limited the request (HTTP 429){}", retry_after_text(*retry_after))]
    RateLimited {
        /// How long the store asked us to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// No answer within the deadline. For a write, it may still have landed.
    #[error("lease store did not answer within {0:?}")]
    Timeout(Duration),
    /// A failure retrying will not fix (permissions, malformed data): needs a human.
    #[error("lease store error: {message}")]
    Fatal {
        /// What failed and a hint on how to fix it.
        message: String,
    },
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default()
}

impl LeaseError {
    /// Whether trying the same operation again later may succeed. A [`Conflict`](Self::Conflict)
    /// is *not* retryable: the caller must re-read first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::RateLimited { .. } | Self::Timeout(_))
    }

    /// Whether a write that failed this way may nevertheless have been applied (its answer was
    /// lost). Only the next read can tell; the CAS makes acting on that read safe.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout(_))
    }
}

/// `Result` with [`LeaseError`].
pub type Result<T, E = LeaseError> = std::result::Result<T, E>;

/// The future returned by [`LeaseStore`] operations.
pub type LeaseFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Storage of the lease with compare-and-swap writes (see the module docs).
///
/// Operations carry no deadline of their own: wrap them in [`with_deadline`]. Dropping a
/// future abandons the operation; a write abandoned in flight may or may not land.
pub trait LeaseStore: Send + Sync + 'static {
    /// Reads the lease: `None` if there is none.
    fn get(&self) -> LeaseFuture<'_, Option<(LeaseRecord, Version)>>;

    /// Creates the lease. [`LeaseError::Conflict`] if it already exists.
    fn create<'a>(&'a self, record: &'a LeaseRecord) -> LeaseFuture<'a, Version>;

    /// Replaces the lease if its version is still `expected`. [`LeaseError::Conflict`] if the
    /// version moved on or the lease no longer exists.
    fn replace<'a>(&'a self, record: &'a LeaseRecord, expected: &'a Version) -> LeaseFuture<'a, Version>;

    /// Where the lease lives, for logs and status: `file /x/y.json`, `kubernetes lease ns/name`.
    fn describe(&self) -> String;
}

impl<S: LeaseStore + ?Sized> LeaseStore for Arc<S> {
    fn get(&self) -> LeaseFuture<'_, Option<(LeaseRecord, Version)>> {
        (**self).get()
    }

    fn create<'a>(&'a self, record: &'a LeaseRecord) -> LeaseFuture<'a, Version> {
        (**self).create(record)
    }

    fn replace<'a>(&'a self, record: &'a LeaseRecord, expected: &'a Version) -> LeaseFuture<'a, Version> {
        (**self).replace(record, expected)
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn record_round_trips_through_json_in_camel_case() {
        let record = LeaseRecord {
            holder: Some("pg-1".into()),
            lease_duration_seconds: 15,
            acquire_time: Some("2026-01-02T03:04:05.123456Z".parse().unwrap()),
            renew_time: None,
            transitions: 7,
            sync_standbys: vec!["pg-2".into()],
            switchover_to: Some("pg-2".into()),
            cluster: Some("main".into()),
            system_identifier: Some("7300000000000000001".into()),
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["leaseDurationSeconds"], 15);
        assert_eq!(json["syncStandbys"][0], "pg-2");
        assert_eq!(serde_json::from_value::<LeaseRecord>(json).unwrap(), record);
        // Missing fields take their defaults, so older files stay readable.
        let minimal: LeaseRecord = serde_json::from_str(r#"{"holder":"pg-1"}"#).unwrap();
        assert_eq!(minimal.transitions, 0);
        assert!(minimal.is_held_by("pg-1") && !minimal.is_held_by("pg-2"));
    }

    #[test]
    fn a_lease_of_another_cluster_is_foreign() {
        let ours = LeaseRecord { cluster: Some("main".into()), ..LeaseRecord::default() };
        assert_eq!(ours.foreign_to("main", None), None);
        assert!(ours.foreign_to("other", None).unwrap().contains("\"main\""));
        let legacy = LeaseRecord::default();
        assert_eq!(legacy.foreign_to("main", Some("1")), None, "a lease without identity is stamped, not refused");
        let sysid = LeaseRecord { system_identifier: Some("1".into()), ..ours };
        assert_eq!(sysid.foreign_to("main", Some("1")), None);
        assert_eq!(sysid.foreign_to("main", None), None, "our own identifier not known yet");
        assert!(sysid.foreign_to("main", Some("2")).unwrap().contains("system identifier 1"));
    }

    #[test]
    fn normalized_sorts_dedups_and_truncates_to_micros() {
        let record = LeaseRecord {
            renew_time: Some("2026-01-02T03:04:05.123456789Z".parse().unwrap()),
            sync_standbys: vec!["pg-3".into(), "pg-2".into(), "pg-3".into()],
            ..LeaseRecord::default()
        };
        let n = record.normalized();
        assert_eq!(n.sync_standbys, vec!["pg-2", "pg-3"]);
        assert_eq!(n.renew_time.unwrap().to_string(), "2026-01-02T03:04:05.123456Z");
        assert_eq!(n.normalized(), n);
    }

    #[test]
    fn errors_are_classified() {
        let retryable = [
            LeaseError::Unavailable { message: "x".into() },
            LeaseError::RateLimited { retry_after: None },
            LeaseError::Timeout(Duration::from_secs(1)),
        ];
        assert!(retryable.iter().all(LeaseError::is_retryable));
        assert!(!LeaseError::Conflict.is_retryable());
        assert!(!LeaseError::Fatal { message: "x".into() }.is_retryable());
        assert!(LeaseError::Timeout(Duration::from_secs(1)).outcome_unknown());
        assert!(!LeaseError::Conflict.outcome_unknown());
        let text = LeaseError::RateLimited { retry_after: Some(Duration::from_secs(2)) }.to_string();
        assert!(text.contains("retry after 2s"), "{text}");
    }

    #[test]
    fn arc_dyn_store_is_a_store() {
        fn assert_store<S: LeaseStore>(_: &S) {}
        let store: Arc<dyn LeaseStore> = Arc::new(FileLeaseStore::new("/nonexistent/lease.json"));
        assert_store(&store);
        assert_eq!(store.describe(), "file /nonexistent/lease.json");
    }
}
