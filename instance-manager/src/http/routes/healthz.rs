//! `GET /healthz`: liveness. 200 while the manager answers and, with a lease, while its HA
//! loop keeps ticking; 503 when that loop has stalled for longer than the renew deadline plus
//! a period (a stalled loop cannot renew, and the deadman has fenced Postgres by then).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::http::ApiError;
use crate::instance::Instance;

/// Liveness.
pub async fn get(State(instance): State<Arc<Instance>>) -> Result<Json<Value>, ApiError> {
    let t = crate::ha::open::timing_of(&instance.config());
    match instance.ha_liveness(t.renew_deadline + t.retry_period) {
        Ok(()) => Ok(Json(json!({ "status": "ok" }))),
        Err(e) => Err(ApiError::unavailable(e, "the manager is stuck: its liveness probe should restart the pod")),
    }
}
