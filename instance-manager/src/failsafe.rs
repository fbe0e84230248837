//! Failsafe: a primary stays writable through a lease-store outage while every member
//! acknowledges it (docs/architecture.md §4.6, setting `lease.failsafe`, on by default).
//!
//! The lease store being *unavailable* (timeouts, 5xx, refused connections — not a 403 and
//! not a 409) says nothing about who leads: the holder is still the only one that may write,
//! as long as nobody can take the lease from it. Failsafe makes that explicit. While the
//! holder cannot renew, every retry period it asks **every other member** of the configured
//! membership (one added during the outage at once, one removed during it until the store
//! answers again: `ha::membership`) over the peer API (`POST /ha/failsafe`, bearer token) to
//! acknowledge it. A member that acknowledges *promises* not to take the lease — not by an
//! election, not by an operator's promote — until `leaseDuration` after that acknowledgement on
//! its own clock, even
//! if the store comes back showing an expired lease. A round that **all** members acknowledged
//! counts for the holder like a renew sent when the round was sent: it stays writable until
//! `renewDeadline` after it, and fences then, exactly as without failsafe.
//!
//! One writer, as for the lease itself: the holder writes only until
//! `round_sent + renewDeadline (+ fenceBudget to stop)`; every member acknowledged at or after
//! `round_sent` and cannot acquire before `ack + leaseDuration`, and
//! `renewDeadline + fenceBudget < leaseDuration`. A member answers a request and records its
//! promise under the same lock under which its HA loop starts an acquisition ([`Promises`]):
//! an acknowledgement and an acquisition can never overlap. A member that holds the lease, is
//! acquiring it, has seen another holder at the same or a newer term, or was asked to promote
//! refuses — and one refusal or one silent member makes the holder fence at its deadline.
//!
//! Trade-off (README, "In Kubernetes"): a primary whose own link to the API server is cut
//! while it still reaches every member keeps the lease for as long as that lasts (the members
//! keep their promise), and after an outage a failover can start only `leaseDuration` after
//! the last acknowledgement. Without failsafe, every outage longer than `renewDeadline` stops
//! the writes.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::clock::BootInstant;

pub use crate::api::{FailsafeAnswer, FailsafeRequest};

/// What a member knows when it is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView<'a> {
    /// This member's name.
    pub me: &'a str,
    /// Its cluster.
    pub cluster: &'a str,
    /// The other members' names.
    pub members: &'a [String],
    /// The lease's holder and term as this member last saw them.
    pub lease: Option<(Option<&'a str>, u64)>,
    /// It holds the lease itself.
    pub holds_lease: bool,
}

/// Whether a member may acknowledge `req`; `Err` says why not. Pure: the promise itself is
/// recorded by [`Promises::acknowledge`]. The `Err` is a refusal's reason, not an error: text
/// for the asking member's log and the `/ha/failsafe` answer, which nothing matches on.
pub fn may_acknowledge(req: &FailsafeRequest, view: &MemberView<'_>) -> Result<(), String> {
    if req.cluster != view.cluster {
        return Err(format!("{} is a member of cluster {:?}, not {:?}", view.me, view.cluster, req.cluster));
    }
    if !view.members.contains(&req.holder) {
        return Err(format!("{} is not a member of {}'s cluster configuration", req.holder, view.me));
    }
    if view.holds_lease {
        return Err(format!("{} holds the lease itself", view.me));
    }
    match view.lease {
        Some((Some(h), term)) if h != req.holder && term >= req.term => Err(format!(
            "{} saw {h} hold the lease at term {term} (asked for {} at term {})",
            view.me, req.holder, req.term
        )),
        Some((_, term)) if term > req.term => {
            Err(format!("{} saw term {term}, newer than {}'s {}", view.me, req.holder, req.term))
        }
        _ => Ok(()),
    }
}

/// A member's promises and acquisitions, under one lock: an acknowledgement never overlaps an
/// acquisition (see the module docs).
#[derive(Debug, Default)]
pub struct Promises {
    state: Mutex<PromiseState>,
}

#[derive(Debug, Default)]
struct PromiseState {
    /// Whom we promised, and until when we may not acquire.
    promised: Option<(String, BootInstant)>,
    /// An acquisition of ours is in flight.
    acquiring: bool,
    /// An operator asked this member to promote: it acknowledges nobody any more.
    promoting: bool,
}

impl Promises {
    fn lock(&self) -> std::sync::MutexGuard<'_, PromiseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers `req` at `now`: records a promise until `now + lease_duration` when allowed.
    /// `Err` is the refusal's reason (as for [`may_acknowledge`]), shown, never matched on.
    pub fn acknowledge(
        &self,
        req: &FailsafeRequest,
        view: &MemberView<'_>,
        now: BootInstant,
        lease_duration: Duration,
    ) -> Result<(), String> {
        let mut s = self.lock();
        if s.acquiring {
            return Err(format!("{} is acquiring the lease", view.me));
        }
        if s.promoting {
            return Err(format!("{} was asked to promote", view.me));
        }
        may_acknowledge(req, view)?;
        let until = now.checked_add(lease_duration).unwrap_or(now);
        let keep = s.promised.as_ref().is_some_and(|(_, t)| *t > until);
        if !keep {
            s.promised = Some((req.holder.clone(), until));
        }
        Ok(())
    }

    /// Until when (and to whom) this member promised not to acquire, if that is still ahead.
    pub fn promised_until(&self, now: BootInstant) -> Option<(String, BootInstant)> {
        self.lock().promised.clone().filter(|(_, t)| *t > now)
    }

    /// Starts an acquisition unless a promise forbids it (`Err`: to whom, until when). The
    /// `Err` is a reason to wait, not a failure: the HA loop logs it and shows it as its wait.
    pub fn begin_acquire(&self, now: BootInstant) -> Result<(), String> {
        let mut s = self.lock();
        if let Some((holder, until)) = s.promised.as_ref().filter(|(_, t)| *t > now) {
            return Err(format!(
                "failsafe: promised {holder} not to take the lease for {:.1}s more",
                until.duration_since(now).as_secs_f64()
            ));
        }
        s.acquiring = true;
        Ok(())
    }

    /// The acquisition started by [`begin_acquire`](Self::begin_acquire) is over.
    pub fn end_acquire(&self) {
        self.lock().acquiring = false;
    }

    /// An operator asked this member to promote: no more acknowledgements; returns until when
    /// the promises already given forbid it to write.
    pub fn stop_acknowledging(&self) -> Option<BootInstant> {
        let mut s = self.lock();
        s.promoting = true;
        s.promised.as_ref().map(|(_, t)| *t)
    }

    /// The promotion asked for is over (done or failed).
    pub fn acknowledge_again(&self) {
        self.lock().promoting = false;
    }
}

#[cfg(test)]
#[path = "failsafe_tests.rs"]
mod tests;
