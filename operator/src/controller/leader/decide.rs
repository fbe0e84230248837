//! The leader election's decisions, pure: (our role, the Lease as last read, our identity,
//! the monotonic time) → what to do. The async shell ([`super::Elector`]) only reads the Lease,
//! carries out the decision and feeds the answer back through [`after_write`].
//!
//! ```text
//!                 Create / Acquire / Renew written
//!   ┌───────────┐ ──────────────────────────────▶ ┌────────────────────────┐
//!   │ Candidate │                                  │ Leader { renewed_at }  │──▶ StepDown(Loss): the
//!   └───────────┘ ◀── 409 or failure: try again   └────────────────────────┘    process exits
//!    Wait while another holds an unexpired lease     Renew each retry period
//! ```
//!
//! **Expiry is measured on our own clock.** Another replica's `renewTime` is its wall clock;
//! comparing it with ours would make a clock skew of a few seconds a split brain. Instead we
//! record when *we* first read each `resourceVersion` ([`Sighting::first_seen`]); a holder that
//! renews writes a new version, so a lease whose version has not changed for its
//! `leaseDurationSeconds` of our monotonic time has not been renewed for at least that long.
//!
//! **A leader steps down before anyone may take over.** The leader counts its renew deadline
//! from the moment it *sent* its last successful write, which is no later than the moment the
//! write landed, which is no later than the moment another replica first read the new version.
//! With the defaults the leader stops at 10 s, and the earliest takeover is 15 s after that
//! send: 5 s of margin for scheduling delays and clock-rate differences.
//!
//! The clock is tokio's [`Instant`] (`CLOCK_MONOTONIC`), which does not advance while a node is
//! suspended. A leader resumed after a suspension may therefore believe its deadline is still
//! ahead; it finds out at its next tick (at most one retry period), because every tick reads
//! the Lease before writing and a lease held by another is a [`Loss::TakenBy`].

use std::time::Duration;

use tokio::time::Instant;

/// The election's timing. The defaults are client-go's ratios, tighter: a 15 s lease renewed
/// every 2 s, given up 10 s after the last successful renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a lease lasts without renewal before a candidate may take it
    /// (`spec.leaseDurationSeconds`, whole seconds on the wire).
    pub lease_duration: Duration,
    /// How long after its last successful renewal a leader stops reconciling.
    pub renew_deadline: Duration,
    /// How often a candidate reads the lease and a leader renews it.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// The longest a single API call may take: half the renew deadline, so that a leader
    /// gets at least two attempts at renewing before it must step down.
    pub fn call_timeout(&self) -> Duration {
        self.renew_deadline / 2
    }

    /// `leaseDurationSeconds` as written: the duration rounded up to whole seconds, at least 1.
    pub fn lease_duration_seconds(&self) -> i32 {
        let secs = self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
    }
}

/// What one read of the Lease said, extracted from the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRead {
    /// `metadata.resourceVersion`: the compare-and-swap token, and what tells a renewal apart.
    pub resource_version: String,
    /// `spec.holderIdentity`; an empty string (client-go's release) reads as `None`.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`; absent or non-positive reads as ours.
    pub lease_duration: Duration,
}

/// A read of the Lease, with when we first saw its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// What the Lease said.
    pub read: LeaseRead,
    /// When this process first read this `resourceVersion` (our monotonic clock).
    pub first_seen: Instant,
}

impl Sighting {
    /// When the lease expires if nobody renews it (saturates far in the future).
    pub fn expires_at(&self) -> Instant {
        self.first_seen.checked_add(self.read.lease_duration).unwrap_or(self.first_seen)
    }
}

/// Records a read: the same version as `previous` keeps its first sighting, a new one starts
/// now.
pub fn sight(previous: Option<&Sighting>, read: LeaseRead, now: Instant) -> Sighting {
    let first_seen = match previous {
        Some(p) if p.read.resource_version == read.resource_version => p.first_seen,
        _ => now,
    };
    Sighting { read, first_seen }
}

/// The Lease as the decision sees it this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The read failed (timeout, 5xx, ...): nothing is known.
    Unreadable,
    /// There is no Lease by that name.
    Absent,
    /// The Lease, read this tick.
    Present(Sighting),
}

