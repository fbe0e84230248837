//! The endpoints behind `archive_command` and `restore_command`, served on the local Unix
//! socket only (Postgres' thin clients run in the pod): `POST /wal/archive {path}` and
//! `POST /wal/restore {name, destination}`.
//!
//! Restore answers: 200 restored; 404 not in the archive (the client exits 1, which Postgres
//! reads as "not available"); 503 the store failed but recovery may go on without the file
//! (a streaming standby); 500 the store failed and recovery must stop (a recovery bootstrap).

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::archive::restorer::Restored;
use crate::http::ApiError;
use crate::instance::Instance;

/// Body of `POST /wal/archive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRequest {
    /// `%p`: the file, relative to the data directory or absolute.
    pub path: PathBuf,
}

/// Body of `POST /wal/restore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// `%f`: the WAL file name.
    pub name: String,
    /// `%p`: where to put it, relative to the data directory or absolute.
    pub destination: PathBuf,
}

/// `POST /wal/archive`: archives one file; answers when it is in the store.
pub async fn archive(
    State(instance): State<Arc<Instance>>,
    Json(req): Json<ArchiveRequest>,
) -> Result<Json<Value>, ApiError> {
    let Some(archiver) = &instance.archiver else {
        return Err(ApiError::unavailable("no WAL archive is configured", "set backup.store in the configuration"));
    };
    match archiver.archive(&req.path).await {
        Ok(()) => Ok(Json(json!({ "archived": req.path }))),
        Err(e) => {
            let status = if e.is_bad_request() {
                StatusCode::BAD_REQUEST
            } else if e.is_refusal() {
                StatusCode::CONFLICT
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            Err(ApiError::new(status, e.to_string(), e.hint()))
        }
    }
}

/// `POST /wal/restore`: restores one file.
pub async fn restore(
    State(instance): State<Arc<Instance>>,
    Json(req): Json<RestoreRequest>,
) -> Result<Json<Value>, ApiError> {
    let Some(restorer) = instance.restorer() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no WAL archive is configured",
            "set backup.store to restore WAL from an archive",
        ));
    };
    match restorer.restore(&req.name, &req.destination).await {
        Ok(Restored::Found) => Ok(Json(json!({ "restored": req.name }))),
        Ok(Restored::Missing) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{} is not in the archive", req.name),
            "normal at the end of the archive",
        )),
        Err(f) => {
            tracing::error!(wal = %req.name, error = %f.message, fatal = f.fatal, "WAL restore failed");
            let status = if f.fatal { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::SERVICE_UNAVAILABLE };
            Err(ApiError::new(status, f.message, "check the store and its credentials"))
        }
    }
}
