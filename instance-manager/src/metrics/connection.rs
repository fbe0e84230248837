//! The metrics' own connections to the local Postgres, one per database, kept between scrapes.
//!
//! Never the manager's cached connection (`postgres::Db`): the HA loop observes Postgres over
//! that one, and a slow metrics query would queue its observations behind it. Each session
//! runs as `pg_monitor` (the statistics and the functions monitoring needs, nothing more),
//! read-only, with `statement_timeout` at the scrape's deadline so that a query abandoned by
//! a scrape does not run on; a query that outlives its budget is also cancelled at once
//! ([`cancel`]). The queries file is trusted like the configuration: these settings guard
//! against mistakes, not against a hostile file.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// The database queries run in unless they name others.
pub const DEFAULT_DATABASE: &str = "postgres";

/// Less time than this left of a scrape's deadline: no connection is tried (it could not
/// succeed, and its error would read "took longer than 0 s").
const MIN_CONNECT_BUDGET: Duration = Duration::from_millis(10);

/// A duration as people read it: `2.5 s`, `0.012 s`.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 0.1 { format!("{s:.1} s") } else { format!("{s:.3} s") }
}

/// Why no session in a database could be had for a scrape.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The scrape's deadline had passed before a connection could be tried.
    #[error(
        "not connected to database {dbname}: the scrape's deadline (metrics.timeoutSeconds) had passed \
         before it could start (scrapes waited for each other, or Postgres was slow)"
    )]
    NoTimeLeft {
        /// The database.
        dbname: String,
    },
    /// Connecting took the whole budget.
    #[error("connecting to database {dbname} took longer than {}", seconds(*.budget))]
    ConnectTimeout {
        /// The database.
        dbname: String,
        /// The time it had.
        budget: Duration,
    },
    /// Postgres refused the connection or could not be reached.
    #[error("connecting to database {dbname}: {source}")]
    Connect {
        /// The database.
        dbname: String,
        /// Why.
        source: tokio_postgres::Error,
    },
    /// The session's settings (`SET ROLE pg_monitor`, ...) were refused.
    #[error("preparing the session in {dbname}: {source}")]
    Prepare {
        /// The database.
        dbname: String,
        /// Why.
        source: tokio_postgres::Error,
    },
    /// A changed `statement_timeout` could not be set on an open session.
    #[error("setting statement_timeout in {dbname}: {source}")]
    SetTimeout {
        /// The database.
        dbname: String,
        /// Why.
        source: tokio_postgres::Error,
    },
    /// Setting a changed `statement_timeout` took the whole budget.
    #[error("setting statement_timeout in {dbname} took longer than {}", seconds(*.budget))]
    SetTimeoutSlow {
        /// The database.
        dbname: String,
        /// The time it had.
        budget: Duration,
    },
    /// The session just opened was not found again (a bug).
    #[error("the session vanished")]
    Vanished,
}

struct Session {
    client: Client,
    port: u16,
    statement_timeout_ms: u64,
}

/// Open sessions, by database.
#[derive(Default)]
pub struct Connections {
    sessions: HashMap<String, Session>,
}

impl Connections {
    /// A session in `dbname` on the Postgres listening in `socket_dir` on `port`: the open one,
    /// or a new one within `budget`.
    pub async fn client(
        &mut self,
        socket_dir: &Path,
        port: u16,
        dbname: &str,
        statement_timeout: Duration,
        budget: Duration,
    ) -> Result<&Client, ConnectionError> {
        let timeout_ms = statement_timeout.as_millis().max(1) as u64;
        let reusable = self.sessions.get(dbname).is_some_and(|s| !s.client.is_closed() && s.port == port);
        if !reusable {
            self.sessions.remove(dbname);
            if budget < MIN_CONNECT_BUDGET {
                return Err(ConnectionError::NoTimeLeft { dbname: dbname.to_string() });
            }
            let client = tokio::time::timeout(budget, connect(socket_dir, port, dbname, timeout_ms, budget))
                .await
                .map_err(|_| ConnectionError::ConnectTimeout { dbname: dbname.to_string(), budget })??;
            self.sessions.insert(dbname.to_string(), Session { client, port, statement_timeout_ms: timeout_ms });
        }
        let session = self.sessions.get_mut(dbname).ok_or(ConnectionError::Vanished)?;
        if session.statement_timeout_ms != timeout_ms {
            // metrics.timeoutSeconds changed with a configuration reload.
            let sql = format!("SET statement_timeout = {timeout_ms}");
            match tokio::time::timeout(budget, session.client.batch_execute(&sql)).await {
                Ok(Ok(())) => session.statement_timeout_ms = timeout_ms,
                Ok(Err(source)) => return Err(ConnectionError::SetTimeout { dbname: dbname.to_string(), source }),
                Err(_) => return Err(ConnectionError::SetTimeoutSlow { dbname: dbname.to_string(), budget }),
            }
        }
        Ok(&session.client)
    }

    /// Closes the sessions of databases not in `keep` (dropped databases).
    pub fn retain(&mut self, keep: &BTreeSet<String>) {
        self.sessions.retain(|db, _| db == DEFAULT_DATABASE || keep.contains(db));
    }

    /// Closes every session (Postgres is not running).
    pub fn close_all(&mut self) {
        self.sessions.clear();
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

async fn connect(
    socket_dir: &Path,
    port: u16,
    dbname: &str,
    timeout_ms: u64,
    budget: Duration,
) -> Result<Client, ConnectionError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(socket_dir)
        .port(port)
        .user(crate::pgconf::SUPERUSER)
        .dbname(dbname)
        .application_name("pgwarden-metrics")
        .connect_timeout(budget);
    let (client, conn) =
        cfg.connect(NoTls).await.map_err(|source| ConnectionError::Connect { dbname: dbname.to_string(), source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "metrics connection closed");
        }
    });
    let settings = format!(
        "SET ROLE pg_monitor; SET default_transaction_read_only = on; SET statement_timeout = {timeout_ms}; \
         SET lock_timeout = 1000; SET jit = off"
    );
    client
        .batch_execute(&settings)
        .await
        .map_err(|source| ConnectionError::Prepare { dbname: dbname.to_string(), source })?;
    Ok(client)
}

/// Cancels what `client` runs now, in the background (a query that outlived its budget; the
/// connection stays usable).
pub fn cancel(client: &Client) {
    let token = client.cancel_token();
    tokio::spawn(async move {
        match tokio::time::timeout(Duration::from_secs(2), token.cancel_query(NoTls)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot cancel a metrics query"),
            Err(_) => tracing::debug!("cancelling a metrics query timed out"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_time_left_says_so_instead_of_zero_nanoseconds() {
        let mut conns = Connections::default();
        let dir = std::path::Path::new("/nonexistent");
        let Err(e) = conns.client(dir, 5432, "postgres", Duration::from_secs(1), Duration::ZERO).await else {
            panic!("connected without time")
        };
        assert!(matches!(&e, ConnectionError::NoTimeLeft { dbname } if dbname == "postgres"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("the scrape's deadline (metrics.timeoutSeconds) had passed"), "{e}");
        assert!(!e.contains("0ns"), "{e}");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5 s");
        assert_eq!(seconds(Duration::from_millis(12)), "0.012 s");
    }
}
