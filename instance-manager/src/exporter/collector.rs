//! `cnpg_collector_…`: CloudNativePG's figures about the collection itself and about the
//! instance outside SQL — Postgres answering, its version, `pg_wal` and `archive_status`,
//! fencing, synchronous standbys, backups — under CloudNativePG's names and labels.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio_postgres::Row;

use super::manager::ManagerView;
use crate::metrics::family::{Sheet, labels};

/// Every family the collector may produce.
pub use crate::metrics::family::COLLECTOR_FAMILIES as FAMILIES;

/// One round trip that says whether Postgres answers, and what the collector needs.
pub const PROBE_SQL: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
    pg_catalog.current_setting('server_version_num')::int4, \
    pg_catalog.current_setting('synchronous_standby_names'), \
    (SELECT setting::float8 FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'), \
    (SELECT setting::float8 FROM pg_catalog.pg_settings WHERE name = 'min_wal_size'), \
    (SELECT setting::float8 FROM pg_catalog.pg_settings WHERE name = 'max_wal_size'), \
    (SELECT setting::float8 FROM pg_catalog.pg_settings WHERE name = 'wal_keep_size'), \
    (SELECT setting::float8 FROM pg_catalog.pg_settings WHERE name = 'max_slot_wal_keep_size')";

/// What [`PROBE_SQL`] answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// A standby.
    pub in_recovery: bool,
    /// `server_version_num`.
    pub version_num: u32,
    /// `synchronous_standby_names` in force.
    pub sync_standby_names: String,
    /// Bytes per WAL segment.
    pub wal_segment_size: Option<f64>,
    /// `min_wal_size`, `max_wal_size`, `wal_keep_size`, `max_slot_wal_keep_size` in MB.
    pub wal_sizes_mb: [Option<f64>; 4],
}

impl Probe {
    /// Reads the row of [`PROBE_SQL`].
    pub fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            in_recovery: row.try_get(0)?,
            version_num: u32::try_from(row.try_get::<_, i32>(1)?).unwrap_or(0),
            sync_standby_names: row.try_get(2)?,
            wal_segment_size: row.try_get(3)?,
            wal_sizes_mb: [row.try_get(4)?, row.try_get(5)?, row.try_get(6)?, row.try_get(7)?],
        })
    }
}

/// How one scrape's collection went.
#[derive(Debug, Clone, Default)]
pub struct Collection {
    /// What the probe answered (`None`: Postgres does not run or did not answer).
    pub probe: Option<Probe>,
    /// Connecting and probing.
    pub up_duration: Option<Duration>,
    /// Running the queries.
    pub queries_duration: Option<Duration>,
    /// Errors of this collection, by collector (`Collect.up`, `Collect.cnpg`).
    pub errors: BTreeMap<&'static str, u64>,
}

/// Counts kept across scrapes.
#[derive(Debug, Default)]
pub struct CollectorStats {
    collections_total: u64,
    errors_total: BTreeMap<&'static str, u64>,
}

