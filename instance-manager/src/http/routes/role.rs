//! `GET /primary` and `GET /replica`: 200 when the instance has that role, else 503 — for
//! load balancers and health checks that route by role.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};

use crate::api::{InstanceRole, RoleAnswer};
use crate::http::ApiError;
use crate::http::coalesce::Coalesced;
use crate::instance::Instance;

async fn expect(instance: &Instance, shared: &Coalesced, want: InstanceRole) -> Result<Json<RoleAnswer>, ApiError> {
    let status = shared.status().await;
    // A primary answers only while it holds a live lease: between losing it and being fenced
    // it must not attract writes.
    let live = want != InstanceRole::Primary || instance.holds_live_lease();
    if status.role == want && live {
        Ok(Json(RoleAnswer { role: status.role }))
    } else {
        Err(ApiError::unavailable(format!("instance is {}, not {want}", status.role), "route to another instance"))
    }
}

/// 200 on a running primary.
pub async fn primary(
    State(instance): State<Arc<Instance>>,
    Extension(shared): Extension<Coalesced>,
) -> Result<Json<RoleAnswer>, ApiError> {
    expect(&instance, &shared, InstanceRole::Primary).await
}

/// 200 on a running replica.
pub async fn replica(
    State(instance): State<Arc<Instance>>,
    Extension(shared): Extension<Coalesced>,
) -> Result<Json<RoleAnswer>, ApiError> {
    expect(&instance, &shared, InstanceRole::Replica).await
}
