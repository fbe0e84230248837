//! The holder's side of failsafe (`ha::failsafe`): while the lease store is unavailable, one
//! round of acknowledgements per tick; a round every member acknowledged extends the claim.

use super::actor::HaLoop;
use super::failsafe::FailsafeRequest;
use crate::clock::BootInstant;
use crate::config::Validated;

impl HaLoop {
    /// Asks every member to acknowledge us, when failsafe is on, the store is unavailable (not
    /// refusing) and our claim to the lease is still fresh. Every member: those added at once,
    /// and those removed during the outage until the store answers (`ha::membership`). A round all members acknowledged
    /// counts like a renew sent when the round was sent; anything else changes nothing, and
    /// the renew deadline fences as without failsafe.
    pub(super) async fn failsafe_round(&mut self, v: &Validated) {
        let enabled = v.config.lease.as_ref().is_some_and(|l| l.failsafe);
        if !enabled || !self.store_unavailable || !self.renew_is_fresh() || self.my_term == 0 {
            return;
        }
        let sent = BootInstant::now();
        let timeout = self.call_deadline().min(self.timing.retry_period);
        let req = FailsafeRequest { cluster: v.cluster.clone(), holder: v.name.clone(), term: self.my_term };
        let targets = self.membership.failsafe_targets(&v.name);
        let refused = crate::peers::failsafe_round(v, &targets, &req, timeout).await;
        if refused.is_empty() {
            if self.memory.failsafe_confirmed.is_none() {
                tracing::warn!(
                    "failsafe: the lease store is unavailable, every member acknowledged this primary: staying writable"
                );
            }
            self.memory.failsafe_confirmed = Some(sent);
            self.instance.set_primary_allowed_until(super::decide::claim_deadline(&self.memory, &self.timing));
            self.arm();
            self.failsafe_refusal = None;
        } else {
            let why = refused.iter().map(|(m, e)| format!("{m}: {e}")).collect::<Vec<_>>().join("; ");
            if self.failsafe_refusal.as_deref() != Some(why.as_str()) {
                tracing::warn!(refused = %why, "failsafe: not every member acknowledged; fencing at the renew deadline");
            }
            self.failsafe_refusal = Some(why);
        }
    }
}
