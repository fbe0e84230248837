//! The mutating backup endpoints (authenticated on TCP, see `http::auth`):
//! `POST /backup {fromStandby?, wait?}` takes a base backup of this instance and answers its
//! `backup.json` when it is done (or `202 {id}` at once with `wait: false`; the backup goes on
//! if the client gives up); `DELETE /backups/{id}` deletes one.
//!
//! Answers: `409` while another backup runs here, and when the instance's role does not fit
//! the request (`fromStandby` on the primary, or a primary backup asked of a replica); `503`
//! without a backup store or a running Postgres; `500` when the backup failed, and when it
//! was taken but found data pages failing checksum verification (it is kept: see
//! `jobs::backups`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::{BackupRequest, BackupStarted};
use crate::backup::catalog;
use crate::http::ApiError;
use crate::instance::Instance;
use crate::jobs::backups::{self, StartError};

fn start_error(e: StartError) -> ApiError {
    let hint = match &e {
        StartError::NotConfigured => "set backup.store in the configuration",
        StartError::NotRunning(_) => "wait until postgres runs (instance-manager status)",
        StartError::OnPrimary => "call it on a replica (the operator or the CLI picks one)",
        StartError::OnReplica => "call it on the primary, or pass fromStandby: true",
        StartError::Busy(_) => "wait for it to finish (instance-manager status shows it)",
        StartError::Store(_) => "check the store (instance-manager diagnose)",
    };
    let status = match &e {
        StartError::OnPrimary | StartError::OnReplica | StartError::Busy(_) => StatusCode::CONFLICT,
        StartError::NotConfigured | StartError::NotRunning(_) | StartError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.to_string(), hint)
}

/// `POST /backup`: takes a base backup.
pub async fn create(
    State(instance): State<Arc<Instance>>,
    body: Option<Json<BackupRequest>>,
) -> Result<Response, ApiError> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let started = backups::start(&instance, req.from_standby).await.map_err(start_error)?;
    if !req.wait {
        return Ok((StatusCode::ACCEPTED, Json(BackupStarted { id: started.id })).into_response());
    }
    let id = started.id;
    match started.done.await {
        Ok(Ok(info)) => match backups::corrupt_pages(&info) {
            None => Ok(Json(info).into_response()),
            Some(why) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("backup {id}: {why}"),
                "the manager's log names every bad page; repair their relations (from an older backup, a \
                 replica, or by rebuilding them) and take a new backup",
            )),
        },
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("backup {id} failed: {e}"),
            "see the manager's log; nothing of it is left in the catalog",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("backup {id}: the task failed: {e}"),
            "see the manager's log",
        )),
    }
}

/// `DELETE /backups/{id}`: deletes a backup (its description first, then its data).
pub async fn delete(State(instance): State<Arc<Instance>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let store = backups::store(&instance)
        .ok_or_else(|| ApiError::unavailable("no backup store is configured", "set backup.store"))?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a backup id"),
            "ids look like 20261130T030000Z: instance-manager backup list shows them",
        ));
    }
    let store_err = |e: crate::backup::catalog::CatalogError| {
        ApiError::unavailable(e.to_string(), "check the store (instance-manager diagnose)")
    };
    if instance.backups.running().as_deref() == Some(id.as_str()) {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("backup {id} is running"), "wait for it to finish"));
    }
    if catalog::get(&store, &id).await.map_err(store_err)?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("there is no backup {id}"),
            "instance-manager backup list shows the ids",
        ));
    }
    catalog::delete(&store, &id).await.map_err(store_err)?;
    tracing::info!(backup = %id, "backup deleted on request");
    backups::refresh_last_backup(&instance, &store).await;
    Ok(Json(json!({ "deleted": id })).into_response())
}
