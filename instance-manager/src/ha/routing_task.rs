//! Carrying out routing (`routing` module) off the HA loop's path: the loop publishes what
//! this instance is — primary with its term, or not — and this task writes the `-rw`
//! EndpointSlice and the pod's role label, retrying what can be retried. Routing calls may
//! take seconds; renewals and fencing must never wait for them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::routing::{ROLE_PRIMARY, ROLE_REPLICA, Routing, RoutingError};

/// What routing should say about this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteState {
    /// Not decided yet.
    Unknown,
    /// The primary, holding the lease with this term.
    Primary(u64),
    /// Not the primary.
    Replica,
}

/// Runs until the sender is dropped. `others` are the other members' names (their pods).
pub async fn run(routing: Arc<dyn Routing>, mut rx: watch::Receiver<RouteState>, others: Vec<String>) {
    let mut applied = RouteState::Unknown;
    let mut others_labelled_for: Option<u64> = None;
    loop {
        let want = *rx.borrow_and_update();
        if want != applied {
            applied = apply(routing.as_ref(), applied, want).await;
        }
        // Once per term: the other pods are not primary (a dead ex-primary cannot say so).
        if let RouteState::Primary(term) = applied
            && others_labelled_for != Some(term)
        {
            for member in &others {
                log_err(routing.set_member_role_label(member, ROLE_REPLICA).await, "label a member's pod replica");
            }
            others_labelled_for = Some(term);
        }
        // Re-assert periodically: someone may have edited the slice or the label.
        let _ = tokio::time::timeout(Duration::from_secs(30), rx.changed()).await;
        if rx.has_changed().is_err() {
            return;
        }
        if *rx.borrow() == applied {
            applied = RouteState::Unknown;
        }
    }
}

async fn apply(routing: &dyn Routing, from: RouteState, to: RouteState) -> RouteState {
    if let RouteState::Primary(old) = from
        && to != from
        && let Err(e) = routing.released(old).await
    {
        tracing::warn!(error = %e, term = old, "cannot release the -rw EndpointSlice");
    }
    match to {
        RouteState::Unknown => to,
        RouteState::Replica => {
            log_err(routing.set_role_label(ROLE_REPLICA).await, "label the pod replica");
            to
        }
        RouteState::Primary(term) => {
            for attempt in 0..5u32 {
                match routing.became_primary(term).await {
                    Ok(()) => {
                        tracing::info!(term, routing = %routing.describe(), "routing points at this primary");
                        break;
                    }
                    Err(RoutingError::StaleTerm { ours, theirs }) => {
                        tracing::warn!(ours, theirs, "a newer primary owns routing; not overwriting it");
                        return RouteState::Unknown;
                    }
                    Err(e) if e.is_retryable() && attempt < 4 => {
                        tracing::warn!(error = %e, "routing update failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                    }
                    Err(e) => {
                        // The label does not depend on the slice: a refused slice must not
                        // leave the primary's pod labelled replica.
                        tracing::error!(error = %e, "cannot point routing at this primary");
                        log_err(routing.set_role_label(ROLE_PRIMARY).await, "label the pod primary");
                        return RouteState::Unknown;
                    }
                }
            }
            log_err(routing.set_role_label(ROLE_PRIMARY).await, "label the pod primary");
            to
        }
    }
}

fn log_err(r: Result<(), RoutingError>, what: &str) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot {what}");
    }
}
