//! The operator's own Prometheus metrics, served by [`super::http`] at `/metrics` in the
//! OpenMetrics text format.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `pgwarden_operator_reconciles_total` | counter | reconciles run, successful or not |
//! | `pgwarden_operator_reconcile_errors_total{kind}` | counter | failed reconciles, by [`ReconcileError::kind`](crate::reconcile::ReconcileError::kind) |
//! | `pgwarden_operator_reconcile_duration_seconds` | histogram | how long one reconcile took |
//! | `pgwarden_operator_clusters{phase}` | gauge | how many clusters are in each phase |
//! | `pgwarden_operator_backup_reconciles_total` | counter | reconciles of `PostgresBackup`s run, successful or not |
//! | `pgwarden_operator_backup_reconcile_errors_total{kind}` | counter | failed backup reconciles, by [`BackupError::kind`](crate::backup_reconcile::BackupError::kind) |
//! | `pgwarden_operator_leader` | gauge | 1 while this replica holds the leader lease, else 0 |
//!
//! The phase gauge is kept by [`Metrics`] as the reconcile's [`Observer`]: one map from each
//! cluster to its phase is the source of truth, and the gauge moves under the same lock, so a
//! phase change or a deletion can never leave a cluster counted twice or not at all. A phase
//! that no cluster is in any more stays at 0 (Prometheus keeps a continuous series).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::reconcile::Observer;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The prefix of every metric name.
const PREFIX: &str = "pgwarden_operator";

/// Label of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

/// Label of the cluster gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

/// A cluster, as the phase map keys it.
type ClusterKey = (String, String);

/// The registry and every metric in it. Shared (`Arc`) by the controller, the reconcile (as its
/// [`Observer`]) and the HTTP server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    clusters: Family<PhaseLabels, Gauge>,
    backup_reconciles: Counter,
    backup_errors: Family<ErrorLabels, Counter>,
    leader: Gauge,
    /// Each cluster's current phase; the `clusters` gauge is derived from it under this lock.
    phases: Mutex<BTreeMap<ClusterKey, String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run, successful or not", reconciles.clone());
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("reconcile_errors", "Failed reconciles, by kind of error", errors.clone());
        // 5 ms to about 41 s: a reconcile is a handful of API calls, a slow one waits on timeouts.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register_with_unit(
            "reconcile_duration",
            "How long one reconcile took",
            Unit::Seconds,
            duration.clone(),
        );
        let clusters = Family::<PhaseLabels, Gauge>::default();
        registry.register("clusters", "PostgresClusters in each phase", clusters.clone());
        let backup_reconciles = Counter::default();
        registry.register(
            "backup_reconciles",
            "PostgresBackup reconciles run, successful or not",
            backup_reconciles.clone(),
        );
        let backup_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "backup_reconcile_errors",
            "Failed PostgresBackup reconciles, by kind of error",
            backup_errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and reconciles, else 0",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            clusters,
            backup_reconciles,
            backup_errors,
            leader,
            phases: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one reconcile: how long it took and, if it failed, the kind of error.
    pub fn reconciled(&self, took: Duration, error_kind: Option<&'static str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(kind) = error_kind {
            self.errors.get_or_create(&ErrorLabels { kind }).inc();
        }
    }

    /// Records one reconcile of a `PostgresBackup` and, if it failed, the kind of error. How
    /// long it took is not measured: it is mostly the instance's answer time.
    pub fn backup_reconciled(&self, error_kind: Option<&'static str>) {
        self.backup_reconciles.inc();
        if let Some(kind) = error_kind {
            self.backup_errors.get_or_create(&ErrorLabels { kind }).inc();
        }
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The clusters that have a phase, as `(namespace, name)`.
    pub fn clusters(&self) -> Vec<(String, String)> {
        self.phases.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }

    /// The registry in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    fn gauge_add(&self, phase: &str, delta: i64) {
        self.clusters.get_or_create(&PhaseLabels { phase: phase.to_owned() }).inc_by(delta);
    }
}

impl Observer for Metrics {
    fn phase(&self, namespace: &str, name: &str, phase: &str) {
        let mut phases = self.phases.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (namespace.to_owned(), name.to_owned());
        match phases.get(&key) {
            Some(old) if old == phase => return,
            Some(old) => self.gauge_add(old, -1),
            None => {}
        }
        self.gauge_add(phase, 1);
        phases.insert(key, phase.to_owned());
    }

    fn forget(&self, namespace: &str, name: &str) {
        let mut phases = self.phases.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = phases.remove(&(namespace.to_owned(), name.to_owned())) {
            self.gauge_add(&old, -1);
        }
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
