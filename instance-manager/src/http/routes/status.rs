//! `GET /status`: the [`InstanceStatus`](crate::api::InstanceStatus) document.

use axum::{Extension, Json};

use crate::api::InstanceStatus;
use crate::http::coalesce::Coalesced;

/// The instance's status (concurrent requests share one computation: see `coalesce`).
pub async fn get(Extension(shared): Extension<Coalesced>) -> Json<InstanceStatus> {
    Json(shared.status().await)
}
