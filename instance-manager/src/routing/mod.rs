//! Routing: what the lease holder does so that clients find it (docs/architecture.md §10).
//!
//! # Why the holder writes its own routing
//!
//! The `<cluster>-rw` Service has **no selector**. Its only backend is the EndpointSlice
//! `<cluster>-rw`, which the primary writes itself as its first act after promotion, and
//! empties when it releases the lease. Routing therefore follows leadership with the operator
//! down (the operator is not needed for failover, switchover or routing, docs/architecture.md §1), and it
//! changes exactly when the lease changes hands rather than when some controller's watch
//! catches up with a label.
//!
//! # Why terms
//!
//! Two instances may both believe, for a moment, that they are the primary: a partitioned
//! ex-primary that has not fenced yet, or a write whose answer was lost and that lands late.
//! The lease's term (`leaseTransitions`, architecture invariant 6) is the fencing token: the
//! slice carries the term of the holder that wrote it (annotation [`TERM_ANNOTATION`]), and
//! [`Routing::became_primary`] **never overwrites a slice stamped with a higher term** — a
//! stale ex-primary cannot steal routing back from its successor. Symmetrically,
//! [`Routing::released`] empties the slice only while it still carries our term, so a slow
//! ex-primary cannot clear its successor's routing. Every write is a compare-and-swap on
//! `resourceVersion` from the very read that decided it; a 409 means "re-read and decide
//! again", never "write again".
//!
//! The pod label [`ROLE_LABEL`] (`primary`/`replica`, for the `-ro` Service and
//! `kubectl get pods -L`) is advisory: a partitioned ex-primary cannot clear its own, which is
//! why invariant 1 stops its Postgres rather than relying on labels.
//!
//! Backends: [`KubernetesRouting`] (production) and [`NoRouting`] (file mode, outside
//! Kubernetes: clients find the primary through `/primary` or `target_session_attrs`).

mod kubernetes;
mod slice;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use kubernetes::KubernetesRouting;
pub use slice::{BadTerm, desired_slice, stored_term};

/// Annotation on the `-rw` EndpointSlice: the term of the holder that last wrote it.
pub const TERM_ANNOTATION: &str = "pgwarden.io/term";
/// The pod label saying what an instance is: [`ROLE_PRIMARY`] or [`ROLE_REPLICA`].
pub const ROLE_LABEL: &str = "pgwarden.io/role";
/// [`ROLE_LABEL`] value of the lease holder.
pub const ROLE_PRIMARY: &str = "primary";
/// [`ROLE_LABEL`] value of every other instance.
pub const ROLE_REPLICA: &str = "replica";
/// `endpointslice.kubernetes.io/managed-by` of the slices pgwarden writes, so the
/// EndpointSlice controller and the mirroring controller leave them alone.
pub const MANAGED_BY: &str = "pgwarden.io";
/// The name of the slice's port; the `-rw` Service's port must carry the same name.
pub const PORT_NAME: &str = "postgres";
/// How long one routing call may take in all, retries included, unless configured.
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(5);

/// Why a routing operation failed, classified by what the caller must do next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// The slice is stamped with a higher term than ours: a successor owns routing. We are a
    /// stale holder; nothing was written. Not retryable: check the lease.
    #[error("the -rw EndpointSlice belongs to term {theirs}, newer than ours ({ours}); not overwriting a successor")]
    StaleTerm {
        /// The term we were asked to publish.
        ours: u64,
        /// The term stamped on the slice.
        theirs: u64,
    },
    /// Every compare-and-swap lost against concurrent writers, even after re-reading.
    #[error("the -rw EndpointSlice kept changing under us ({attempts} compare-and-swap attempts lost); try again")]
    Conflict {
        /// How many writes were attempted.
        attempts: u32,
    },
    /// The API server could not be reached, failed transiently (5xx, 401, 408) or kept
    /// rate-limiting us. A write that failed this way may still have landed.
    #[error("kubernetes api unavailable: {message}")]
    Unavailable {
        /// What failed, on what.
        message: String,
    },
    /// The ServiceAccount may not do this (HTTP 403). Needs a human.
    #[error("{message}; hint: {hint}")]
    Forbidden {
        /// What was refused, on what.
        message: String,
        /// Which RBAC rule is missing.
        hint: String,
    },
    /// The request or the stored object is invalid (a 4xx other than the above, a malformed
    /// term, an unreadable answer). Retrying will not fix it; the message says what to fix.
    #[error("{message}")]
    Rejected {
        /// What was rejected and a hint on how to fix it.
        message: String,
    },
    /// The whole call, retries included, did not finish within its deadline. A write may
    /// still land; the next call settles it (it re-reads first).
    #[error("routing call did not finish within {0:?}")]
    Timeout(Duration),
}

