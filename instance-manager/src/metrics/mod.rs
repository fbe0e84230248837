//! Prometheus metrics: what is measured (the families, the queries, the collector, the
//! process); `exporter` serves them. Prometheus exposition: `GET /metrics` on a port of its own (`metrics.listen`, 9187 like
//! CloudNativePG), in the Prometheus text format through `prometheus-client`.
//!
//! Every scrape builds a fresh registry from the state as it is now — no global registry,
//! nothing updated in the background. Three kinds of families:
//!
//! - **Postgres**, over SQL: CloudNativePG's default queries under its own names and labels
//!   (`cnpg_backends_total`, `cnpg_pg_replication_lag`, `cnpg_pg_stat_archiver_*`, …;
//!   [`builtin`]), pgwarden's additions (`pgwarden_pg_locks_*`, `pgwarden_pg_xact_*`,
//!   `pgwarden_pg_wal_*`), and the operator's own queries from `metrics.queriesFile`
//!   ([`queries`], CloudNativePG's format, `cnpg_<query>_<column>`).
//! - **The collector** ([`crate::exporter::collector`]): `cnpg_collector_up`, version, `pg_wal`, archive status,
//!   backups, fencing — CloudNativePG's names.
//! - **The manager** ([`crate::exporter::manager`], [`process`]): role, lease, changes of primary, restarts,
//!   WAL archive, base backups, build — `pgwarden_…` — and `process_…`.
//!
//! So CloudNativePG's PodMonitor (port 9187), Grafana dashboard (20417) and alerts work
//! unchanged; `docs/metrics.md` maps every family to its CloudNativePG equivalent.
//!
//! # Decisions
//! - **Deadline.** A scrape answers within `metrics.timeoutSeconds` whatever Postgres does:
//!   each query gets what is left of it and is cancelled when it runs over; its samples are
//!   missing and `pgwarden_query_errors_total{query}` grows ([`run`], [`crate::exporter::scrape`]).
//! - **Isolation from HA.** The scrape reads snapshots only (`Instance::process`, the lease
//!   status the HA loop publishes, `Archiver::status`, `Backups::status`) and asks Postgres
//!   over sessions of its own ([`connection`]), never the manager's connection the HA loop
//!   uses.
//! - **Counters named CloudNativePG's way** (`cnpg_pg_stat_archiver_archived_count`, no
//!   `_total`) are exposed *untyped*: `prometheus-client` would append `_total` to a counter
//!   and break the dashboards ([`family`]).
//! - **A port that cannot be bound** is logged and retried; the manager keeps running
//!   ([`crate::exporter::server`]).
//! - **Floods.** Requests that arrive during a scrape share its text instead of queueing scrapes
//!   of their own, and the port has its own caps on connections and concurrent requests and its
//!   timeouts ([`crate::exporter::server`], [`crate::http::server`]).
//! - **An invalid queries file** is refused with the configuration (startup fails, a reload
//!   is refused and reported in `/status`), every problem named with its query and column.

pub mod builtin;
pub mod connection;
pub mod family;
pub mod process;
pub mod queries;
pub mod run;
pub mod server_version;

pub use queries::{QueryErrors, QuerySet};
