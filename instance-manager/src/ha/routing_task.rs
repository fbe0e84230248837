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

/// Runs until the sender is dropped. `others` are the other members' names (their pods), as
/// the membership is now;
/// `problem` carries the last routing failure (for `/status`, metrics and `diagnose`), `None`
/// once routing is right again.
pub async fn run(
    routing: Arc<dyn Routing>,
    mut rx: watch::Receiver<RouteState>,
    others: watch::Receiver<Vec<String>>,
    problem: watch::Sender<Option<String>>,
) {
    let mut applied = RouteState::Unknown;
    let mut others_labelled_for: Option<u64> = None;
    loop {
        let want = *rx.borrow_and_update();
        if want != applied {
            let (now, error) = apply(routing.as_ref(), applied, want).await;
            applied = now;
            problem.send_if_modified(|p| std::mem::replace(p, error.clone()) != error);
        }
        // Once per term: the other pods are not primary (a dead ex-primary cannot say so).
        if let RouteState::Primary(term) = applied
            && others_labelled_for != Some(term)
        {
            let members = others.borrow().clone();
            for member in &members {
                let error = routing.set_member_role_label(member, ROLE_REPLICA).await.err();
                log_err(error.map(|e| format!("cannot label pod {member} replica: {e}")));
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

/// Moves routing from `from` to `to`: what is applied now, and the failure if any.
async fn apply(routing: &dyn Routing, from: RouteState, to: RouteState) -> (RouteState, Option<String>) {
    if let RouteState::Primary(old) = from
        && to != from
        && let Err(e) = routing.released(old).await
    {
        tracing::warn!(error = %e, term = old, "cannot release the -rw EndpointSlice");
    }
    match to {
        RouteState::Unknown => (to, None),
        RouteState::Replica => {
            let error =
                routing.set_role_label(ROLE_REPLICA).await.err().map(|e| format!("cannot label the pod replica: {e}"));
            log_err(error.clone());
            (to, error)
        }
        RouteState::Primary(term) => {
            for attempt in 0..5u32 {
                match routing.became_primary(term).await {
                    Ok(()) => {
                        tracing::info!(term, routing = %routing.describe(), "routing points at this primary");
                        break;
                    }
                    Err(e @ RoutingError::StaleTerm { ours, theirs }) => {
                        tracing::warn!(ours, theirs, "a newer primary owns routing; not overwriting it");
                        return (RouteState::Unknown, Some(e.to_string()));
                    }
                    Err(e) if e.is_retryable() && attempt < 4 => {
                        tracing::warn!(error = %e, "routing update failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                    }
                    Err(e) => {
                        // The label does not depend on the slice: a refused slice must not
                        // leave the primary's pod labelled replica.
                        tracing::error!(error = %e, "cannot point routing at this primary");
                        let label = routing.set_role_label(ROLE_PRIMARY).await.err();
                        log_err(label.map(|e| format!("cannot label the pod primary: {e}")));
                        return (RouteState::Unknown, Some(format!("cannot point the -rw EndpointSlice here: {e}")));
                    }
                }
            }
            let error =
                routing.set_role_label(ROLE_PRIMARY).await.err().map(|e| format!("cannot label the pod primary: {e}"));
            log_err(error.clone());
            (to, error)
        }
    }
}

fn log_err(error: Option<String>) {
    if let Some(e) = error {
        tracing::warn!(error = %e, "routing");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;

    use super::*;
    use crate::routing::RoutingFuture;

    /// Records labels; refuses every slice write (as an API server answering 422).
    #[derive(Default)]
    struct RefusingSlices {
        labels: Mutex<Vec<(String, String)>>,
    }

    impl Routing for RefusingSlices {
        fn became_primary(&self, _term: u64) -> RoutingFuture<'_> {
            Box::pin(async { Err(RoutingError::Rejected { message: "422: endpoints[0].addresses invalid".into() }) })
        }
        fn released(&self, _term: u64) -> RoutingFuture<'_> {
            Box::pin(async { Ok(()) })
        }
        fn set_role_label<'a>(&'a self, role: &'a str) -> RoutingFuture<'a> {
            self.labels.lock().unwrap().push(("me".into(), role.into()));
            Box::pin(async { Ok(()) })
        }
        fn set_member_role_label<'a>(&'a self, member: &'a str, role: &'a str) -> RoutingFuture<'a> {
            self.labels.lock().unwrap().push((member.into(), role.into()));
            Box::pin(async { Ok(()) })
        }
        fn describe(&self) -> String {
            "test".into()
        }
    }

    #[tokio::test]
    async fn a_refused_slice_is_reported_and_still_labels_the_primary() {
        let routing = Arc::new(RefusingSlices::default());
        let (tx, rx) = watch::channel(RouteState::Unknown);
        let (problem, mut problems) = watch::channel(None);
        let (_others_tx, others) = watch::channel(vec!["pg-2".to_string()]);
        let task = tokio::spawn(run(routing.clone(), rx, others, problem));
        tx.send(RouteState::Primary(3)).unwrap();
        let reported = tokio::time::timeout(Duration::from_secs(10), problems.wait_for(Option::is_some))
            .await
            .expect("no routing problem reported")
            .unwrap()
            .clone()
            .unwrap();
        assert!(reported.contains("422"), "{reported}");
        let labels = routing.labels.lock().unwrap().clone();
        assert!(labels.contains(&("me".into(), "primary".into())), "{labels:?}");
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
    }
}
