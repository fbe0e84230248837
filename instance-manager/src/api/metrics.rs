//! `metrics`: the Prometheus endpoint of the instance manager.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The Prometheus endpoint (`GET /metrics` on a port of its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsSpec {
    /// `address:port` the endpoint listens on (plain HTTP). CloudNativePG's port, so that its
    /// PodMonitor, Grafana dashboard and alerts work unchanged. A port that cannot be bound is
    /// logged and retried; it never stops the manager.
    #[serde(default = "default_listen")]
    pub listen: String,
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
        Self { listen: default_listen(), queries_file: None, timeout_seconds: default_timeout() }
    }
}

fn default_listen() -> String {
    "0.0.0.0:9187".into()
}

fn default_timeout() -> f64 {
    5.0
}
