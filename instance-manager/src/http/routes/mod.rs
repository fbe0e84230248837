//! One route per file.

mod backup;
mod backups;
mod control;
mod failsafe;
mod fallback;
mod healthz;
mod readyz;
mod role;
mod status;
mod wal;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::instance::Instance;

pub use fallback::not_found;

/// The mutating routes (switchover, promote, fence, …).
pub fn control() -> Router<Arc<Instance>> {
    Router::new()
        .route("/switchover", post(control::switchover))
        .route("/ha/failsafe", post(failsafe::acknowledge))
        .route("/ha/sync-leave", post(control::sync_leave))
        .route("/promote", post(control::promote))
        .route("/fence", post(control::fence))
        .route("/unfence", post(control::unfence))
        .route("/pause", post(control::pause))
        .route("/resume", post(control::resume))
        .route("/backup", post(backup::create))
        .route("/backups/{id}", delete(backup::delete))
}

/// The routes of the WAL socket (`<runDir>/wal.sock`): Postgres' archive and restore commands.
pub fn local() -> Router<Arc<Instance>> {
    Router::new().route("/wal/archive", post(wal::archive)).route("/wal/restore", post(wal::restore))
}

/// The read-only routes and the fallbacks.
pub fn all() -> Router<Arc<Instance>> {
    Router::new()
        .route("/ha/tick", post(control::tick))
        .route("/healthz", get(healthz::get))
        .route("/readyz", get(readyz::get))
        .route("/status", get(status::get))
        .route("/backups", get(backups::list))
        .route("/primary", get(role::primary))
        .route("/replica", get(role::replica))
        .fallback(fallback::not_found)
        .method_not_allowed_fallback(fallback::method_not_allowed)
}
