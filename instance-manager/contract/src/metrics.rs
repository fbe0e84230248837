//! `metrics`: the Prometheus endpoint of the instance manager.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Prometheus endpoint (`GET /metrics` on a port of its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsSpec {
    /// `address:port` the endpoint listens on (plain HTTP). Absent: port 9187 (CloudNativePG's,
    /// so that its PodMonitor, Grafana dashboard and alerts work unchanged) on `api.listen`'s
    /// address — `0.0.0.0` in a pod (the API's default there, which Prometheus needs), loopback
    /// when the API listens on loopback: the metrics are never reachable from further away than
    /// the API. A port that cannot be bound is logged and retried; it never stops the manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Extra SQL-defined metrics: a YAML file in CloudNativePG's custom-queries format
    /// (`name: {query, metrics: [{column: {usage, description}}], ...}`), validated when the
    /// configuration is loaded. Re-read with the configuration (an edit of the configuration
    /// file, or a Kubernetes `..data` swap in its directory).
    #[serde(default)]
    pub queries_file: Option<PathBuf>,
    /// Deadline of one scrape, SQL included: a slow Postgres (or a slow custom query) yields
    /// an answer without its figures after this long, never a hung scrape. Keep it below
    /// Prometheus' `scrape_timeout` (10 s by default).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self { listen: None, queries_file: None, timeout_seconds: default_timeout() }
    }
}

/// The metrics port when `metrics.listen` is absent (CloudNativePG's).
pub const DEFAULT_METRICS_PORT: u16 = 9187;

fn default_timeout() -> f64 {
    5.0
}
