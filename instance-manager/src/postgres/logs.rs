//! Postgres' stderr as JSON log records.
//!
//! Postgres writes `log_line_prefix` (`%m [%p] `) then `LEVEL:  message`. Each line becomes
//! one tracing event with `logger = "postgres"`, Postgres' own level in `pg_level`, the
//! backend pid in `pg_pid` and the message. Lines that do not parse (continuations of a
//! multi-line statement, a crash report) are emitted as they are.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// Postgres' timestamp, as printed.
    pub time: Option<&'a str>,
    /// Backend pid.
    pub pid: Option<u32>,
    /// `LOG`, `ERROR`, `FATAL`, … (`None` when the line has no level).
    pub level: Option<&'a str>,
    /// The message.
    pub message: &'a str,
}

const LEVELS: [&str; 14] = [
    "DEBUG1", "DEBUG2", "DEBUG3", "DEBUG4", "DEBUG5", "INFO", "NOTICE", "WARNING", "ERROR", "LOG", "FATAL", "PANIC",
    "DETAIL", "HINT",
];
const CONTEXT_LEVELS: [&str; 3] = ["STATEMENT", "CONTEXT", "QUERY"];

/// Parses one line written with `log_line_prefix = '%m [%p] '`.
pub fn parse(line: &str) -> LogLine<'_> {
    let unparsed = LogLine { time: None, pid: None, level: None, message: line };
    let Some(open) = line.find(" [") else { return unparsed };
    let Some(close) = line[open..].find("] ").map(|i| open + i) else { return unparsed };
    let Ok(pid) = line[open + 2..close].parse::<u32>() else { return unparsed };
    let time = &line[..open];
    let rest = &line[close + 2..];
    let (level, message) = match rest.split_once(":  ") {
        Some((lvl, msg)) if LEVELS.contains(&lvl) || CONTEXT_LEVELS.contains(&lvl) => (Some(lvl), msg),
        _ => (None, rest),
    };
    LogLine { time: Some(time), pid: Some(pid), level, message }
}

/// Emits one Postgres log line as a tracing event.
pub fn emit(line: &str) {
    let l = parse(line);
    let level = l.level.unwrap_or("");
    macro_rules! ev {
        ($lvl:ident) => {
            tracing::$lvl!(target: "postgres", logger = "postgres", pg_level = level, pg_pid = l.pid, pg_time = l.time, "{}", l.message)
        };
    }
    match level {
        "ERROR" | "FATAL" | "PANIC" => ev!(error),
        "WARNING" => ev!(warn),
        l if l.starts_with("DEBUG") => ev!(debug),
        _ => ev!(info),
    }
}

/// Reads `stream` to its end, emitting every line.
pub async fn forward(stream: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => emit(&line),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read Postgres' stderr");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_log_line() {
        let l = parse("2026-11-22 07:40:00.123 UTC [1234] LOG:  database system is ready to accept connections");
        assert_eq!(l.time, Some("2026-11-22 07:40:00.123 UTC"));
        assert_eq!(l.pid, Some(1234));
        assert_eq!(l.level, Some("LOG"));
        assert_eq!(l.message, "database system is ready to accept connections");
    }

    #[test]
    fn keeps_unparsable_lines_whole() {
        let l = parse("\tSELECT 1");
        assert_eq!((l.pid, l.level, l.message), (None, None, "\tSELECT 1"));
        let l = parse("2026-11-22 07:40:00.123 UTC [12] some text: without level");
        assert_eq!((l.pid, l.level), (Some(12), None));
    }
}
