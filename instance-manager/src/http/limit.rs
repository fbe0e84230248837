//! The size limit of request bodies: small JSON documents, at most [`MAX_BODY`] bytes, on every
//! route of every socket.
//!
//! Two layers enforce it. A request that declares a larger `Content-Length` is refused with 413
//! before routing ([`refuse_declared_oversize`]), whatever the route, so no endpoint ever
//! waits for such a body. A body without a declared length (chunked) is counted by the JSON
//! extractors (`DefaultBodyLimit`), which stop reading and answer 413 past the limit; routes
//! that take no body never read one. The 413 is the API's JSON error, with a hint.

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The largest request body accepted, in bytes (16 KiB).
pub const MAX_BODY: usize = 16 * 1024;

/// The hint of a 413.
pub const HINT: &str = "request bodies are small JSON documents (at most 16 KiB)";

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
