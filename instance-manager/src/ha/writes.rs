//! Reading and writing the lease: every compare-and-swap the HA loop makes, bounded so that a
//! hung store never delays a fence, and the re-read that settles a conflict.

use std::time::Duration;

use super::actor::HaLoop;
use super::decide::{LeaseView, claim_deadline, claim_sent, renew_fresh, start_held_as_primary, transition_kind};
use crate::clock::BootInstant;
use crate::config::Validated;
use crate::instance::Desired;
use crate::lease::{LeaseError, LeaseRecord, Version, with_deadline};

/// What every write of the lease stamps on it besides the holder.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// This cluster's name.
    pub cluster: &'a str,
    /// This data directory's system identifier, once known.
    pub system_identifier: Option<&'a str>,
    /// The lowest term an acquisition may carry: above every term any member has seen
    /// ([`super::term::HighestTerm::next`]), so that terms never go backwards, even when the
    /// lease was deleted.
    pub min_term: u64,
}

/// The record a write by `me` carries (invariant 6: the term is the fencing token). A renew
/// keeps the term; an acquisition — the holder was someone else, nobody, or there was no
/// lease — raises it above both the current term and every term seen, takes `me` out of the
/// synchronous set (a primary is not its own standby) and clears a switchover announcement.
/// `handover_done` (we run as primary) clears an announcement that named us. Every write
/// stamps the cluster's identity.
pub fn next_record(
    current: Option<&LeaseRecord>,
    me: &str,
    now: jiff::Timestamp,
    lease_seconds: u32,
    handover_done: bool,
    stamp: &Stamp<'_>,
) -> LeaseRecord {
    let mut r = current.cloned().unwrap_or_default();
    r.cluster = Some(stamp.cluster.to_string());
    if let Some(id) = stamp.system_identifier {
        r.system_identifier = Some(id.to_string());
    }
    if !r.is_held_by(me) {
        r.transitions = r.transitions.saturating_add(1).max(stamp.min_term);
        r.acquire_time = Some(now);
        r.sync_standbys.retain(|s| s != me);
        r.switchover_to = None;
    } else if handover_done && r.switchover_to.as_deref() == Some(me) {
        r.switchover_to = None;
    }
    r.holder = Some(me.to_string());
    r.renew_time = Some(now);
    r.lease_duration_seconds = lease_seconds;
    r
}

impl HaLoop {
    /// Whether our last renew is within the renew deadline.
    pub(super) fn renew_is_fresh(&self) -> bool {
        renew_fresh(&self.memory, &self.timing, BootInstant::now())
    }

    /// From now on we do not hold the lease.
    pub(super) fn forget_renew(&mut self) {
        self.memory.last_renew_sent = None;
        self.memory.failsafe_confirmed = None;
        self.instance.set_primary_allowed_until(None);
        self.disarm();
    }

    /// Gives the lease up when we hold it and Postgres is stopped.
    pub(super) async fn release(&mut self) -> crate::api::HaResult<()> {
        use crate::api::HaCommandError;
        let me = self.instance.config().name.clone();
        let (record, version) = match with_deadline(self.store.get(), self.timing.retry_period).await {
            Ok(Some(rv)) => rv,
            Ok(None) => return Ok(()),
            Err(e) => return Err(HaCommandError::Lease(e.to_string())),
        };
        if !record.is_held_by(&me) {
            return Ok(());
        }
        if self.instance.process().pid.is_some() {
            return Err(HaCommandError::WrongRole("postgres is still running".into()));
        }
        let mut next = record;
        next.holder = None;
        next.renew_time = Some(jiff::Timestamp::now());
        self.forget_renew();
        with_deadline(self.store.replace(&next, &version), self.timing.retry_period)
            .await
            .map(|_| ())
            .map_err(|e| HaCommandError::Lease(e.to_string()))?;
        tracing::info!("released the lease");
        Ok(())
    }

    /// How long a lease call may take: a period, and never past the moment a holder must
    /// fence (a hung store must not delay the fence).
    pub(super) fn call_deadline(&self) -> Duration {
        let mut d = self.timing.retry_period;
        if let Some(deadline) = claim_deadline(&self.memory, &self.timing) {
            d = d.min(deadline.duration_since(BootInstant::now()));
        }
        d
    }

