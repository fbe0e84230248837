//! The size limit of request bodies: small JSON documents, at most [`MAX_BODY`] bytes, on every
//! route of every socket.
//!
//! Two layers enforce it. A request that declares a larger `Content-Length` is refused with 413
//! before routing ([`refuse_declared_oversize`]), whatever the route, so no endpoint ever
//! waits for such a body. A body without a declared length (chunked) is counted by the JSON
//! extractors (`DefaultBodyLimit`), which stop reading and answer 413 past the limit; routes
//! that take no body never read one. The 413 is the API's JSON error, with a hint.
//!
//! Every body is also read whole before routing, within [`BODY_TIMEOUT`]
//! ([`read_body_within`]): a client that declares a body and sends it slowly, or never, gets
//! a 408 and its connection is closed, instead of holding a handler and a connection slot.

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The largest request body accepted, in bytes (16 KiB).
pub const MAX_BODY: usize = 16 * 1024;

/// The hint of a 413.
pub const HINT: &str = "request bodies are small JSON documents (at most 16 KiB)";

/// Time a client has to send its whole request body.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Middleware: reads the body (at most [`MAX_BODY`] bytes) within [`BODY_TIMEOUT`], then
/// hands the request on with the body in memory.
pub async fn read_body_within(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_over_limit(&e) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is over the limit of {MAX_BODY} bytes"),
                HINT,
            )
            .into_response();
        }
        Ok(Err(e)) => {
            return ApiError::new(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"), HINT)
                .into_response();
        }
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
                "send the whole body at once, with a Content-Length that matches it",
            )
            .into_response();
            // The rest of the body may still come: the connection cannot be reused.
            response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            return response;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// Whether reading a body failed on the size limit (rather than on the connection).
fn is_over_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Middleware: refuses a request whose `Content-Length` is over [`MAX_BODY`].
pub async fn refuse_declared_oversize(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_BODY as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes is over the limit of {MAX_BODY} bytes"),
            HINT,
        )
        .into_response(),
        _ => next.run(req).await,
    }
}
