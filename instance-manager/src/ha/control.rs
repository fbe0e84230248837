//! Operator commands carried out by the HA loop: promote (forced or not) and the announcement
//! of a switchover.

use super::actor::HaLoop;
use super::decide::{LeaseView, PgState};
use crate::api::{HaCommandError, HaResult, PromoteOutcome, TransitionKind};
use crate::clock::BootInstant;

impl HaLoop {
    /// Renews with `switchover_to` set, announcing a handover.
    pub(super) async fn write_switchover_intent(&mut self, view: &LeaseView, target: &str) -> bool {
        let LeaseView::Present { record, version, unchanged_since } = view else { return false };
        let mut r = record.clone();
        r.switchover_to = Some(target.to_string());
        let announced = LeaseView::Present { record: r, version: version.clone(), unchanged_since: *unchanged_since };
        let v = self.instance.config();
        self.write(&announced, &v, false).await
    }

    /// An operator's promote: take the lease when it is free or expired (ignoring the election's
    /// preferences and `paused`), or with `force` from a live holder, in which case promotion
    /// waits until that holder must have fenced itself (renewDeadline + fenceBudget).
    pub(super) async fn manual_promote(&mut self, force: bool) -> HaResult<PromoteOutcome> {
        // Failsafe: from now on this member acknowledges nobody; a promise it already gave
        // holds (the promotion waits for it to run out).
        let promised_until = self.instance.failsafe.stop_acknowledging();
        let result = self.manual_promote_inner(force, promised_until).await;
        if result.is_err() {
            self.instance.failsafe.acknowledge_again();
        }
        result
    }

    async fn manual_promote_inner(
        &mut self,
        force: bool,
        promised_until: Option<BootInstant>,
    ) -> HaResult<PromoteOutcome> {
        let v = self.instance.config();
        if !self.membership.lists(&v.name) {
            return Err(HaCommandError::WrongRole(format!(
                "{} is not listed in members (it is being removed): it never takes the lease; promote a member",
                v.name
            )));
        }
        let view = self.read_lease().await;
        let local = self.local().await;
        if local.postgres != (PgState::Running { in_recovery: true }) {
            return Err(HaCommandError::WrongRole("postgres is not running as a replica here".into()));
        }
        let holder = match &view {
            LeaseView::Present { record, unchanged_since, .. } => {
                let expired = BootInstant::now().duration_since(*unchanged_since) >= self.timing.lease_duration;
                record.holder.clone().filter(|_| !expired)
            }
            // A missing lease is not a free one: whoever held it may still be writing.
            LeaseView::Absent if !force => {
                return Err(HaCommandError::Lease(
                    "the lease is missing (deleted?): its last holder may still be writing; wait leaseDuration \
                     for the election, or promote with force"
                        .into(),
                ));
            }
            LeaseView::Absent => Some("an unknown holder (the lease is missing)".to_string()),
            LeaseView::Unreadable(e) => return Err(HaCommandError::Lease(format!("the lease cannot be read: {e}"))),
        };
        if holder.as_deref() == Some(v.name.as_str()) {
            return Ok(PromoteOutcome::AlreadyHolder);
        }
        if let (Some(h), false) = (&holder, force) {
            return Err(HaCommandError::Lease(format!(
                "a live primary ({h}) holds the lease; use switchover on it, or promote with force"
            )));
        }
        if promised_until.is_some_and(|t| t > BootInstant::now()) && !force {
            return Err(HaCommandError::Promised(
                "failsafe: this member promised the primary not to take the lease during a lease-store outage; \
                 promote with force to wait until that promise runs out"
                    .into(),
            ));
        }
        if !self.write(&view, &v, matches!(view, LeaseView::Absent)).await {
            return Err(HaCommandError::Lease("could not take the lease (someone else wrote first); try again".into()));
        }
        if holder.is_some() {
            // The previous holder stops writing at the latest renewDeadline + fenceBudget after
            // its last renew, which was before our write.
            self.promote_not_before =
                BootInstant::now().checked_add(self.timing.renew_deadline + self.timing.fence_budget);
        }
        if let Some(t) = promised_until {
            self.promote_not_before = self.promote_not_before.max(Some(t));
        }
        self.pending_transition = Some((TransitionKind::Promote, holder.clone(), self.seen_term(), BootInstant::now()));
        self.promote();
        Ok(match holder {
            Some(from) => PromoteOutcome::TookOver { from },
            None => PromoteOutcome::Promoting,
        })
    }

    pub(super) fn seen_term(&self) -> u64 {
        self.instance.lease_status().map(|l| l.term + 1).unwrap_or(0)
    }
}
