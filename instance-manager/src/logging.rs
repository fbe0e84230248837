//! Logs: one JSON object per line on stdout, for the manager's own records and for every line
//! Postgres and the tools it runs print (those carry `"logger":"postgres"`, `"initdb"`, …).
//! The level comes from `RUST_LOG` (default `info`, with the Kubernetes client's own request
//! errors off: the lease and routing code report them with context).

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber for `instance-manager run`.
pub fn init_json() {
    // The Kubernetes client logs every failed request without saying which one; the HA loop
    // and routing report those failures themselves, once per change of state.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube_client=off"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}

/// Installs a plain subscriber on stderr for the CLI commands (warnings only by default).
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