impl CollectorStats {
    /// Counts one collection and its errors.
    pub fn note(&mut self, c: &Collection) {
        self.collections_total += 1;
        for (k, n) in &c.errors {
            *self.errors_total.entry(k).or_default() += n;
        }
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Adds the collector's families.
pub fn render(sheet: &mut Sheet, view: &ManagerView, c: &Collection, stats: &CollectorStats, data_dir: &Path) {
    let cluster = view.cluster.as_str();
    sheet.gauge(
        "cnpg_collector_up",
        "1 if PostgreSQL is up and answers, 0 otherwise",
        labels([("cluster", cluster)]),
        flag(c.probe.is_some()),
    );
    sheet.counter0(
        "cnpg_collector_collections_total",
        "Times PostgreSQL was asked for metrics",
        stats.collections_total as f64,
    );
    for (collector, n) in &stats.errors_total {
        sheet.counter(
            "cnpg_collector_collection_errors_total",
            "Errors asking PostgreSQL for metrics, by collector",
            labels([("collector", collector)]),
            *n as f64,
        );
    }
    sheet.gauge0(
        "cnpg_collector_last_collection_error",
        "1 if the last collection ended with an error, 0 otherwise",
        flag(!c.errors.is_empty()),
    );
    for (collector, d) in [("Collect.up", c.up_duration), ("Collect.cnpg", c.queries_duration)] {
        if let Some(d) = d {
            sheet.gauge(
                "cnpg_collector_collection_duration_seconds",
                "Collection time in seconds",
                labels([("collector", collector)]),
                d.as_secs_f64(),
            );
        }
    }
    sheet.gauge0("cnpg_collector_fencing_on", "1 if the instance is fenced, 0 otherwise", flag(view.fenced));
    if let Some(p) = &c.probe {
        render_probe(sheet, view, p);
    }
    render_wal_dir(sheet, c.probe.as_ref(), &data_dir.join("pg_wal"));
    if let Some(b) = &view.backup {
        let ts = |t: Option<jiff::Timestamp>| t.map_or(0.0, |t| t.as_second() as f64);
        sheet.gauge0(
            "cnpg_collector_first_recoverability_point",
            "The first point of recoverability for the cluster as a unix timestamp",
            ts(b.first_recoverability_point),
        );
        sheet.gauge0(
            "cnpg_collector_last_available_backup_timestamp",
            "The last available backup as a unix timestamp",
            ts(b.last_backup.as_ref().map(|l| l.stopped_at)),
        );
        sheet.gauge0(
            "cnpg_collector_last_failed_backup_timestamp",
            "The last failed backup as a unix timestamp",
            ts(b.last_failed_at),
        );
    }
}

fn render_probe(sheet: &mut Sheet, view: &ManagerView, p: &Probe) {
    let (major, minor) = (p.version_num / 10_000, p.version_num % 10_000);
    let full = format!("{major}.{minor}");
    let value: f64 = full.parse().unwrap_or(f64::from(major));
    sheet.gauge(
        "cnpg_collector_postgres_version",
        "Postgres version",
        labels([("full", &full), ("cluster", &view.cluster)]),
        value,
    );
    let help = "Number of requested synchronous replicas (synchronous_standby_names)";
    if !p.in_recovery {
        sheet.gauge(
            "cnpg_collector_sync_replicas",
            help,
            labels([("value", "observed")]),
            sync_number(&p.sync_standby_names),
        );
    }
    if let Some(n) = view.sync_expected {
        sheet.gauge("cnpg_collector_sync_replicas", help, labels([("value", "expected")]), f64::from(n));
    }
}

/// The number of `synchronous_standby_names` (`ANY 2 (a, b, c)`, `FIRST 1 (a)`, `2 (a, b)`, a
/// bare list: 1; empty: 0).
pub fn sync_number(names: &str) -> f64 {
    let mut words = names.split_whitespace();
    match words.next() {
        None => 0.0,
        Some(w) if w.eq_ignore_ascii_case("ANY") || w.eq_ignore_ascii_case("FIRST") => {
            words.next().and_then(|n| n.parse().ok()).unwrap_or(0.0)
        }
        Some(w) => w.split('(').next().and_then(|n| n.trim().parse().ok()).unwrap_or(1.0),
    }
}

/// `pg_wal` (segments, their bytes, and the settings that size it, in segments) and
/// `archive_status` (`.ready` and `.done` files).
fn render_wal_dir(sheet: &mut Sheet, probe: Option<&Probe>, pg_wal: &Path) {
    let Ok(entries) = std::fs::read_dir(pg_wal) else { return };
    let segments = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.len() >= 24 && name.bytes().take(24).all(|b| b.is_ascii_hexdigit())
        })
        .count() as f64;
    let help = "Segments in pg_wal (count), their bytes (size), and min_wal_size, max_wal_size, wal_keep_size, max_slot_wal_keep_size in segments";
    sheet.gauge("cnpg_collector_pg_wal", help, labels([("value", "count")]), segments);
    if let Some(seg) = probe.and_then(|p| p.wal_segment_size).filter(|s| *s > 0.0) {
        sheet.gauge("cnpg_collector_pg_wal", help, labels([("value", "size")]), segments * seg);
        let sizes = probe.map(|p| p.wal_sizes_mb).unwrap_or_default();
        for (value, mb) in ["min", "max", "keep", "slots_max"].into_iter().zip(sizes) {
            if let Some(mb) = mb {
                let segs = if mb < 0.0 { f64::NAN } else { mb * 1024.0 * 1024.0 / seg };
                sheet.gauge("cnpg_collector_pg_wal", help, labels([("value", value)]), segs);
            }
        }
    }
    if let Ok(status) = std::fs::read_dir(pg_wal.join("archive_status")) {
        let (mut ready, mut done) = (0u64, 0u64);
        for e in status.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".ready") {
                ready += 1;
            } else if name.ends_with(".done") {
                done += 1;
            }
        }
        let help = "WAL files in pg_wal/archive_status: ready to archive, and archived (done)";
        sheet.gauge("cnpg_collector_pg_wal_archive_status", help, labels([("value", "ready")]), ready as f64);
        sheet.gauge("cnpg_collector_pg_wal_archive_status", help, labels([("value", "done")]), done as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_standby_names_give_their_number() {
        assert_eq!(sync_number(""), 0.0);
        assert_eq!(sync_number("ANY 2 (\"pg-2\", \"pg-3\")"), 2.0);
        assert_eq!(sync_number("FIRST 1 (a, b)"), 1.0);
        assert_eq!(sync_number("2 (a, b)"), 2.0);
        assert_eq!(sync_number("a, b"), 1.0);
    }

    #[test]
    fn pg_wal_and_archive_status_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let pg_wal = dir.path().join("pg_wal");
        std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
        for f in ["000000010000000000000001", "000000010000000000000002", "00000002.history", "xlogtemp.1"] {
            std::fs::write(pg_wal.join(f), b"").unwrap();
        }
        for f in ["000000010000000000000001.done", "000000010000000000000002.ready"] {
            std::fs::write(pg_wal.join("archive_status").join(f), b"").unwrap();
        }
        let probe = Probe {
            in_recovery: false,
            version_num: 150018,
            sync_standby_names: String::new(),
            wal_segment_size: Some(16.0 * 1024.0 * 1024.0),
            wal_sizes_mb: [Some(80.0), Some(1024.0), Some(0.0), Some(-1.0)],
        };
        let mut sheet = Sheet::default();
        render_wal_dir(&mut sheet, Some(&probe), &pg_wal);
        let text = sheet.encode();
        for want in [
            "cnpg_collector_pg_wal{value=\"count\"} 2.0",
            "cnpg_collector_pg_wal{value=\"size\"} 33554432.0",
            "cnpg_collector_pg_wal{value=\"min\"} 5.0",
            "cnpg_collector_pg_wal{value=\"max\"} 64.0",
            "cnpg_collector_pg_wal{value=\"slots_max\"} NaN",
            "cnpg_collector_pg_wal_archive_status{value=\"ready\"} 1.0",
            "cnpg_collector_pg_wal_archive_status{value=\"done\"} 1.0",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
