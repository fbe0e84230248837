//! A standby that gets SIGTERM leaves the primary's synchronous set before it stops
//! (docs/architecture.md §7). Under `dataDurability: required` a published standby that goes
//! down makes every commit wait until it is back — a rolling update would stall writes once
//! per replica. So before its fast shutdown the run loop asks the lease holder
//! (`POST /ha/sync-leave`, with the members' token or the client certificate) every [`ASK_EVERY`] until it answers
//! `released` (commits no longer wait for it) or `cannot_leave` (no spare standby; it stops
//! anyway), for [`LEAVE_TIMEOUT`] at most; an unreachable holder ends the wait at once. The
//! holder's side is `ha::sync_loop`.

use std::time::Duration;

use super::Instance;
use crate::api::{SyncLeaveAnswer, SyncLeaveRequest, SyncLeaveState};

/// How long a stopping standby waits for the primary to release it.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often it asks.
const ASK_EVERY: Duration = Duration::from_millis(100);
/// Each ask's bound.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a standby's stop asks the primary first: synchronous replication with a lease.
pub fn applies(instance: &Instance) -> bool {
    let v = instance.config();
    v.config.synchronous.is_some() && v.config.lease.is_some()
}

/// Asks the lease holder to take this standby out of the synchronous set, until it is released,
/// cannot leave, or the holder cannot be asked. Logs the outcome; never fails the stop.
pub async fn leave(instance: &Instance) {
    let started = std::time::Instant::now();
    match ask_until_answered(instance).await {
        Ok(a) if a.state == SyncLeaveState::Released => tracing::info!(
            detail = %a.detail,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "left the synchronous set before stopping"
        ),
        Ok(a) => tracing::warn!(state = ?a.state, detail = %a.detail, "stopping while still in the synchronous set"),
        Err(why) => tracing::warn!(reason = %why, "could not leave the synchronous set before stopping"),
    }
}

async fn ask_until_answered(instance: &Instance) -> Result<SyncLeaveAnswer, String> {
    let v = instance.config();
    let holder = instance.lease_status().and_then(|l| l.holder).ok_or("no lease holder is known")?;
    if holder == v.name {
        return Err("this instance holds the lease".into());
    }
    let member = v.config.members.iter().find(|m| m.name == holder).ok_or(format!("{holder} is not a member"))?;
    // The members' token, or (without one) the client certificate of `api.tls.clientAuth`.
    let token = match &v.config.api.token_file {
        Some(file) => Some(crate::osuser::read_secret(file).map_err(|e| format!("cannot read api.tokenFile: {e}"))?),
        None => None,
    };
    let tls = crate::peers::tls_config(&v);
    let client = crate::peers::client(member, tls.as_ref(), ASK_TIMEOUT).map_err(|e| e.to_string())?;
    let req = SyncLeaveRequest { name: v.name.clone() };
    let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
    loop {
        let answer: SyncLeaveAnswer = client
            .post_json("/ha/sync-leave", &req, token.as_ref().map(|t| t.expose()))
            .await
            .map_err(|e| format!("{holder}: {e}"))?;
        if answer.state != SyncLeaveState::Waiting || tokio::time::Instant::now() + ASK_EVERY >= deadline {
            return Ok(answer);
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}