    pub(super) async fn read_lease(&mut self) -> LeaseView {
        if claim_sent(&self.memory).is_some() && self.call_deadline().is_zero() {
            // The renew deadline passed: we no longer hold the lease, whatever the store says.
            // Forget the renew (decide() fences a writable Postgres) and read normally.
            tracing::warn!("the renew deadline passed without a successful renew");
            self.memory.last_renew_sent = None;
            self.memory.failsafe_confirmed = None;
            self.instance.set_primary_allowed_until(None);
            // Decide now (a fence must not wait for a read); read at the next tick.
            return LeaseView::Unreadable("the renew deadline passed".into());
        }
        let deadline = self.call_deadline();
        let result = with_deadline(self.store.get(), deadline).await;
        let now = BootInstant::now();
        // Time during which the store could not be read is not time the lease was observed
        // unchanged: after reads failed for half the renew deadline (an API-server outage,
        // during which the holder may have fenced) the observation starts again, so the holder
        // gets its chance to renew before anyone takes the lease from it. Failed reads only: a
        // loop that is merely slow (a loaded machine) keeps its observation.
        let blind = self.store_health.failing_for(now).is_some_and(|d| d >= self.timing.renew_deadline / 2);
        match result {
            Ok(found) => {
                self.store_unavailable = false;
                self.store_health.answered(now);
                if blind {
                    self.seen = None;
                    self.memory.absent_since = None;
                }
                match found {
                    Some((record, version)) => self.present(record, version, now),
                    None => {
                        self.seen = None;
                        let since = *self.memory.absent_since.get_or_insert(now);
                        if since == now {
                            tracing::warn!(store = %self.store.describe(), "the lease is missing: treating it as held by an unknown holder until leaseDuration has passed");
                        }
                        self.last_error = None;
                        LeaseView::Absent
                    }
                }
            }
            Err(e) => {
                self.store_unavailable = e.is_retryable();
                let holding = self.renew_is_fresh();
                if holding {
                    // A holder that cannot read cannot renew either: that is a failed renew.
                    self.renew_failures_total += 1;
                }
                self.store_health.failed(now, &self.store.describe(), &e.to_string(), holding, !e.is_retryable());
                self.last_error = Some(e.to_string());
                LeaseView::Unreadable(e.to_string())
            }
        }
    }

    /// A lease that was read: refused when it belongs to another cluster (it is never acted
    /// on, nor written), otherwise remembered with the time its version was first seen.
    fn present(&mut self, record: LeaseRecord, version: Version, now: BootInstant) -> LeaseView {
        let v = self.instance.config();
        if let Some(why) = record.foreign_to(&v.cluster, self.system_identifier.as_deref()) {
            let message = format!(
                "{why}: refusing to use {} (give each cluster its own lease: lease.name or lease.path)",
                self.store.describe()
            );
            if self.last_error.as_deref() != Some(message.as_str()) {
                tracing::error!(error = %message, "the lease is another cluster's");
            }
            self.last_error = Some(message.clone());
            self.seen = None;
            return LeaseView::Unreadable(message);
        }
        self.memory.absent_since = None;
        self.highest_term.observe(record.transitions);
        let since = match &self.seen {
            Some((v, t)) if *v == version => *t,
            _ => now,
        };
        self.seen = Some((version.clone(), since));
        self.last_error = None;
        LeaseView::Present { record, version, unchanged_since: since }
    }

