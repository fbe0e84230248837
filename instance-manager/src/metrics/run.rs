//! Running query sets against the local Postgres within a scrape's deadline.
//!
//! Each query is wrapped as `SELECT to_jsonb(q)::text FROM (<query>) AS q`: one statement
//! (the extended protocol refuses a second one), and every column arrives with its name
//! whatever its type (numeric, bool, text, timestamps). A query gets what is left of the
//! scrape's deadline (less when it sets `timeout_seconds`); one that outlives it is cancelled
//! and counted as failed, and the next query gets the time that is left. A failing query
//! yields no samples of its own and never fails the scrape.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;

use super::connection::{self, ConnectionError, Connections, DEFAULT_DATABASE};
use super::family::{Kind, Labels, Sheet, labels};
use super::queries::{Query, QuerySet, Usage};
use super::server_version::Version;

/// One sample a query produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Produced {
    /// Metric name.
    pub name: String,
    /// Help text.
    pub help: String,
    /// Type.
    pub kind: Kind,
    /// Labels.
    pub labels: Labels,
    /// Value.
    pub value: f64,
}

/// What a scrape knows about the Postgres it queries.
pub struct Target<'a> {
    /// Postgres' socket directory.
    pub socket_dir: &'a Path,
    /// Its port.
    pub port: u16,
    /// Whether it is a standby.
    pub in_recovery: bool,
    /// Its version.
    pub version: Version,
    /// When the scrape must have its answer.
    pub deadline: Instant,
    /// `statement_timeout` of the sessions.
    pub statement_timeout: Duration,
}

#[derive(Debug, Default)]
struct QueryStats {
    errors_total: u64,
    failed_last: bool,
    last_error: Option<String>,
    duration: Option<Duration>,
    cached: Option<(Instant, Vec<Produced>)>,
}

/// The queries' history across scrapes: error counts, durations, cached results.
#[derive(Debug, Default)]
pub struct Runner {
    stats: BTreeMap<String, QueryStats>,
}