impl RoutingError {
    /// Whether calling again later may succeed. Every call re-reads first, so retrying after
    /// [`Conflict`](Self::Conflict) or an unknown outcome is safe.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::Unavailable { .. } | Self::Timeout(_))
    }
}

/// `Result` with [`RoutingError`].
pub type Result<T, E = RoutingError> = std::result::Result<T, E>;

/// The future returned by [`Routing`] operations.
pub type RoutingFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// What a lease holder does so that clients find it. Every operation is bounded by the
/// backend's own deadline and re-reads before it writes.
pub trait Routing: Send + Sync {
    /// Points the `-rw` routing at this instance, stamped with `term` (the lease's
    /// `leaseTransitions` when we acquired it). Idempotent for the same term: calling it
    /// again re-asserts routing and writes nothing if it is already right.
    /// [`RoutingError::StaleTerm`] if a newer holder already owns routing.
    fn became_primary(&self, term: u64) -> RoutingFuture<'_>;

    /// Empties the `-rw` routing if it still carries `term`; does nothing (and succeeds) if
    /// it is missing or belongs to another term.
    fn released(&self, term: u64) -> RoutingFuture<'_>;

    /// Sets this instance's [`ROLE_LABEL`] to `role` ([`ROLE_PRIMARY`] or [`ROLE_REPLICA`]).
    /// Advisory: a missing pod is tolerated with a warning.
    fn set_role_label<'a>(&'a self, role: &'a str) -> RoutingFuture<'a>;

    /// Sets another member's [`ROLE_LABEL`]: the new holder marks the other members' pods
    /// `replica`, since a dead ex-primary cannot clear its own label. Advisory, like
    /// [`set_role_label`](Self::set_role_label).
    fn set_member_role_label<'a>(&'a self, member: &'a str, role: &'a str) -> RoutingFuture<'a>;

    /// How routing is done, for logs and status.
    fn describe(&self) -> String;
}

/// No routing: file mode or outside Kubernetes. Every operation succeeds at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRouting;

impl Routing for NoRouting {
    fn became_primary(&self, _term: u64) -> RoutingFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn released(&self, _term: u64) -> RoutingFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn set_role_label<'a>(&'a self, _role: &'a str) -> RoutingFuture<'a> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn set_member_role_label<'a>(&'a self, _member: &'a str, _role: &'a str) -> RoutingFuture<'a> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn describe(&self) -> String {
        "none (clients use /primary or target_session_attrs)".into()
    }
}

/// Runs `fut`, giving up with [`RoutingError::Timeout`] after `deadline`. The abandoned call
/// is dropped; a write in flight may still land (the next call re-reads).
async fn with_deadline<T>(fut: impl Future<Output = Result<T>>, deadline: Duration) -> Result<T> {
    tokio::time::timeout(deadline, fut).await.unwrap_or(Err(RoutingError::Timeout(deadline)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn no_routing_always_succeeds() {
        let routing: Arc<dyn Routing> = Arc::new(NoRouting);
        assert_eq!(routing.became_primary(3).await, Ok(()));
        assert_eq!(routing.released(3).await, Ok(()));
        assert_eq!(routing.set_role_label(ROLE_PRIMARY).await, Ok(()));
        assert_eq!(routing.describe(), "none (clients use /primary or target_session_attrs)");
    }

    #[tokio::test(start_paused = true)]
    async fn with_deadline_maps_elapsed_to_timeout() {
        let d = Duration::from_secs(2);
        assert_eq!(with_deadline(std::future::pending::<Result<()>>(), d).await, Err(RoutingError::Timeout(d)));
        assert_eq!(with_deadline(async { Ok(1) }, d).await, Ok(1));
    }

    #[test]
    fn errors_are_classified_and_say_what_to_do() {
        assert!(RoutingError::Conflict { attempts: 4 }.is_retryable());
        assert!(RoutingError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(!RoutingError::StaleTerm { ours: 3, theirs: 4 }.is_retryable());
        let forbidden = RoutingError::Forbidden { message: "no".into(), hint: "grant it".into() };
        assert!(!forbidden.is_retryable());
        assert_eq!(forbidden.to_string(), "no; hint: grant it");
        let stale = RoutingError::StaleTerm { ours: 3, theirs: 4 }.to_string();
        assert!(stale.contains("term 4") && stale.contains("ours (3)"), "{stale}");
    }
}
