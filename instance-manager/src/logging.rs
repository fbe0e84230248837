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

/// Reports a configuration refused at start (exit code 2) in the log's own format: one JSON
/// ERROR record per problem on stdout, naming the field and the fix, so `jq` over the log keeps
/// working. The same text goes to stderr for a person too, unless stderr *is* the log (the same
/// file as stdout, as `scripts/local-cluster` runs it, or a pod's log), where plain lines would
/// sit between the JSON ones.
pub fn config_refused(e: &crate::config::Error) {
    init_json();
    match e {
        crate::config::Error::Invalid { path, problems } => {
            for p in &problems.0 {
                tracing::error!(config = %path.display(), field = %p.field, problem = %p.message, fix = %p.hint,
                    "invalid configuration; the manager does not start");
            }
        }
        other => tracing::error!(error = %other, "invalid configuration; the manager does not start"),
    }
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if !in_pod && !same_file("/proc/self/fd/1", "/proc/self/fd/2") {
        eprintln!("error: {e}");
    }
}

/// Whether two paths (here: our stdout and stderr) are the same open file or pipe.
fn same_file(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