/// Why a metrics query produced nothing in a scrape; its text is the query's `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No session in the database.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The scrape's deadline passed before the query's turn.
    #[error("not run: the scrape's deadline (metrics.timeoutSeconds) had passed")]
    NoTimeLeft,
    /// Listing the databases for `target_databases: ['*']` took the whole budget.
    #[error("listing the databases took too long")]
    ListDatabasesTimeout,
    /// Listing the databases for `target_databases: ['*']` failed.
    #[error("listing the databases: {0}")]
    ListDatabases(#[source] tokio_postgres::Error),
    /// The `predicate_query` failed.
    #[error("predicate_query: {0}")]
    Predicate(#[source] Box<QueryError>),
    /// Postgres refused the statement: its own message (`column "x" does not exist`).
    #[error("{}", describe(.0))]
    Postgres(#[source] tokio_postgres::Error),
    /// The statement outlived its budget and was cancelled.
    #[error("did not answer within {:.1} s; cancelled", .budget.as_secs_f64())]
    Cancelled {
        /// The time it had.
        budget: Duration,
    },
    /// A row's text could not be read.
    #[error(transparent)]
    Row(tokio_postgres::Error),
    /// A row that is not a JSON object (it always is: the statement is wrapped in `to_jsonb`).
    #[error("a row is not a JSON object")]
    NotAnObject,
    /// A column the query's metrics name is not in its result.
    #[error("column {column} is not in the result (it has: {have})")]
    NoSuchColumn {
        /// The column.
        column: String,
        /// The result's columns, comma-separated.
        have: String,
    },
    /// The query failed in a database other than the default one.
    #[error("in database {database}: {source}")]
    InDatabase {
        /// The database.
        database: String,
        /// Why.
        source: Box<QueryError>,
    },
}

enum Outcome {
    Ran(Vec<Produced>),
    Skipped,
    Failed(QueryError),
}

impl Runner {
    /// Runs every query of `set` that applies to `target`, adding their samples to `sheet`.
    /// Returns how many failed.
    pub async fn run_set(
        &mut self,
        conns: &mut Connections,
        target: &Target<'_>,
        databases: &mut Option<Vec<String>>,
        set: &QuerySet,
        sheet: &mut Sheet,
    ) -> usize {
        let mut failed = 0;
        for q in &set.queries {
            let started = Instant::now();
            let outcome = self.run_one(conns, target, databases, q).await;
            if let Outcome::Skipped = outcome {
                continue;
            }
            let stats = self.stats.entry(q.name.clone()).or_default();
            match outcome {
                Outcome::Skipped => {}
                Outcome::Ran(rows) => {
                    stats.failed_last = false;
                    stats.last_error = None;
                    for p in &rows {
                        sheet.add(&p.name, &p.help, p.kind, p.labels.clone(), p.value);
                    }
                    if let Some(ttl) = q.cache {
                        let fresh = stats.cached.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl);
                        if !fresh {
                            stats.cached = Some((Instant::now(), rows));
                        }
                    }
                }
                Outcome::Failed(e) => {
                    let e = e.to_string();
                    failed += 1;
                    stats.errors_total += 1;
                    stats.failed_last = true;
                    if stats.last_error.as_deref() != Some(e.as_str()) {
                        tracing::warn!(query = %q.name, error = %e, "metrics query failed");
                    } else {
                        tracing::debug!(query = %q.name, error = %e, "metrics query failed again");
                    }
                    stats.last_error = Some(e);
                }
            }
            stats.duration = Some(started.elapsed());
        }
        failed
    }

    async fn run_one(
        &mut self,
        conns: &mut Connections,
        target: &Target<'_>,
        databases: &mut Option<Vec<String>>,
        q: &Query,
    ) -> Outcome {
        if (q.primary_only && target.in_recovery)
            || q.server_versions.as_ref().is_some_and(|r| !r.contains(target.version))
        {
            return Outcome::Skipped;
        }
        if let (Some(ttl), Some(stats)) = (q.cache, self.stats.get(&q.name))
            && let Some((at, rows)) = &stats.cached
            && at.elapsed() < ttl
        {
            return Outcome::Ran(rows.clone());
        }
        let cap = |now: Instant| {
            let left = target.deadline.saturating_duration_since(now);
            q.timeout.map_or(left, |t| t.min(left))
        };
        let until = Instant::now() + cap(Instant::now());
        let dbs = match target_databases(conns, target, databases, q).await {
            Ok(dbs) => dbs,
            Err(e) => return Outcome::Failed(e),
        };
        let mut rows = Vec::new();
        for db in dbs {
            let budget = until.saturating_duration_since(Instant::now());
            if budget.is_zero() {
                return Outcome::Failed(QueryError::NoTimeLeft);
            }
            let client = match conns.client(target.socket_dir, target.port, &db, target.statement_timeout, budget).await
            {
                Ok(c) => c,
                Err(e) => return Outcome::Failed(e.into()),
            };
            match run_in(client, q, until).await {
                Ok(mut r) => rows.append(&mut r),
                Err(e) if db == DEFAULT_DATABASE => return Outcome::Failed(e),
                Err(e) => return Outcome::Failed(QueryError::InDatabase { database: db, source: Box::new(e) }),
            }
        }
        Outcome::Ran(rows)
    }

    /// The queries' own figures: errors, duration, whether the last run failed.
    pub fn render(&self, sheet: &mut Sheet) {
        for (query, s) in &self.stats {
            let l = || labels([("query", query)]);
            sheet.counter(
                "pgwarden_query_errors_total",
                "Runs of a metrics query that failed or timed out (its samples are missing then)",
                l(),
                s.errors_total as f64,
            );
            sheet.gauge(
                "pgwarden_query_last_run_failed",
                "1 when the last run of a metrics query failed",
                l(),
                if s.failed_last { 1.0 } else { 0.0 },
            );
            if let Some(d) = s.duration {
                sheet.gauge(
                    "pgwarden_query_duration_seconds",
                    "How long the last run of a metrics query took",
                    l(),
                    d.as_secs_f64(),
                );
            }
        }
    }
}

/// The databases `q` runs in; `*` is every database that allows connections (read once per
/// scrape; sessions of dropped databases are closed).
async fn target_databases(
    conns: &mut Connections,
    target: &Target<'_>,
    databases: &mut Option<Vec<String>>,
    q: &Query,
) -> Result<Vec<String>, QueryError> {
    if q.target_databases.is_empty() {
        return Ok(vec![DEFAULT_DATABASE.to_string()]);
    }
    if q.target_databases.iter().any(|d| d == "*") && databases.is_none() {
        let budget = target.deadline.saturating_duration_since(Instant::now());
        let client =
            conns.client(target.socket_dir, target.port, DEFAULT_DATABASE, target.statement_timeout, budget).await?;
        let sql = "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1";
        let rows = tokio::time::timeout(budget, client.query(sql, &[]))
            .await
            .map_err(|_| QueryError::ListDatabasesTimeout)?
            .map_err(QueryError::ListDatabases)?;
        let all: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        conns.retain(&all.iter().cloned().collect());
        *databases = Some(all);
    }
    let mut out = BTreeSet::new();
    for d in &q.target_databases {
        if d == "*" {
            out.extend(databases.iter().flatten().cloned());
        } else {
            out.insert(d.clone());
        }
    }
    Ok(out.into_iter().collect())
}

/// Runs `q` (its predicate first) on `client`, cancelling it at `until`.
async fn run_in(client: &Client, q: &Query, until: Instant) -> Result<Vec<Produced>, QueryError> {
    if let Some(predicate) = &q.predicate {
        let rows = bounded(client, predicate, until).await.map_err(|e| QueryError::Predicate(Box::new(e)))?;
        if !rows.first().is_some_and(|r| r.values().all(truthy)) {
            return Ok(Vec::new());
        }
    }
    let rows = bounded(client, &q.sql, until).await?;
    let mut out = Vec::new();
    for row in &rows {
        produce(q, row, &mut out)?;
    }
    Ok(out)
}

type Row = serde_json::Map<String, serde_json::Value>;

/// Runs `sql` as one statement, each row as a JSON object, cancelling it at `until`.
async fn bounded(client: &Client, sql: &str, until: Instant) -> Result<Vec<Row>, QueryError> {
    let wrapped = format!("SELECT to_jsonb(q)::text FROM (\n{sql}\n) AS q");
    let budget = until.saturating_duration_since(Instant::now());
    let rows = match tokio::time::timeout_at(until, client.query(&wrapped, &[])).await {
        Ok(r) => r.map_err(QueryError::Postgres)?,
        Err(_) => {
            connection::cancel(client);
            return Err(QueryError::Cancelled { budget });
        }
    };
    rows.iter()
        .map(|r| {
            let text: Option<String> = r.try_get(0).map_err(QueryError::Row)?;
            match serde_json::from_str(text.as_deref().unwrap_or("{}")) {
                Ok(serde_json::Value::Object(m)) => Ok(m),
                _ => Err(QueryError::NotAnObject),
            }
        })
        .collect()
}

/// Postgres' own message (`column "x" does not exist`) rather than tokio-postgres' `db error`.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

fn truthy(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => matches!(s.as_str(), "t" | "true" | "on" | "1"),
        _ => false,
    }
}

