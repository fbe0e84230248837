//! One route per file.

mod fallback;
mod healthz;
mod readyz;
mod role;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::instance::Instance;

/// Every route of the API.
pub fn all() -> Router<Arc<Instance>> {
    Router::new()
        .route("/healthz", get(healthz::get))
        .route("/readyz", get(readyz::get))
        .route("/status", get(status::get))
        .route("/primary", get(role::primary))
        .route("/replica", get(role::replica))
        .fallback(fallback::not_found)
        .method_not_allowed_fallback(fallback::method_not_allowed)
}
