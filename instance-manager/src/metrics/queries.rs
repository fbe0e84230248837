//! Metrics defined by SQL: CloudNativePG's custom-queries format, parsed and validated.
//!
//! ```yaml
//! pg_database:                      # the query's name: metrics are named cnpg_<name>_<column>
//!   query: SELECT datname, pg_database_size(datname) AS size_bytes FROM pg_database
//!   metrics:
//!     - datname:    {usage: LABEL, description: Name of the database}
//!     - size_bytes: {usage: GAUGE, description: Disk space used by the database}
//!   primary: false                  # true: only on the primary (alias: master)
//!   runonserver: ">=12.0.0"         # only on these Postgres versions (15.18 is 15.0.18)
//!   predicate_query: SELECT true    # run only when this answers true
//!   target_databases: ['*']         # run in these databases (default: postgres), '*' = all
//!   cache_seconds: 30               # reuse the result for this long
//!   name: other_name                # metric names use this instead of the key
//!   timeout_seconds: 2              # pgwarden: cap this query below the scrape's deadline
//! ```
//!
//! Usages: `LABEL` (the column's text is a label of every value of the row), `GAUGE`,
//! `COUNTER`, `MAPPEDMETRIC` (the text is looked up in `metric_mapping`), `DISCARD`.
//! CloudNativePG's `DURATION` and `HISTOGRAM` are refused with a clear error. Every problem
//! is reported at once, each naming its query and column; a file with any problem is
//! refused as a whole (validation runs when the configuration loads).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::family::Kind;
use super::server_version::VersionRange;

/// How a column of a query's result is used.
#[derive(Debug, Clone, PartialEq)]
pub enum Usage {
    /// A label of every value of its row.
    Label,
    /// A value that goes up and down.
    Gauge,
    /// A value that only grows.
    Counter,
    /// Text mapped to a number.
    Mapped(BTreeMap<String, f64>),
    /// Ignored.
    Discard,
}

/// A column of a query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Its name in the result.
    pub name: String,
    /// How it is used.
    pub usage: Usage,
    /// The metric's help text.
    pub description: String,
}

/// One validated query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Its key in the file.
    pub name: String,
    /// `<prefix>_<name>`: metric names are this plus `_<column>`.
    pub metric_prefix: String,
    /// The SQL, one statement (no trailing `;`).
    pub sql: String,
    /// Run only when this answers true.
    pub predicate: Option<String>,
    /// Run only on the primary.
    pub primary_only: bool,
    /// Run only on these Postgres versions.
    pub server_versions: Option<VersionRange>,
    /// Databases to run in (empty: `postgres`; `*`: every database that allows connections).
    pub target_databases: Vec<String>,
    /// Reuse a result for this long.
    pub cache: Option<Duration>,
    /// Cap of this query's time, below the scrape's deadline.
    pub timeout: Option<Duration>,
    /// The columns, in the file's order.
    pub columns: Vec<Column>,
}

impl Query {
    /// The label columns, in order.
    pub fn labels(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.usage == Usage::Label)
    }

    /// The value columns with their metric names and kinds.
    pub fn values(&self) -> impl Iterator<Item = (&Column, String, Kind)> {
        self.columns.iter().filter_map(|c| {
            let name = format!("{}_{}", self.metric_prefix, c.name);
            let kind = match c.usage {
                Usage::Gauge | Usage::Mapped(_) => Kind::Gauge,
                Usage::Counter => Kind::for_counter_named(&name),
                Usage::Label | Usage::Discard => return None,
            };
            Some((c, name, kind))
        })
    }
}

/// The queries of one file, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuerySet {
    /// The queries, sorted by name.
    pub queries: Vec<Query>,
}

impl QuerySet {
    /// Every metric name the queries produce.
    pub fn metric_names(&self) -> BTreeSet<String> {
        self.queries.iter().flat_map(|q| q.values().map(|(_, n, _)| n)).collect()
    }
}

