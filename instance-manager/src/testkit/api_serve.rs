//! How the [`FakeApiServer`](super::FakeApiServer) serves its connections: an accept loop of
//! its own (not `axum::serve`), because a [`Fault::Reset`] must be able to drop a connection
//! without answering, and a [`Fault::Stall`] holds a request before the router sees it.
//!
//! Paths under `/testkit/` are its control endpoint, never subject to faults:
//!
//! | request | effect |
//! |---|---|
//! | `POST /testkit/faults` with a [`FaultRequest`] | lays a fault; answers `{"id": n}` |
//! | `DELETE /testkit/faults` | clears every fault |
//! | `DELETE /testkit/faults/{id}` | clears one |
//!
//! The connection tasks live in a [`JoinSet`] owned by the accept loop, so aborting the loop
//! (dropping the server) closes every connection. A request is handled in a task of its own,
//! so that one whose client gave up during a stall is still served when the stall ends (as a
//! stopped API server serves what it finds in its sockets when it continues); those tasks end
//! with the server too.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api_faults::{Fault, FaultId, FaultRequest, FaultRules, Verb, resource_of};

/// How often a request held until its fault ends looks again.
const HOLD_POLL: Duration = Duration::from_millis(20);

/// The faults, shared by the server handle and its connections.
pub(super) type SharedFaults = Arc<Mutex<FaultRules>>;

pub(super) fn lock(faults: &SharedFaults) -> std::sync::MutexGuard<'_, FaultRules> {
    faults.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Accepts connections until the task is aborted.
pub(super) async fn accept_loop(listener: TcpListener, router: Router, faults: SharedFaults) {
    let mut connections = JoinSet::new();
    // Cancelled when this loop is dropped: ends the requests still held or being served.
    let shutdown = CancellationToken::new();
    let _ends_requests = shutdown.clone().drop_guard();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("fake API server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(stream, router.clone(), Arc::clone(&faults), shutdown.clone()));
    }
}

/// Serves one connection until it ends or a [`Fault::Reset`] drops it.
async fn connection(stream: TcpStream, router: Router, faults: SharedFaults, shutdown: CancellationToken) {
    // A second handle on the socket, to make the close of a reset abortive (RST).
    let dup = stream.into_std().and_then(|s| Ok((s.try_clone()?, s)));
    let Ok((dup, stream)) = dup else { return };
    let Ok(stream) = TcpStream::from_std(stream) else { return };
    let reset = CancellationToken::new();
    let on_reset = reset.clone();
    let service = hyper::service::service_fn(move |req| {
        let request = handle(req, router.clone(), Arc::clone(&faults), on_reset.clone());
        let shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => status(503, "ServiceUnavailable", "the fake API server stopped", None),
                answer = request => answer,
            }
        });
        async move { Ok::<_, Infallible>(task.await.unwrap_or_else(|e| status(500, "", &e.to_string(), None))) }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        () = reset.cancelled() => {
            if let Ok(dup) = TcpStream::from_std(dup) {
                let _ = dup.set_zero_linger();
            }
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    router: Router,
    faults: SharedFaults,
    reset: CancellationToken,
) -> Response<Body> {
    // Read the whole request first, as the API server does: a held request is then complete
    // even if its client is gone by the time it is served.
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(400, "BadRequest", &format!("cannot read the body: {e}"), None),
    };
    if parts.uri.path().starts_with("/testkit/") {
        return control(&parts, &body, &faults);
    }
    let req = Request::from_parts(parts, Body::from(body));
    let verb = Verb::of(req.method());
    let applicable = lock(&faults).applicable(verb, resource_of(req.uri().path()), Instant::now());
    if let Some((id, fault)) = applicable {
        match fault {
            Fault::Stall { answer_after: Some(delay) } => tokio::time::sleep(delay).await,
            Fault::Stall { answer_after: None } => {
                while lock(&faults).lasts(id, Instant::now()) {
                    tokio::time::sleep(HOLD_POLL).await;
                }
            }
            Fault::Status { code, reason, message } => return status(code, &reason, &message, None),
            Fault::TooManyRequests { retry_after_seconds } => {
                let message = "Too many requests, please try again later.";
                return status(429, "TooManyRequests", message, Some(retry_after_seconds));
            }
            Fault::Reset => {
                reset.cancel();
                std::future::pending::<()>().await;
            }
        }
    }
    let service = TowerToHyperService::new(router);
    match hyper::service::Service::call(&service, req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A failure answer with a Kubernetes `Status` body.
fn status(code: u16, reason: &str, message: &str, retry_after: Option<u32>) -> Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "code": code.as_u16(),
    });
    if !reason.is_empty() {
        body["reason"] = json!(reason);
    }
    if let Some(secs) = retry_after {
        body["details"] = json!({"retryAfterSeconds": secs});
    }
    let mut response = (code, axum::Json(body)).into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    response
}

/// The control endpoint (see the module docs).
fn control(parts: &http::request::Parts, body: &[u8], faults: &SharedFaults) -> Response<Body> {
    let path = parts.uri.path().trim_end_matches('/');
    match (&parts.method, path.strip_prefix("/testkit/faults")) {
        (&http::Method::POST, Some("")) => {
            let request: FaultRequest = match serde_json::from_slice(body) {
                Ok(r) => r,
                Err(e) => return status(400, "BadRequest", &format!("not a fault request: {e}"), None),
            };
            let window = match request.seconds.map(Duration::try_from_secs_f64).transpose() {
                Ok(w) => w,
                Err(e) => return status(400, "BadRequest", &format!("seconds: {e}"), None),
            };
            let FaultRequest { fault, verbs, resource, .. } = request;
            let id = lock(faults).add(fault, verbs, resource, window, Instant::now());
            (StatusCode::CREATED, axum::Json(json!({"id": id.0}))).into_response()
        }
        (&http::Method::DELETE, Some("")) => {
            lock(faults).clear();
            (StatusCode::OK, axum::Json(json!({}))).into_response()
        }
        (&http::Method::DELETE, Some(id)) => match id.trim_start_matches('/').parse::<u64>() {
            Ok(id) if lock(faults).remove(FaultId(id)) => (StatusCode::OK, axum::Json(json!({}))).into_response(),
            _ => status(404, "NotFound", &format!("no fault {id:?}"), None),
        },
        _ => status(404, "NotFound", &format!("no control endpoint {} {path}", parts.method), None),
    }
}
