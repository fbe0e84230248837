//! The built-in SQL metrics, written in the custom-queries format and compiled in:
//! `builtin_cnpg.yaml` (CloudNativePG's names, `cnpg_…`) and `builtin_pgwarden.yaml`
//! (`pgwarden_…`); and the names a custom queries file may not take.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use super::queries::{self, QueryErrors, QuerySet};

const CNPG: &str = include_str!("builtin_cnpg.yaml");
const PGWARDEN: &str = include_str!("builtin_pgwarden.yaml");

/// The built-in query sets.
#[derive(Debug)]
pub struct Builtin {
    /// CloudNativePG's metrics.
    pub cnpg: QuerySet,
    /// pgwarden's own.
    pub pgwarden: QuerySet,
    reserved_names: BTreeSet<String>,
    reserved_keys: BTreeSet<String>,
}

/// The built-in queries, parsed once (they are part of the binary; a unit test keeps them
/// valid).
pub fn builtin() -> &'static Builtin {
    static BUILTIN: OnceLock<Builtin> = OnceLock::new();
    BUILTIN.get_or_init(|| {
        let load = |text: &str, prefix: &str| {
            queries::parse(text, prefix, &BTreeSet::new()).unwrap_or_else(|e| {
                tracing::error!(error = %e, prefix, "built-in metrics queries are invalid; they are left out");
                QuerySet::default()
            })
        };
        let cnpg = load(CNPG, "cnpg");
        let pgwarden = load(PGWARDEN, "pgwarden");
        let mut reserved_names: BTreeSet<String> = cnpg.metric_names();
        reserved_names.extend(pgwarden.metric_names());
        reserved_names.extend(super::family::COLLECTOR_FAMILIES.iter().map(|s| s.to_string()));
        reserved_names.extend(super::family::MANAGER_FAMILIES.iter().map(|s| s.to_string()));
        let reserved_keys = cnpg.queries.iter().chain(&pgwarden.queries).map(|q| q.name.clone()).collect();
        Builtin { cnpg, pgwarden, reserved_names, reserved_keys }
    })
}

/// Parses a custom queries file (metrics `cnpg_<query>_<column>`, like CloudNativePG's):
/// its metric names and query names must differ from the built-in ones.
pub fn parse_custom(text: &str) -> Result<QuerySet, QueryErrors> {
    let b = builtin();
    let set = queries::parse(text, "cnpg", &b.reserved_names)?;
    let taken: Vec<String> = set
        .queries
        .iter()
        .filter(|q| b.reserved_keys.contains(&q.name))
        .map(|q| {
            format!("query {}: a built-in query has this name (its metrics are exported already; rename it)", q.name)
        })
        .collect();
    if taken.is_empty() { Ok(set) } else { Err(QueryErrors(taken)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_queries_are_valid_and_distinct() {
        let cnpg = queries::parse(CNPG, "cnpg", &BTreeSet::new()).unwrap();
        let pgwarden = queries::parse(PGWARDEN, "pgwarden", &BTreeSet::new()).unwrap();
        assert!(cnpg.queries.len() >= 12 && pgwarden.queries.len() >= 4);
        let b = builtin();
        assert_eq!(b.cnpg, cnpg);
        for name in cnpg.metric_names().iter().chain(&pgwarden.metric_names()) {
            assert!(
                !super::super::family::COLLECTOR_FAMILIES.contains(&name.as_str()),
                "{name} is also a collector family"
            );
            assert!(
                !super::super::family::MANAGER_FAMILIES.contains(&name.as_str()),
                "{name} is also a manager family"
            );
        }
    }

    #[test]
    fn cloudnativepg_names_its_dashboards_and_alerts_use_are_built_in() {
        let names = builtin().reserved_names.clone();
        for want in [
            "cnpg_backends_total",
            "cnpg_backends_max_tx_duration_seconds",
            "cnpg_backends_waiting_total",
            "cnpg_pg_database_size_bytes",
            "cnpg_pg_database_xid_age",
            "cnpg_pg_replication_lag",
            "cnpg_pg_replication_in_recovery",
            "cnpg_pg_replication_is_wal_receiver_up",
            "cnpg_pg_replication_streaming_replicas",
            "cnpg_pg_stat_replication_replay_lag_seconds",
            "cnpg_pg_stat_replication_replay_diff_bytes",
            "cnpg_pg_stat_archiver_archived_count",
            "cnpg_pg_stat_archiver_failed_count",
            "cnpg_pg_stat_archiver_seconds_since_last_archival",
            "cnpg_pg_stat_archiver_last_failed_time",
            "cnpg_pg_stat_archiver_last_archived_time",
            "cnpg_pg_stat_bgwriter_checkpoints_timed",
            "cnpg_pg_stat_database_deadlocks",
            "cnpg_pg_settings_setting",
            "cnpg_pg_postmaster_start_time",
            "cnpg_collector_up",
            "cnpg_collector_wal_bytes",
            "cnpg_collector_last_available_backup_timestamp",
            "cnpg_collector_first_recoverability_point",
            "cnpg_collector_pg_wal_archive_status",
        ] {
            assert!(names.contains(want), "{want} missing");
        }
    }

    #[test]
    fn custom_queries_cannot_shadow_built_in_ones() {
        let e = parse_custom("backends:\n  query: SELECT 1 AS n\n  name: mine\n  metrics:\n    - n: {usage: GAUGE}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("query backends: a built-in query has this name"), "{e}");
        let e =
            parse_custom("mine:\n  query: SELECT 1 AS up\n  name: collector\n  metrics:\n    - up: {usage: GAUGE}\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("cnpg_collector_up is a built-in metric"), "{e}");
        assert!(parse_custom("mine:\n  query: SELECT 1 AS n\n  metrics:\n    - n: {usage: GAUGE}\n").is_ok());
    }
}