/// Every problem of a queries file, one per line, each naming its query (and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct QueryErrors(pub Vec<String>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    query: String,
    #[serde(default)]
    predicate_query: Option<String>,
    #[serde(default)]
    metrics: Vec<BTreeMap<String, RawColumn>>,
    #[serde(default)]
    primary: bool,
    /// CloudNativePG's former name of `primary`.
    #[serde(default)]
    master: bool,
    #[serde(default)]
    cache_seconds: Option<u64>,
    #[serde(default)]
    runonserver: Option<String>,
    #[serde(default)]
    target_databases: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    usage: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    metric_mapping: Option<BTreeMap<String, f64>>,
}

/// Parses and validates a queries file. Metric names are `<prefix>_<query>_<column>`; none
/// may be one of `reserved` (the built-in metrics).
pub fn parse(text: &str, prefix: &str, reserved: &BTreeSet<String>) -> Result<QuerySet, QueryErrors> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| QueryErrors(vec![e.to_string()]))?;
    if value.is_null() {
        return Ok(QuerySet::default());
    }
    // Parsed again from the text: serde_yaml's errors then start with the path of the field
    // (the query) and end with the line.
    let raw: BTreeMap<String, RawQuery> =
        serde_yaml::from_str(text).map_err(|e| QueryErrors(vec![describe_parse_error(e)]))?;
    let mut errors = Vec::new();
    let mut queries = Vec::new();
    for (name, raw) in raw {
        if let Some(q) = check_query(&name, raw, prefix, &mut errors) {
            queries.push(q);
        }
    }
    check_collisions(&queries, reserved, &mut errors);
    if errors.is_empty() { Ok(QuerySet { queries }) } else { Err(QueryErrors(errors)) }
}

