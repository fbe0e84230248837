//! The metrics endpoint: plain HTTP on `metrics.listen`, `GET /metrics` only.
//!
//! A port that cannot be bound (taken by another process, an address not on this host) does
//! not stop the manager: metrics are not worth a Postgres outage. The error is logged, and
//! binding is retried every [`RETRY`] until it works (a port held by a dying predecessor
//! frees up). The address is read once, at start: changing it needs a restart.
//!
//! The port is served by the API's connection loop ([`crate::http::server`]), with its own
//! small caps on connections and concurrent requests, header and write timeouts.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::scrape::Scraper;
use crate::http::coalesce::SingleFlight;
use crate::instance::Instance;

/// How often a port that could not be bound is tried again.
pub const RETRY: Duration = Duration::from_secs(10);

/// Starts serving the metrics of `instance` in the background.
pub fn spawn(instance: Arc<Instance>, tasks: &crate::tasks::Tasks) {
    tasks.spawn("metrics", serve(instance));
}

async fn serve(instance: Arc<Instance>) {
    let addr = instance.config().metrics.listen;
    let mut failures = 0u32;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                if failures == 0 {
                    tracing::error!(%addr, error = %e, retry_seconds = RETRY.as_secs(),
                        "cannot listen for metrics; the manager runs on without them and retries (change metrics.listen)");
                } else {
                    tracing::debug!(%addr, error = %e, "metrics port still unavailable");
                }
                failures += 1;
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let limits = crate::http::capacity::Capacity::current().metrics;
    tracing::info!(%addr, max_connections = limits.max_connections, "metrics listening");
    crate::http::server::serve(listener, router(instance), limits, "metrics").await;
}

/// The scraper and the scrape in flight.
struct Endpoint {
    scraper: Arc<Scraper>,
    flight: SingleFlight<bytes::Bytes>,
}

/// `GET /metrics`; anything else is a 404 pointing there.
pub fn router(instance: Arc<Instance>) -> Router {
    let endpoint = Endpoint { scraper: Scraper::new(instance), flight: SingleFlight::default() };
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: metrics are at /metrics\n") })
        .with_state(Arc::new(endpoint))
}

/// Requests during a scrape share its text (one buffer, reference-counted): a flood of
/// scrapes costs one scrape's SQL and memory, not one per request.
async fn metrics(State(endpoint): State<Arc<Endpoint>>) -> axum::response::Response {
    let scraper = Arc::clone(&endpoint.scraper);
    let body = endpoint.flight.get(|| async move { bytes::Bytes::from(scraper.scrape().await) }).await;
    match body {
        Some(body) => {
            ([(header::CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], body).into_response()
        }
        None => (StatusCode::INTERNAL_SERVER_ERROR, "the scrape failed; see the manager's log\n").into_response(),
    }
}
