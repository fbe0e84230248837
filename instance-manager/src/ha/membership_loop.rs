//! The HA loop's side of a membership change (`ha::membership`, docs/architecture.md §4.8): it
//! moves to the configured `members` at every tick, says what changed, and tells `/status`.

use super::actor::HaLoop;
use super::decide::{LeaseView, renew_fresh};
use crate::api::MembershipStatus;
use crate::clock::BootInstant;
use crate::config::Validated;

impl HaLoop {
    /// Moves the membership to `v`'s `members` (the run loop applied an edited file): at once,
    /// except what [`Membership::next`](super::membership::Membership::next) keeps for later.
    pub(super) fn apply_membership(&mut self, v: &Validated) {
        let store_answers = self.store_health.failing_for(BootInstant::now()).is_none();
        let was_listed = self.membership.lists(&v.name);
        let (next, change) = self.membership.next(&v.config.members, store_answers);
        if change.is_empty() {
            return;
        }
        tracing::info!(
            added = ?change.added,
            removed = ?change.removed,
            moved = ?change.moved,
            released = ?change.released,
            members = ?next.names(),
            "membership changed: applied without a restart"
        );
        if !store_answers && !change.removed.is_empty() {
            tracing::warn!(
                removed = ?change.removed,
                "the lease store is failing: failsafe rounds keep asking the removed members until it answers"
            );
        }
        match (was_listed, next.lists(&v.name)) {
            (true, false) => tracing::warn!(
                "this instance is no longer listed in members (it is being removed): it never takes the lease again"
            ),
            (false, true) => tracing::info!("this instance is listed in members again"),
            _ => {}
        }
        let others = next.other_names(&v.name);
        self.routing_others.send_if_modified(|o| std::mem::replace(o, others.clone()) != others);
        self.membership = next;
    }

    /// Says it (WARN, once per episode) when this instance holds the lease without being
    /// listed: it keeps the lease — the operator switches over before removing a primary — but
    /// somebody should.
    pub(super) fn note_unlisted_holder(&mut self, view: &LeaseView, me: &str) {
        let holding = renew_fresh(&self.memory, &self.timing, BootInstant::now())
            && matches!(view, LeaseView::Present { record, .. } if record.is_held_by(me));
        let unlisted_holder = holding && !self.membership.lists(me);
        if unlisted_holder && !self.unlisted_holder_warned {
            tracing::warn!(
                "this instance holds the lease but is not listed in members: it keeps the lease until it is switched \
                 over (POST /switchover), and never takes it again"
            );
        }
        self.unlisted_holder_warned = unlisted_holder;
    }

    /// The membership for `/status`: `published` is the synchronous set of the lease as last
    /// read, `holds_lease` whether this instance holds it (its claim is fresh).
    pub(super) fn membership_status(&self, me: &str, published: &[String], holds_lease: bool) -> MembershipStatus {
        MembershipStatus {
            members: self.membership.names(),
            listed: self.membership.lists(me),
            pending: {
                let mut pending = self.membership.pending(me, published, holds_lease);
                pending.extend(
                    self.leaving_standbys()
                        .into_iter()
                        .map(|s| format!("{s}: stopping; being swapped out of the synchronous set before it stops")),
                );
                pending
            },
        }
    }
}
