//! `GET /healthz`: liveness. 200 while the manager answers.

use axum::Json;
use serde_json::{Value, json};

/// Liveness.
pub async fn get() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
