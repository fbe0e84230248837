//! The operator's logs, on stderr: one JSON object per line by default (for a log pipeline),
//! or human-readable text (`--log-format text`, for a terminal). The level is a `RUST_LOG`-style
//! filter from `--log-level` (default [`DEFAULT_LEVEL`]): `debug`, or per module such as
//! `info,pgwarden_operator=debug,kube_runtime=warn`.
//!
//! The default is `info` with the Kubernetes client's own request errors off, as in the
//! instance manager: the client logs every failed request without saying which one, while the
//! leader election (once per change) and the controller (each failed watch) report those
//! failures themselves, with the lease or the watch they concern.
//!
//! As in the instance manager's logs, a JSON record carries its fields at the top level
//! (`"level"`, `"fields"`' content, `"target"`); it also carries the current span, so that
//! every line a reconcile logs names the object it reconciles (kube-runtime's
//! `reconciling object` span).

use tracing_subscriber::EnvFilter;

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// The default filter.
pub const DEFAULT_LEVEL: &str = "info,kube_client=off";

/// Checks a `--log-level` filter; the error says what is wrong and what would do.
pub fn parse_filter(filter: &str) -> Result<String, String> {
    if filter.trim().is_empty() {
        return Err("empty filter; use a level such as info or debug".into());
    }
    EnvFilter::builder().parse(filter).map(|_| filter.to_owned()).map_err(|e| {
        format!("{e}; use a level (error, warn, info, debug, trace) or directives such as info,kube_runtime=debug")
    })
}

/// Installs the global subscriber. `filter` must have passed [`parse_filter`]; a filter that
/// does not parse falls back to [`DEFAULT_LEVEL`].
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::builder().parse(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LEVEL));
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours);
    // A subscriber already installed (a test) stays.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_are_accepted() {
        for ok in ["info", "debug", "warn,pgwarden_operator=debug", "info,kube_runtime::controller=trace"] {
            assert_eq!(parse_filter(ok).as_deref(), Ok(ok));
        }
    }

    #[test]
    fn a_bad_filter_is_refused_with_what_would_do() {
        let err = parse_filter("info,kube=loud").unwrap_err();
        assert!(err.contains("use a level (error, warn, info, debug, trace)"), "{err}");
        assert!(parse_filter(" ").unwrap_err().contains("empty filter"));
    }
}