    /// Renew (`create` false, holder is us), acquire over an expired or released lease
    /// (holder is someone else or nobody), or create a missing lease.
    pub(super) async fn write(&mut self, view: &LeaseView, v: &Validated, create: bool) -> bool {
        let me = v.name.as_str();
        let wall = jiff::Timestamp::now();
        let current = match view {
            LeaseView::Present { record, version, .. } => Some((record, version)),
            _ => None,
        };
        // A lease deleted under its holder is recreated by it: that is no change of holder.
        let recreating = current.is_none() && self.renew_is_fresh();
        let previous = if recreating { Some(me.to_string()) } else { current.and_then(|(r, _)| r.holder.clone()) };
        let version = current.map(|(_, v)| v.clone());
        let handover_done = self.instance.desired() == Desired::Primary;
        let lease_seconds = self.timing.lease_duration.as_secs().max(1) as u32;
        let stamp = Stamp {
            cluster: &v.cluster,
            system_identifier: self.system_identifier.as_deref(),
            min_term: self.highest_term.next(self.peer_term),
        };
        // A lease created again keeps the last published synchronous set: it still says who
        // has every acknowledged commit.
        let missing = LeaseRecord { sync_standbys: self.last_sync_set.clone(), ..LeaseRecord::default() };
        let base = current.map(|(r, _)| r).unwrap_or(&missing);
        let record = next_record(Some(base), me, wall, lease_seconds, handover_done, &stamp);
        let acquiring = previous.as_deref() != Some(me);
        if recreating {
            tracing::warn!(term = record.transitions, "the lease was deleted under its holder: creating it again");
        }
        let sent = BootInstant::now();
        let deadline = if acquiring { self.timing.retry_period } else { self.call_deadline() };
        let ok = if deadline.is_zero() {
            false
        } else {
            let result = match (&version, create) {
                (Some(ver), false) => with_deadline(self.store.replace(&record, ver), deadline).await,
                _ => with_deadline(self.store.create(&record), deadline).await,
            };
            match result {
                Ok(new_version) => self.wrote(record, new_version, sent, acquiring, previous, v),
                Err(LeaseError::Conflict) => self.after_conflict(&record, sent, acquiring, previous, v).await,
                Err(e) => {
                    let fatal = !e.is_retryable();
                    self.store_health.failed(
                        BootInstant::now(),
                        &self.store.describe(),
                        &e.to_string(),
                        !acquiring,
                        fatal,
                    );
                    self.last_error = Some(e.to_string());
                    false
                }
            }
        };
        // Renews (not acquisitions) are what the metrics count.
        if !acquiring {
            if ok {
                self.renewals_total += 1;
            } else {
                self.renew_failures_total += 1;
            }
        }
        ok
    }

    pub(super) fn wrote(
        &mut self,
        record: LeaseRecord,
        version: Version,
        sent: BootInstant,
        acquiring: bool,
        previous: Option<String>,
        v: &Validated,
    ) -> bool {
        self.memory.last_renew_sent = Some(sent);
        self.instance.set_primary_allowed_until(claim_deadline(&self.memory, &self.timing));
        self.seen = Some((version, BootInstant::now()));
        if acquiring {
            tracing::info!(term = record.transitions, previous = previous.as_deref(), "acquired the lease");
            // The others follow at once, not at their next period.
            tokio::spawn(crate::peers::wake_all(v));
            let kind = transition_kind(record.switchover_to.as_deref(), &v.name, previous.is_some());
            self.pending_transition = Some((kind, previous, record.transitions, sent));
        }
        self.highest_term.observe(record.transitions);
        self.my_term = record.transitions;
        if self.instance.desired() == Desired::Primary {
            self.arm();
        }
        self.held_unstarted = Some((record.sync_standbys.clone(), acquiring));
        true
    }

    /// We hold the lease and Postgres is not running (at boot, or after a fence): start it.
    /// Directly as the primary — crash recovery on the same timeline — only when nobody else
    /// can have written since this data directory last ran as primary: we held the lease
    /// before this write (a renew, or a lease recreated by its holder) and `pg_control` says
    /// it was a primary. Anything else starts as a standby and is promoted onto a new timeline
    /// (docs/architecture.md §4.4: timelines change only when leadership moved).
    /// Only after a write of the same tick (`held_unstarted` is cleared at every tick's start).
    pub(super) async fn start_if_down(&mut self) {
        let Some((sync, acquiring)) = self.held_unstarted.take() else { return };
        if self.instance.desired() == Desired::Primary || self.instance.process().pid.is_some() {
            return;
        }
        let v = self.instance.config();
        let paths = &self.instance.paths;
        let initialized = crate::pgdata::is_initialized(&paths.data_dir);
        let was_primary = if initialized && !acquiring {
            match crate::pgdata::cluster_state(&self.sup, &v, paths).await {
                Ok(state) => Some(state.was_primary()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read pg_control; starting as a standby to be promoted");
                    None
                }
            }
        } else {
            None
        };
        let primary = start_held_as_primary(initialized, acquiring, was_primary);
        if primary {
            tracing::info!("holding the lease: starting postgres as the primary on its own timeline");
            self.prepare_primary_sync(&sync);
            self.instance.set_desired(Desired::Primary);
            self.arm();
        } else {
            tracing::info!("holding the lease: starting postgres as a standby, to be promoted");
            self.instance.set_desired(Desired::Replica(None));
        }
    }

