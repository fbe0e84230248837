//! The metric families of one scrape ([`Sheet`]): gathered by name, then registered in a fresh
//! `prometheus-client` registry and encoded in the Prometheus text format (version 0.0.4).
//!
//! `prometheus-client` appends `_total` to every counter. pgwarden's own counters are named
//! with it already (the suffix is taken off before registering, the crate puts it back);
//! CloudNativePG's counters without the suffix (`cnpg_pg_stat_archiver_archived_count`) keep
//! their exact names as *untyped* samples, so that its dashboards and alerts find them.

use std::collections::BTreeMap;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The label pairs of one sample, in order.
pub type Labels = Vec<(String, String)>;

/// How Prometheus should read a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A count that only grows (reset by a restart); the name ends with `_total`.
    Counter,
    /// A count named without `_total` (CloudNativePG's), or anything of unknown type.
    Untyped,
}

impl Kind {
    /// The kind a custom query's `COUNTER` column gets: a counter when its name ends with
    /// `_total`, else untyped (the name is kept as written).
    pub fn for_counter_named(name: &str) -> Self {
        if name.ends_with("_total") && name.len() > "_total".len() { Self::Counter } else { Self::Untyped }
    }
}

/// The samples of one family, in the order they were added.
#[derive(Debug)]
struct Samples {
    kind: Kind,
    rows: Vec<(Labels, f64)>,
}