/// The samples of one row.
fn produce(q: &Query, row: &Row, out: &mut Vec<Produced>) -> Result<(), QueryError> {
    let get = |column: &str| {
        row.get(column).ok_or_else(|| {
            let have: Vec<&str> = row.keys().map(String::as_str).collect();
            QueryError::NoSuchColumn { column: column.to_string(), have: have.join(", ") }
        })
    };
    let mut row_labels = Labels::new();
    for c in q.labels() {
        row_labels.push((c.name.clone(), label_text(get(&c.name)?)));
    }
    for (c, name, kind) in q.values() {
        let v = get(&c.name)?;
        let value = match &c.usage {
            Usage::Mapped(map) => map.get(&label_text(v)).copied(),
            _ => number(v),
        };
        if let Some(value) = value {
            out.push(Produced { name, help: c.description.clone(), kind, labels: row_labels.clone(), value });
        }
    }
    Ok(())
}

/// A label's text: strings as they are, numbers and booleans printed, null empty.
fn label_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A value: numbers, booleans (1/0), numeric text; null and other text yield no sample.
fn number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(json: &str) -> Row {
        match serde_json::from_str(json).unwrap() {
            serde_json::Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn rows_become_labelled_samples() {
        let set = super::super::queries::parse(
            "q:\n  query: SELECT 1\n  metrics:\n    - db: {usage: LABEL}\n    - size: {usage: GAUGE, description: Size}\n    - up: {usage: GAUGE}\n    - state: {usage: MAPPEDMETRIC, metric_mapping: {streaming: 1, catchup: 2}}\n    - n_total: {usage: COUNTER}\n    - skip: {usage: DISCARD}\n",
            "cnpg",
            &BTreeSet::new(),
        )
        .unwrap();
        let q = &set.queries[0];
        let mut out = Vec::new();
        produce(q, &row(r#"{"db":"app","size":123.5,"up":true,"state":"catchup","n_total":"7","skip":"x"}"#), &mut out)
            .unwrap();
        produce(q, &row(r#"{"db":null,"size":null,"up":false,"state":"other","n_total":"x","skip":1}"#), &mut out)
            .unwrap();
        let got: Vec<(String, String, f64)> =
            out.iter().map(|p| (p.name.clone(), p.labels[0].1.clone(), p.value)).collect();
        assert_eq!(
            got,
            [
                ("cnpg_q_size".into(), "app".into(), 123.5),
                ("cnpg_q_up".into(), "app".into(), 1.0),
                ("cnpg_q_state".into(), "app".into(), 2.0),
                ("cnpg_q_n_total".into(), "app".into(), 7.0),
                ("cnpg_q_up".into(), "".into(), 0.0),
            ]
        );
        assert_eq!(out[3].kind, Kind::Counter);
        let e = produce(q, &row(r#"{"db":"x"}"#), &mut out).unwrap_err();
        assert!(matches!(&e, QueryError::NoSuchColumn { column, .. } if column == "size"), "{e:?}");
        assert!(e.to_string().contains("column size is not in the result (it has: db)"), "{e}");
    }

    #[test]
    fn predicates_are_true_only_when_every_value_is() {
        assert!(truthy(&serde_json::json!(true)) && truthy(&serde_json::json!("t")) && truthy(&serde_json::json!(2)));
        assert!(
            !truthy(&serde_json::json!(false)) && !truthy(&serde_json::json!(null)) && !truthy(&serde_json::json!(0))
        );
    }
}
