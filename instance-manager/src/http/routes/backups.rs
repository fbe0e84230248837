//! `GET /backups`: the catalog of complete backups, oldest first, each with what retention
//! would do with it now (when a policy is configured).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use crate::api::{BackupList, ListedBackup, RetentionVerdict};
use crate::backup::{catalog, retention};
use crate::http::ApiError;
use crate::instance::Instance;
use crate::jobs::backups;

/// The catalog.
pub async fn list(State(instance): State<Arc<Instance>>) -> Result<Json<BackupList>, ApiError> {
    let store = backups::store(&instance)
        .ok_or_else(|| ApiError::unavailable("no backup store is configured", "set backup.store"))?;
    let backups = catalog::list(&store)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string(), "check the store (instance-manager diagnose)"))?;
    let policy = instance.config().config.backup.as_ref().and_then(|b| b.retention.clone());
    let keep = policy.as_ref().map(|p| retention::choose_backups(p, &backups, jiff::Timestamp::now()).0);
    let backups = backups
        .into_iter()
        .map(|info| ListedBackup {
            retention: keep
                .as_ref()
                .map(|k| if k.contains(&info.id) { RetentionVerdict::Keep } else { RetentionVerdict::Expired }),
            info,
        })
        .collect();
    let retention = policy.map(|p| match (p.recovery_window_days, p.count) {
        (Some(d), _) => format!("recovery window of {d} days"),
        (None, Some(n)) => format!("the newest {n} backups"),
        (None, None) => "everything".into(),
    });
    Ok(Json(BackupList { destination: store.describe(), retention, backups }))
}
