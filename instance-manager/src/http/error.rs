//! The JSON error answer of every route.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::ErrorBody;

/// An error answer: a status code and `{ "error": ..., "hint": ... }`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with a hint.
    pub fn new(status: StatusCode, error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { status, body: ErrorBody { error: error.into(), hint: Some(hint.into()) } }
    }

    /// 503 Service Unavailable.
    pub fn unavailable(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, error, hint)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Middleware: turns an error answer that is not JSON — axum's own rejections of a request
/// (a body that is not valid JSON or has the wrong fields, one over the size limit, a path
/// parameter that does not decode) — into the API's JSON error with a hint.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let error = match text.trim() {
        "" => status.canonical_reason().unwrap_or("request refused").to_lowercase(),
        t => t.chars().take(500).collect(),
    };
    let hint = match status {
        StatusCode::PAYLOAD_TOO_LARGE => super::limit::HINT,
        s if s.is_client_error() => "send a JSON object with the fields the endpoint takes (see README.md), or no body",
        _ => "see the manager's log",
    };
    ApiError::new(status, error, hint).into_response()
}
