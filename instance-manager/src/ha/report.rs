//! What the HA loop tells the others: the change of primary it completed, and its view of
//! the lease for `/status`, the metrics and `diagnose`.

use super::actor::HaLoop;
use super::decide::{LeaseView, Local, PgState, claim_sent};
use crate::api::{LeaseStatus, Transition};
use crate::clock::BootInstant;

impl HaLoop {
    pub(super) fn finish_transition(&mut self, local: &Local) {
        let Some((kind, from, term, started)) = &self.pending_transition else { return };
        if local.postgres != (PgState::Running { in_recovery: false }) {
            return;
        }
        let took = self
            .instance
            .promoted_at()
            .map(|t| t.duration_since(*started))
            .unwrap_or_else(|| BootInstant::now().duration_since(*started));
        let t = Transition {
            kind: *kind,
            from: from.clone(),
            to: self.instance.config().name.clone(),
            term: *term,
            at: jiff::Timestamp::now().to_string(),
            duration_ms: took.as_millis() as u64,
        };
        tracing::info!(kind = %t.kind, from = t.from.as_deref(), term = t.term, duration_ms = t.duration_ms, "now the primary");
        let count = self.transitions.entry(t.kind).or_default();
        count.total += 1;
        count.last_duration_ms = t.duration_ms;
        self.last_transition = Some(t);
        self.pending_transition = None;
    }

    pub(super) fn publish(&self, view: &LeaseView, me: &str, not_eligible: Option<String>) {
        let now = BootInstant::now();
        let (holder, term, sync, expires) = match view {
            LeaseView::Present { record, unchanged_since, .. } => (
                record.holder.clone(),
                record.transitions,
                record.sync_standbys.clone(),
                Some(self.timing.lease_duration.as_secs_f64() - now.duration_since(*unchanged_since).as_secs_f64()),
            ),
            _ => (None, 0, Vec::new(), None),
        };
        let renew_age = claim_sent(&self.memory).map(|t| now.duration_since(t).as_secs_f64());
        // Our claim is fresh: a renew, or a failsafe round while the lease cannot be read.
        let claiming = renew_age.is_some_and(|a| a < self.timing.renew_deadline.as_secs_f64());
        let held_by_me = holder.as_deref() == Some(me) && claiming;
        let membership = self.membership_status(me, &self.last_sync_set, claiming);
        self.instance.set_lease_status(Some(LeaseStatus {
            store: self.store.describe(),
            held_by_me,
            holder,
            term,
            renew_age_seconds: renew_age,
            expires_in_seconds: expires,
            sync_standbys: sync,
            eligible: not_eligible.is_none(),
            not_eligible_because: not_eligible,
            last_decision: self.last_decision.clone(),
            last_error: self.last_error.clone(),
            last_transition: self.last_transition.clone(),
            renewals_total: self.renewals_total,
            renew_failures_total: self.renew_failures_total,
            transitions: self.transitions.clone(),
            highest_term: self.highest_term.get(),
            failsafe_confirmed_age_seconds: self.memory.failsafe_confirmed.map(|t| now.duration_since(t).as_secs_f64()),
            failsafe_refusal: self.failsafe_refusal.clone(),
            failsafe_promised_to: self.instance.failsafe.promised_until(now).map(|(holder, _)| holder),
            routing_error: self.routing_problem.as_ref().and_then(|r| r.borrow().clone()),
            store_failing_seconds: self.store_health.failing_for(now).map(|d| d.as_secs_f64()),
            membership: Some(membership),
        }));
    }
}