impl EncodeMetric for Samples {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, value) in &self.rows {
            let mut sample = encoder.encode_family(labels)?;
            match self.kind {
                Kind::Counter => sample.encode_counter::<NoLabelSet, f64, f64>(value, None)?,
                Kind::Gauge | Kind::Untyped => sample.encode_gauge(value)?,
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        match self.kind {
            Kind::Gauge => MetricType::Gauge,
            Kind::Counter => MetricType::Counter,
            Kind::Untyped => MetricType::Unknown,
        }
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[derive(Debug)]
struct Family {
    help: String,
    samples: Samples,
}

/// Every family of one scrape, by name.
#[derive(Debug, Default)]
pub struct Sheet {
    families: BTreeMap<String, Family>,
}

impl Sheet {
    /// Adds a gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: Labels, value: f64) {
        self.add(name, help, Kind::Gauge, labels, value);
    }

    /// Adds a counter sample; `name` ends with `_total`.
    pub fn counter(&mut self, name: &str, help: &str, labels: Labels, value: f64) {
        self.add(name, help, Kind::Counter, labels, value);
    }

    /// Adds a gauge sample without labels.
    pub fn gauge0(&mut self, name: &str, help: &str, value: f64) {
        self.gauge(name, help, Vec::new(), value);
    }

    /// Adds a counter sample without labels.
    pub fn counter0(&mut self, name: &str, help: &str, value: f64) {
        self.counter(name, help, Vec::new(), value);
    }

    /// Adds a sample of `kind`. A sample whose family exists with another kind is dropped
    /// (`false`): a family has one type.
    pub fn add(&mut self, name: &str, help: &str, kind: Kind, labels: Labels, value: f64) -> bool {
        let family = self.families.entry(name.to_string()).or_insert_with(|| Family {
            help: help.trim().trim_end_matches('.').to_string(),
            samples: Samples { kind, rows: Vec::new() },
        });
        if family.samples.kind != kind {
            return false;
        }
        family.samples.rows.push((labels, value));
        true
    }

    /// Whether a family of that name has samples.
    pub fn has(&self, name: &str) -> bool {
        self.families.get(name).is_some_and(|f| !f.samples.rows.is_empty())
    }

    /// The families in the Prometheus text format, sorted by name.
    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        for (name, family) in self.families {
            let registered = match family.samples.kind {
                Kind::Counter => name.strip_suffix("_total").map(str::to_string).unwrap_or(name),
                Kind::Gauge | Kind::Untyped => name,
            };
            registry.register(registered, family.help, family.samples);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// Labels from `(name, value)` pairs.
pub fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Every family the manager's part of a scrape may produce (`exporter::manager`; custom
/// queries may not take these names).
pub const MANAGER_FAMILIES: &[&str] = &[
    "pgwarden_build_info",
    "pgwarden_instance_role",
    "pgwarden_fenced",
    "pgwarden_paused",
    "pgwarden_postgres_restarts_total",
    "pgwarden_lease_held",
    "pgwarden_lease_holder",
    "pgwarden_lease_term",
    "pgwarden_lease_renew_age_seconds",
    "pgwarden_lease_expires_in_seconds",
    "pgwarden_lease_renewals_total",
    "pgwarden_lease_renew_failures_total",
    "pgwarden_lease_store_error",
    "pgwarden_lease_store_failing_seconds",
    "pgwarden_routing_error",
    "pgwarden_lease_eligible",
    "pgwarden_primary_transitions_total",
    "pgwarden_primary_transition_last_duration_seconds",
    "pgwarden_wal_archive_archived_total",
    "pgwarden_wal_archive_failures_total",
    "pgwarden_wal_archive_last_archived_timestamp_seconds",
    "pgwarden_wal_archive_last_archived_age_seconds",
    "pgwarden_wal_archive_last_failed_timestamp_seconds",
    "pgwarden_wal_archive_backlog_files",
    "pgwarden_archive_store_lost",
    "pgwarden_archive_gap_segments",
    "pgwarden_archive_audit_timestamp_seconds",
    "pgwarden_backup_last_completed_timestamp_seconds",
    "pgwarden_backup_last_age_seconds",
    "pgwarden_backup_last_size_bytes",
    "pgwarden_backup_last_stored_bytes",
    "pgwarden_backup_last_checksum_failures",
    "pgwarden_backup_running",
    "pgwarden_backup_failures_total",
    "pgwarden_backup_last_failed_timestamp_seconds",
    "pgwarden_backup_retention_failing",
    "pgwarden_backup_next_scheduled_timestamp_seconds",
    "pgwarden_tls_certificate_expiration_timestamp_seconds",
    "pgwarden_tls_certificate_reloads_total",
    "pgwarden_tls_certificate_reload_failures_total",
    "pgwarden_manager_uptime_seconds",
    "pgwarden_query_errors_total",
    "pgwarden_query_last_run_failed",
    "pgwarden_query_duration_seconds",
    "pgwarden_scrape_duration_seconds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_threads",
    "process_start_time_seconds",
];

/// Every family the collector (`exporter::collector`) may produce (custom queries may not take
/// these names).
pub const COLLECTOR_FAMILIES: &[&str] = &[
    "cnpg_collector_up",
    "cnpg_collector_collections_total",
    "cnpg_collector_collection_errors_total",
    "cnpg_collector_last_collection_error",
    "cnpg_collector_collection_duration_seconds",
    "cnpg_collector_fencing_on",
    "cnpg_collector_postgres_version",
    "cnpg_collector_sync_replicas",
    "cnpg_collector_pg_wal",
    "cnpg_collector_pg_wal_archive_status",
    "cnpg_collector_first_recoverability_point",
    "cnpg_collector_last_available_backup_timestamp",
    "cnpg_collector_last_failed_backup_timestamp",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_sorted_typed_and_escaped() {
        let mut s = Sheet::default();
        s.gauge("b_gauge", "A gauge.", labels([("db", "a\"b\\c\nd")]), 1.5);
        s.counter0("a_things_total", "Things", 3.0);
        s.add("c_archived_count", "Archived", Kind::Untyped, Vec::new(), 7.0);
        assert!(!s.add("b_gauge", "other", Kind::Counter, Vec::new(), 1.0), "a family keeps its type");
        let text = s.encode();
        let expected = "# HELP a_things_total Things.\n# TYPE a_things_total counter\na_things_total 3.0\n\
                        # HELP b_gauge A gauge.\n# TYPE b_gauge gauge\nb_gauge{db=\"a\\\"b\\\\c\\nd\"} 1.5\n\
                        # HELP c_archived_count Archived.\n# TYPE c_archived_count untyped\nc_archived_count 7.0\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn empty_families_are_left_out() {
        let mut s = Sheet::default();
        s.gauge0("present", "x", 0.0);
        assert!(s.has("present") && !s.has("absent"));
        assert_eq!(s.encode(), "# HELP present x.\n# TYPE present gauge\npresent 0.0\n");
    }

    #[test]
    fn only_names_ending_in_total_become_counters() {
        assert_eq!(Kind::for_counter_named("cnpg_backends_waiting_total"), Kind::Counter);
        assert_eq!(Kind::for_counter_named("cnpg_pg_stat_archiver_archived_count"), Kind::Untyped);
        assert_eq!(Kind::for_counter_named("_total"), Kind::Untyped);
    }
}
