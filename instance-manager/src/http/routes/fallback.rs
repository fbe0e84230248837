//! Answers for unknown paths and methods, in the API's JSON error format.

use axum::http::{Method, StatusCode, Uri};

use crate::http::ApiError;

/// 404 for an unknown path.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
        "see README.md for the endpoints: /healthz /readyz /status /primary /replica",
    )
}

/// 405 for a known path with the wrong method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
        "use GET for the read-only endpoints",
    )
}
