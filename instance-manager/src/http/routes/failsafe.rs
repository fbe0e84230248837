//! `POST /ha/failsafe`: a lease holder that cannot reach the lease store asks this member to
//! acknowledge it (`ha::failsafe`). Behind the bearer token: an acknowledgement is a promise
//! not to take the lease for `leaseDuration`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use crate::clock::BootInstant;
use crate::failsafe::{FailsafeAnswer, FailsafeRequest, MemberView};
use crate::instance::Instance;

/// Acknowledges the holder, or says why not.
pub async fn acknowledge(
    State(instance): State<Arc<Instance>>,
    Json(req): Json<FailsafeRequest>,
) -> Json<FailsafeAnswer> {
    let v = instance.config();
    let lease = instance.lease_status();
    let members: Vec<String> = v.config.members.iter().map(|m| m.name.clone()).filter(|n| *n != v.name).collect();
    let view = MemberView {
        me: &v.name,
        cluster: &v.cluster,
        members: &members,
        lease: lease.as_ref().map(|l| (l.holder.as_deref(), l.term)),
        holds_lease: lease.as_ref().is_some_and(|l| l.held_by_me),
    };
    let duration = crate::ha::open::timing_of(&v).lease_duration;
    let answer = match instance.failsafe.acknowledge(&req, &view, BootInstant::now(), duration) {
        Ok(()) => {
            tracing::debug!(holder = %req.holder, term = req.term, "failsafe: acknowledged the holder");
            FailsafeAnswer { acknowledged: true, refused_because: None }
        }
        Err(why) => {
            tracing::warn!(holder = %req.holder, term = req.term, reason = %why, "failsafe: refused to acknowledge");
            FailsafeAnswer { acknowledged: false, refused_because: Some(why) }
        }
    };
    Json(answer)
}
