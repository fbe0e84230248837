//! `GET /readyz`: readiness. 200 when Postgres accepts connections (a replica: and streams),
//! else 503 with the reason.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::http::ApiError;
use crate::instance::Instance;

/// Readiness.
pub async fn get(State(instance): State<Arc<Instance>>) -> Result<Json<Value>, ApiError> {
    match instance.readiness().await {
        Ok(()) => Ok(Json(json!({ "status": "ready" }))),
        Err(reason) => Err(ApiError::unavailable(reason, "see `instance-manager status` and the manager's log")),
    }
}