fn describe_parse_error(e: serde_yaml::Error) -> String {
    let message = e.to_string();
    if message.contains("unknown field") {
        format!("{message} (pgwarden reads CloudNativePG's custom-queries format; see docs/metrics.md)")
    } else {
        message
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: valid in metric and label names.
pub fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The statement without surrounding blanks and trailing `;`.
fn statement(sql: &str) -> String {
    sql.trim().trim_end_matches(|c: char| c == ';' || c.is_whitespace()).to_string()
}

fn check_query(name: &str, raw: RawQuery, prefix: &str, errors: &mut Vec<String>) -> Option<Query> {
    let before = errors.len();
    let mut err = |msg: String| errors.push(format!("query {name}: {msg}"));
    if !is_identifier(name) {
        err("the name is not usable in metric names (use letters, digits and '_')".into());
    }
    let metric_name = raw.name.clone().unwrap_or_else(|| name.to_string());
    if raw.name.is_some() && !is_identifier(&metric_name) {
        err(format!("name {metric_name:?} is not usable in metric names (use letters, digits and '_')"));
    }
    let sql = statement(&raw.query);
    if sql.is_empty() {
        err("query is empty".into());
    }
    let predicate = raw.predicate_query.as_deref().map(statement);
    if predicate.as_deref() == Some("") {
        err("predicate_query is empty".into());
    }
    let server_versions = match raw.runonserver.as_deref().map(VersionRange::parse).transpose() {
        Ok(r) => r,
        Err(e) => {
            err(format!("runonserver: {e}"));
            None
        }
    };
    let timeout = match raw.timeout_seconds {
        Some(t) if !(t.is_finite() && t > 0.0 && t <= 3600.0) => {
            err(format!("timeout_seconds {t} is not between 0 and 3600"));
            None
        }
        t => t.map(Duration::from_secs_f64),
    };
    let mut seen_db = BTreeSet::new();
    for db in &raw.target_databases {
        if db.trim().is_empty() {
            err("target_databases has an empty name".into());
        } else if !seen_db.insert(db.as_str()) {
            err(format!("target_databases lists {db:?} twice"));
        }
    }
    let columns = check_columns(name, raw.metrics, errors);
    if errors.len() > before {
        return None;
    }
    Some(Query {
        name: name.to_string(),
        metric_prefix: format!("{prefix}_{metric_name}"),
        sql,
        predicate,
        primary_only: raw.primary || raw.master,
        server_versions,
        target_databases: raw.target_databases,
        cache: raw.cache_seconds.filter(|s| *s > 0).map(Duration::from_secs),
        timeout,
        columns,
    })
}

fn check_columns(query: &str, metrics: Vec<BTreeMap<String, RawColumn>>, errors: &mut Vec<String>) -> Vec<Column> {
    if metrics.is_empty() {
        errors.push(format!("query {query}: metrics is empty (list the columns: - column: {{usage: GAUGE}})"));
        return Vec::new();
    }
    let mut columns: Vec<Column> = Vec::new();
    for (i, entry) in metrics.into_iter().enumerate() {
        if entry.len() != 1 {
            errors.push(format!("query {query}: metrics[{i}] must name exactly one column, not {}", entry.len()));
            continue;
        }
        for (column, raw) in entry {
            let mut err = |msg: String| errors.push(format!("query {query}, column {column}: {msg}"));
            if !is_identifier(&column) {
                err("the name is not usable in metric or label names (use letters, digits and '_')".into());
            } else if column.starts_with("__") {
                err("names starting with '__' are reserved by Prometheus".into());
            }
            if columns.iter().any(|c| c.name == column) {
                err("listed twice".into());
            }
            let usage = match (raw.usage.to_ascii_uppercase().as_str(), raw.metric_mapping) {
                ("LABEL", None) => Some(Usage::Label),
                ("GAUGE", None) => Some(Usage::Gauge),
                ("COUNTER", None) => Some(Usage::Counter),
                ("DISCARD", None) => Some(Usage::Discard),
                ("MAPPEDMETRIC", Some(map)) if !map.is_empty() && map.values().all(|v| v.is_finite()) => {
                    Some(Usage::Mapped(map))
                }
                ("MAPPEDMETRIC", _) => {
                    err("usage MAPPEDMETRIC needs a metric_mapping of text to finite numbers".into());
                    None
                }
                ("LABEL" | "GAUGE" | "COUNTER" | "DISCARD", Some(_)) => {
                    err(format!("metric_mapping is only for usage MAPPEDMETRIC, not {}", raw.usage));
                    None
                }
                ("DURATION" | "HISTOGRAM", _) => {
                    err(format!("usage {} is not supported by pgwarden (use GAUGE)", raw.usage));
                    None
                }
                (_, _) => {
                    err(format!("unknown usage {:?} (use LABEL, GAUGE, COUNTER, MAPPEDMETRIC or DISCARD)", raw.usage));
                    None
                }
            };
            if let Some(usage) = usage {
                columns.push(Column { name: column, usage, description: raw.description });
            }
        }
    }
    let has_value = columns.iter().any(|c| !matches!(c.usage, Usage::Label | Usage::Discard));
    if !columns.is_empty() && !has_value {
        errors.push(format!("query {query}: no column is a GAUGE, COUNTER or MAPPEDMETRIC: it yields no metric"));
    }
    columns
}

/// Two queries may produce the same metric only when both are version-specific
/// (`runonserver`): the same metric for different Postgres versions.
fn check_collisions(queries: &[Query], reserved: &BTreeSet<String>, errors: &mut Vec<String>) {
    let mut producer: BTreeMap<String, &Query> = BTreeMap::new();
    for q in queries {
        for (column, metric, _) in q.values() {
            if reserved.contains(&metric) {
                errors.push(format!(
                    "query {}, column {}: {metric} is a built-in metric (rename the query or set name:)",
                    q.name, column.name
                ));
            } else if let Some(other) = producer.get(&metric) {
                if other.server_versions.is_none() || q.server_versions.is_none() {
                    errors.push(format!(
                        "query {}, column {}: {metric} is also produced by query {} (rename one, or give both a runonserver range)",
                        q.name, column.name, other.name
                    ));
                }
            } else {
                producer.insert(metric, q);
            }
        }
    }
}

#[cfg(test)]
#[path = "queries_tests.rs"]
mod tests;