    /// A 409: someone wrote first — unless the re-read shows our own write landed.
    pub(super) async fn after_conflict(
        &mut self,
        ours: &LeaseRecord,
        sent: BootInstant,
        acquiring: bool,
        previous: Option<String>,
        v: &Validated,
    ) -> bool {
        match with_deadline(self.store.get(), self.timing.retry_period).await {
            Ok(Some((record, version))) if record.normalized() == ours.normalized() => {
                tracing::info!("the lease write landed although its answer was a conflict");
                self.wrote(record, version, sent, acquiring, previous, v)
            }
            Ok(None) if !acquiring => {
                // Deleted under us: still ours until the renew deadline; the next tick
                // recreates it (decide: a missing lease with a fresh renew).
                self.seen = None;
                self.memory.absent_since.get_or_insert(BootInstant::now());
                tracing::warn!("the lease was deleted while we hold it; creating it again");
                self.renew_again = true;
                false
            }
            Ok(_) => {
                tracing::info!(acquiring, "lost the lease race: someone else wrote first");
                if !acquiring {
                    self.memory.last_renew_sent = None;
                    self.memory.failsafe_confirmed = None;
                    self.instance.set_primary_allowed_until(None);
                }
                false
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp<'static> = Stamp { cluster: "main", system_identifier: None, min_term: 0 };

    fn held(holder: &str, term: u64) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            transitions: term,
            sync_standbys: vec!["pg-2".into(), "pg-3".into()],
            ..LeaseRecord::default()
        }
    }

    #[test]
    fn a_renew_keeps_the_term_and_an_acquisition_increments_it() {
        let now = jiff::Timestamp::now();
        let renew = next_record(Some(&held("pg-1", 4)), "pg-1", now, 15, false, &STAMP);
        assert_eq!((renew.transitions, renew.holder.as_deref()), (4, Some("pg-1")));
        let taken = next_record(Some(&held("pg-1", 4)), "pg-2", now, 15, false, &STAMP);
        assert_eq!((taken.transitions, taken.holder.as_deref()), (5, Some("pg-2")));
        assert_eq!(taken.sync_standbys, vec!["pg-3".to_string()], "the new primary is not its own standby");
        assert_eq!(taken.acquire_time, Some(now));
        let first = next_record(None, "pg-1", now, 15, false, &STAMP);
        assert_eq!((first.transitions, first.lease_duration_seconds), (1, 15));
        let released = LeaseRecord { holder: None, ..held("x", 7) };
        assert_eq!(next_record(Some(&released), "pg-3", now, 15, false, &STAMP).transitions, 8);
    }

    #[test]
    fn terms_never_go_backwards_when_the_lease_was_deleted() {
        let now = jiff::Timestamp::now();
        let seen_before = Stamp { min_term: 9, system_identifier: Some("7300"), ..STAMP };
        let recreated = next_record(None, "pg-2", now, 15, false, &seen_before);
        assert_eq!(recreated.transitions, 9, "a new lease starts above every term seen (8)");
        assert_eq!(
            (recreated.cluster.as_deref(), recreated.system_identifier.as_deref()),
            (Some("main"), Some("7300"))
        );
        let taken = next_record(Some(&held("pg-1", 12)), "pg-2", now, 15, false, &seen_before);
        assert_eq!(taken.transitions, 13, "above the current term when it is the highest");
        let renew = next_record(Some(&held("pg-2", 3)), "pg-2", now, 15, false, &seen_before);
        assert_eq!(renew.transitions, 3, "a renew keeps its term");
    }

    #[test]
    fn a_switchover_announcement_lasts_until_the_target_runs_as_primary() {
        let now = jiff::Timestamp::now();
        let handed = LeaseRecord { switchover_to: Some("pg-2".into()), ..held("pg-2", 5) };
        assert_eq!(next_record(Some(&handed), "pg-2", now, 15, false, &STAMP).switchover_to.as_deref(), Some("pg-2"));
        assert_eq!(next_record(Some(&handed), "pg-2", now, 15, true, &STAMP).switchover_to, None);
        // The old primary's own announcement naming its target survives its renews.
        let announced = LeaseRecord { switchover_to: Some("pg-3".into()), ..held("pg-1", 5) };
        assert_eq!(next_record(Some(&announced), "pg-1", now, 15, true, &STAMP).switchover_to.as_deref(), Some("pg-3"));
    }
}
