//! `GET /status`: the [`InstanceStatus`](crate::api::InstanceStatus) document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use crate::api::InstanceStatus;
use crate::instance::Instance;

/// The instance's status.
pub async fn get(State(instance): State<Arc<Instance>>) -> Json<InstanceStatus> {
    Json(instance.status().await)
}
