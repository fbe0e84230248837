//! The mutating endpoints (authenticated on TCP, see `http::auth`):
//! `POST /switchover {target?}`, `/promote {force?}`, `/fence`, `/unfence`, `/pause`, `/resume`,
//! `/ha/sync-leave {name}` (a stopping standby asks the primary to take it out of the
//! synchronous set first: `ha::sync_loop`), and the harmless `POST /ha/tick` a former primary uses to wake the new holder. Their bodies
//! and answers are the contract's (`crate::api`).
//!
//! `/ha/tick` stays open without a token — the former primary that calls it during a handover
//! holds no token of the new holder's — but it is rate-limited: at most one wake-up of the HA
//! loop per [`crate::http::coalesce::TICK_INTERVAL`] whoever asks (a tick may write the lease;
//! a flood of ticks would multiply the lease writes). Requests in between answer
//! `{"ok": true, "woken": false}`: the loop was woken just before, which is what they asked.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::api::{
    FenceAnswer, HaCommandError, PauseAnswer, PromoteAnswer, PromoteRequest, SwitchoverDone, SwitchoverRequest,
    SyncLeaveAnswer, SyncLeaveRequest, TickAnswer,
};
use crate::ha::HaCommand;
use crate::http::ApiError;
use crate::instance::Instance;

/// Every refused or failed command answers `409` with the loop's message.
fn conflict(error: HaCommandError, hint: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, error.to_string(), hint)
}

/// `POST /switchover`: planned handover, on the primary.
pub async fn switchover(
    State(instance): State<Arc<Instance>>,
    body: Option<Json<SwitchoverRequest>>,
) -> Result<Json<SwitchoverDone>, ApiError> {
    let target = body.map(|Json(b)| b.target).unwrap_or_default();
    match instance.ha_command(|reply| HaCommand::Switchover { target, reply }).await {
        Ok(done) => Ok(Json(done)),
        Err(e) => Err(conflict(e, "run it against the primary, with a streaming, caught-up replica as target")),
    }
}

/// `POST /promote`: promote this replica.
pub async fn promote(
    State(instance): State<Arc<Instance>>,
    body: Option<Json<PromoteRequest>>,
) -> Result<Json<PromoteAnswer>, ApiError> {
    let force = body.map(|Json(b)| b.force).unwrap_or_default();
    match instance.ha_command(|reply| HaCommand::Promote { force, reply }).await {
        Ok(outcome) => Ok(Json(PromoteAnswer::from(&outcome))),
        Err(e) => {
            Err(conflict(e, "use switchover on the primary, or promote with force to take over from a live primary"))
        }
    }
}

/// `POST /fence`: stop Postgres and keep it stopped (a primary also gives up its lease).
pub async fn fence(State(instance): State<Arc<Instance>>) -> Json<FenceAnswer> {
    instance.set_fenced(true);
    Json(FenceAnswer { fenced: true })
}

/// `POST /unfence`: let Postgres run again.
pub async fn unfence(State(instance): State<Arc<Instance>>) -> Json<FenceAnswer> {
    instance.set_fenced(false);
    Json(FenceAnswer { fenced: false })
}

/// `POST /pause`: no automatic failover from this instance.
pub async fn pause(State(instance): State<Arc<Instance>>) -> Json<PauseAnswer> {
    instance.set_paused(true);
    Json(PauseAnswer { paused: true })
}

/// `POST /resume`: automatic failover again.
pub async fn resume(State(instance): State<Arc<Instance>>) -> Json<PauseAnswer> {
    instance.set_paused(false);
    Json(PauseAnswer { paused: false })
}

/// `POST /ha/sync-leave`: on the primary, a standby that is stopping asks to leave the
/// synchronous set first; answers where it stands.
pub async fn sync_leave(
    State(instance): State<Arc<Instance>>,
    Json(req): Json<SyncLeaveRequest>,
) -> Result<Json<SyncLeaveAnswer>, ApiError> {
    let name = req.name;
    match instance.ha_command(|reply| HaCommand::SyncLeave { name, reply }).await {
        Ok(answer) => Ok(Json(answer)),
        Err(e) => Err(conflict(e, "ask the lease holder")),
    }
}

/// `POST /ha/tick`: re-read the lease now (at most once per `TICK_INTERVAL`).
pub async fn tick(
    State(instance): State<Arc<Instance>>,
    axum::Extension(shared): axum::Extension<crate::http::coalesce::Coalesced>,
) -> Json<TickAnswer> {
    let woken = shared.admit_tick() && instance.ha_notify(HaCommand::Tick);
    Json(TickAnswer { ok: true, woken })
}
