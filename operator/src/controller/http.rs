//! The operator's HTTP endpoints (`--listen`, default `0.0.0.0:8080`), for the kubelet's
//! probes and for Prometheus:
//!
//! - `/healthz`: 200 while the leader election loop keeps ticking (it ticks every retry period
//!   and each tick is bounded), 503 once it has not for [`Health::stale_after`]: a process
//!   whose loops are stuck is restarted.
//! - `/readyz`: 200 for the leader once its `PostgresCluster` and `PostgresBackup` watches
//!   have synced, and for a standby waiting for leadership (it is healthy, and serves
//!   metrics); 503 for a leader still syncing, after leadership was lost, and during shutdown.
//!   The body says which.
//! - `/metrics`: [`Metrics`] in the OpenMetrics text format.
//!
//! The probe verdicts are pure functions ([`liveness`], [`readiness`]) of what the election
//! publishes; the handlers only read the channels.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::leader::{Election, End, Snapshot};
use super::metrics::{CONTENT_TYPE, Metrics};

/// What the probes look at.
#[derive(Debug, Clone)]
pub struct Health {
    /// The election's state and last tick.
    pub election: watch::Receiver<Snapshot>,
    /// Whether the leader's `PostgresCluster` and `PostgresBackup` watches have synced.
    pub synced: watch::Receiver<bool>,
    /// Cancelled when shutdown begins.
    pub stopping: CancellationToken,
    /// How long without a tick before the process is reported unhealthy.
    pub stale_after: Duration,
}

/// A probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// 200 or 503.
    pub ok: bool,
    /// The body: what the verdict is based on.
    pub message: String,
}

impl Probe {
    fn ok(message: impl Into<String>) -> Self {
        Self { ok: true, message: message.into() }
    }

    fn failing(message: impl Into<String>) -> Self {
        Self { ok: false, message: message.into() }
    }
}

impl IntoResponse for Probe {
    fn into_response(self) -> Response {
        let status = if self.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.message + "\n").into_response()
    }
}

/// Healthy while the election loop has ticked within `stale_after` (or has ended: the process
/// is then on its way out and exits by itself).
pub fn liveness(snapshot: &Snapshot, stale_after: Duration, now: Instant) -> Probe {
    let since = now.saturating_duration_since(snapshot.ticked_at);
    match &snapshot.election {
        Election::Ended(_) => Probe::ok("ok: the election has ended; the process is exiting"),
        _ if since > stale_after => Probe::failing(format!(
            "unhealthy: the leader election loop has not ticked for {}s (limit {}s)",
            since.as_secs(),
            stale_after.as_secs()
        )),
        _ => Probe::ok("ok"),
    }
}

/// Ready as a synced leader or as a waiting standby.
pub fn readiness(snapshot: &Snapshot, synced: bool, stopping: bool) -> Probe {
    if stopping {
        return Probe::failing("not ready: shutting down");
    }
    match &snapshot.election {
        Election::Leader if synced => {
            Probe::ok("ready: leader, reconciling; the PostgresCluster and PostgresBackup watches have synced")
        }
        Election::Leader => {
            Probe::failing("not ready: leader, waiting for the PostgresCluster and PostgresBackup watches to sync")
        }
        Election::Candidate { holder: Some(holder) } => {
            Probe::ok(format!("ready: standby, waiting for the leader lease (held by {holder})"))
        }
        Election::Candidate { holder: None } => Probe::ok("ready: standby, waiting for the leader lease"),
        Election::Ended(End::Lost(loss)) => Probe::failing(format!("not ready: lost the leader lease ({loss})")),
        Election::Ended(_) => Probe::failing("not ready: the leader election has ended"),
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: Arc<Metrics>,
}

/// The routes, on `health` and `metrics`.
pub fn router(health: Health, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
}

/// Serves `router` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await
}

async fn healthz(State(state): State<AppState>) -> Probe {
    let snapshot = state.health.election.borrow().clone();
    liveness(&snapshot, state.health.stale_after, Instant::now())
}

async fn readyz(State(state): State<AppState>) -> Probe {
    let snapshot = state.health.election.borrow().clone();
    let synced = *state.health.synced.borrow();
    readiness(&snapshot, synced, state.health.stopping.is_cancelled())
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {e}\n")).into_response(),
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