/// Our role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not leading: waiting for the lease.
    Candidate,
    /// Leading since a write that was sent at `renewed_at` and succeeded.
    Leader {
        /// When the last successful write was sent.
        renewed_at: Instant,
    },
}

impl Role {
    /// When a leader must have renewed by, or step down; `None` for a candidate.
    pub fn deadline(&self, timings: &Timings) -> Option<Instant> {
        match self {
            Self::Candidate => None,
            Self::Leader { renewed_at } => Some(renewed_at.checked_add(timings.renew_deadline).unwrap_or(*renewed_at)),
        }
    }
}

/// Why a leader is no longer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// Another replica holds the lease.
    TakenBy(String),
    /// The holder was cleared by someone else.
    Cleared,
    /// The Lease was deleted.
    Deleted,
    /// A renewal was refused with 409: the Lease changed since we read it.
    Conflict,
    /// No renewal succeeded within the renew deadline.
    RenewDeadline(Duration),
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TakenBy(holder) => write!(f, "the lease is now held by {holder}"),
            Self::Cleared => write!(f, "someone else cleared the lease's holder"),
            Self::Deleted => write!(f, "the lease was deleted"),
            Self::Conflict => write!(f, "a renewal conflicted (HTTP 409): the lease changed since it was read"),
            Self::RenewDeadline(d) => {
                write!(f, "no renewal succeeded within the renew deadline ({}s)", d.as_secs_f64())
            }
        }
    }
}

/// What to do this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The Lease does not exist: create it naming us.
    Create,
    /// The lease is released or expired: take it (compare-and-swap on the version read).
    Acquire,
    /// The lease names us: renew it (compare-and-swap on the version read).
    Renew,
    /// Another replica holds a live lease: read again next tick.
    Wait {
        /// The holder.
        holder: String,
    },
    /// The read failed: keep our role (a leader until its deadline) and read again next tick.
    Retry,
    /// We were leading and no longer are.
    StepDown(Loss),
}

/// Decides what to do with the lease as observed this tick.
pub fn decide(role: &Role, observed: &Observed, identity: &str, timings: &Timings, now: Instant) -> Decision {
    if let Role::Leader { renewed_at } = role
        && now.saturating_duration_since(*renewed_at) >= timings.renew_deadline
    {
        return Decision::StepDown(Loss::RenewDeadline(timings.renew_deadline));
    }
    let sighting = match observed {
        Observed::Unreadable => return Decision::Retry,
        Observed::Absent if matches!(role, Role::Leader { .. }) => return Decision::StepDown(Loss::Deleted),
        Observed::Absent => return Decision::Create,
        Observed::Present(sighting) => sighting,
    };
    match (&sighting.read.holder, role) {
        (Some(holder), _) if holder == identity => Decision::Renew,
        (Some(holder), Role::Leader { .. }) => Decision::StepDown(Loss::TakenBy(holder.clone())),
        (None, Role::Leader { .. }) => Decision::StepDown(Loss::Cleared),
        (None, Role::Candidate) => Decision::Acquire,
        (Some(_), Role::Candidate) if now >= sighting.expires_at() => Decision::Acquire,
        (Some(holder), Role::Candidate) => Decision::Wait { holder: holder.clone() },
    }
}

/// How a write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The API server accepted it.
    Written,
    /// 409: the Lease changed since we read it (or, for a create, exists already).
    Conflict,
    /// Anything else (timeout, 5xx, 429, ...): unknown whether it landed.
    Failed,
}

/// Our role after a write that was sent at `sent_at`, or the loss that ends our leadership.
pub fn after_write(role: &Role, outcome: WriteOutcome, sent_at: Instant) -> Result<Role, Loss> {
    match (outcome, role) {
        (WriteOutcome::Written, _) => Ok(Role::Leader { renewed_at: sent_at }),
        (WriteOutcome::Conflict, Role::Leader { .. }) => Err(Loss::Conflict),
        // A failed renewal keeps the old deadline: the next tick retries, and steps down once
        // the deadline has passed.
        (WriteOutcome::Failed, Role::Leader { .. }) => Ok(*role),
        (WriteOutcome::Conflict | WriteOutcome::Failed, Role::Candidate) => Ok(Role::Candidate),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
