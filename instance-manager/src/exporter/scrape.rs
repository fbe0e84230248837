//! One scrape: a fresh registry of everything as it is now, within `metrics.timeoutSeconds`.
//!
//! ```text
//!  GET /metrics ─▶ snapshot of the manager (no I/O) ─▶ sessions free? ──no (deadline)──┐
//!                                                        │ yes                         │
//!                                   Postgres running? ─▶ probe ─▶ built-in queries ─▶  │
//!                                   custom queries (each cancelled at the deadline)    ▼
//!                                   ─▶ collector + manager + process families ─▶ text
//! ```
//!
//! The deadline covers connecting, the probe and every query; encoding takes microseconds.
//! Scrapes are serialized on the sessions (a second Prometheus waits for the first within
//! its own deadline, and answers without SQL figures when it cannot get them). The sessions
//! close as soon as Postgres leaves `running`: a smart shutdown waits for every session, and
//! the metrics' must not hold a stop up.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::collector::{self, Collection, CollectorStats, PROBE_SQL, Probe};
use super::manager::{self, ManagerView};
use crate::api::PostgresProcessState;
use crate::instance::Instance;
use crate::metrics::builtin::builtin;
use crate::metrics::connection::{self, Connections, DEFAULT_DATABASE};
use crate::metrics::family::Sheet;
use crate::metrics::run::{Runner, Target};
use crate::metrics::server_version::from_server_version_num;

/// Time kept back from the deadline for what follows the SQL.
const MARGIN: Duration = Duration::from_millis(100);

struct Sessions {
    conns: Connections,
    runner: Runner,
}

/// Answers scrapes of one instance.
pub struct Scraper {
    instance: Arc<Instance>,
    sessions: tokio::sync::Mutex<Sessions>,
    stats: Mutex<CollectorStats>,
    last_duration: Mutex<Option<Duration>>,
    started: Instant,
}

impl Scraper {
    /// A scraper of `instance`, closing its sessions whenever Postgres stops running.
    pub fn new(instance: Arc<Instance>) -> Arc<Self> {
        let scraper = Arc::new(Self {
            instance,
            sessions: tokio::sync::Mutex::new(Sessions { conns: Connections::default(), runner: Runner::default() }),
            stats: Mutex::new(CollectorStats::default()),
            last_duration: Mutex::new(None),
            started: Instant::now(),
        });
        tokio::spawn(close_when_stopping(Arc::downgrade(&scraper), scraper.instance.watch_process()));
        scraper
    }

    /// Every metric, in the Prometheus text format.
    pub async fn scrape(&self) -> String {
        let t0 = Instant::now();
        let v = self.instance.config();
        let timeout = v.metrics.timeout;
        let deadline = t0 + timeout.saturating_sub(MARGIN.min(timeout / 10));
        let view = ManagerView::of(&self.instance, self.started.elapsed().as_secs_f64());
        let mut sheet = Sheet::default();
        let mut c = Collection::default();
        match tokio::time::timeout_at(deadline, self.sessions.lock()).await {
            Ok(mut sessions) => {
                let sessions = &mut *sessions;
                self.collect(sessions, &view, timeout, deadline, &mut c, &mut sheet).await;
                sessions.runner.render(&mut sheet);
            }
            Err(_) => {
                tracing::debug!("metrics: another scrape held the Postgres sessions past this one's deadline");
                c.errors.insert("Collect.up", 1);
            }
        }
        {
            let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
            stats.note(&c);
            collector::render(&mut sheet, &view, &c, &stats, &self.instance.paths.data_dir);
        }
        manager::render(&mut sheet, &view, c.probe.as_ref().map(|p| p.in_recovery), jiff::Timestamp::now());
        crate::metrics::process::render(&mut sheet);
        let mut last = self.last_duration.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = *last {
            sheet.gauge0("pgwarden_scrape_duration_seconds", "How long the previous scrape took", d.as_secs_f64());
        }
        let text = sheet.encode();
        *last = Some(t0.elapsed());
        text
    }

    /// The sessions open now (tests).
    pub async fn sessions(&self) -> usize {
        self.sessions.lock().await.conns.len()
    }

    /// The SQL part: the probe, then the built-in and custom queries.
    async fn collect(
        &self,
        sessions: &mut Sessions,
        view: &ManagerView,
        timeout: Duration,
        deadline: Instant,
        c: &mut Collection,
        sheet: &mut Sheet,
    ) {
        if view.process.state != PostgresProcessState::Running {
            // Stopped on purpose, crashed or starting: nothing to ask, and no error either.
            sessions.conns.close_all();
            return;
        }
        let db = &self.instance.db;
        let (socket_dir, port) = (db.socket_dir(), db.port());
        let t = Instant::now();
        let budget = deadline.saturating_duration_since(t);
        let probe = match sessions.conns.client(socket_dir, port, DEFAULT_DATABASE, timeout, budget).await {
            Ok(client) => match tokio::time::timeout_at(deadline, client.query_one(PROBE_SQL, &[])).await {
                Ok(Ok(row)) => Probe::from_row(&row).map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => {
                    connection::cancel(client);
                    Err(format!("postgres did not answer within {:.1} s", budget.as_secs_f64()))
                }
            },
            Err(e) => Err(e.to_string()),
        };
        c.up_duration = Some(t.elapsed());
        let probe = match probe {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot collect from postgres");
                c.errors.insert("Collect.up", 1);
                sessions.conns.close_all();
                return;
            }
        };
        let target = Target {
            socket_dir,
            port,
            in_recovery: probe.in_recovery,
            version: from_server_version_num(probe.version_num),
            deadline,
            statement_timeout: timeout,
        };
        c.probe = Some(probe);
        let t = Instant::now();
        let b = builtin();
        let mut databases = None;
        let mut failed = 0;
        for set in [&b.cnpg, &b.pgwarden, &*self.instance.config().metrics.queries] {
            failed += sessions.runner.run_set(&mut sessions.conns, &target, &mut databases, set, sheet).await;
        }
        c.queries_duration = Some(t.elapsed());
        if failed > 0 {
            c.errors.insert("Collect.cnpg", failed as u64);
        }
    }
}

/// Closes the sessions whenever Postgres leaves `running` (stop, fence, crash, role change),
/// for as long as the scraper lives.
async fn close_when_stopping(
    scraper: std::sync::Weak<Scraper>,
    mut process: tokio::sync::watch::Receiver<crate::instance::ProcessState>,
) {
    while process.changed().await.is_ok() {
        if process.borrow_and_update().state == PostgresProcessState::Running {
            continue;
        }
        let Some(scraper) = scraper.upgrade() else { return };
        let mut sessions = scraper.sessions.lock().await;
        if !sessions.conns.is_empty() {
            tracing::debug!("postgres is not running: closing the metrics sessions");
            sessions.conns.close_all();
        }
    }
}
