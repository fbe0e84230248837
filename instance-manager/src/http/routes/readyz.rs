//! `GET /readyz`: readiness. 200 when Postgres accepts connections (a replica: and streams),
//! else 503 with the reason.

use axum::{Extension, Json};
use serde_json::{Value, json};

use crate::http::ApiError;
use crate::http::coalesce::Coalesced;

/// Readiness (concurrent probes share one check: see `coalesce`).
pub async fn get(Extension(shared): Extension<Coalesced>) -> Result<Json<Value>, ApiError> {
    match shared.readiness().await {
        Ok(()) => Ok(Json(json!({ "status": "ready" }))),
        Err(reason) => Err(ApiError::unavailable(reason, "see `instance-manager status` and the manager's log")),
    }
}
