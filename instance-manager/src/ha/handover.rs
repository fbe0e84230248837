//! Planned handover (docs/architecture.md §6): switchover to a named or the best replica, run by the
//! holder's HA loop, which owns the lease.
//!
//! 1. The target must be a streaming replica within [`MAX_LAG`] of our current LSN.
//! 2. The lease announces the target (`switchover_to`) with a renew.
//! 3. Postgres is halted with a fast shutdown: its shutdown checkpoint streams to standbys.
//! 4. We wait until the target has received past that checkpoint ([`CATCH_UP_TIMEOUT`]);
//!    if it does not, Postgres restarts as primary (we still hold the lease) and nothing changed.
//! 5. The lease is handed to the target with a compare-and-swap (term + 1), and the target is
//!    woken so it promotes at once, then every other member, so that they follow it at once. We
//!    follow it; no rewind is needed since we stopped cleanly.

use std::time::Duration;

use super::actor::HaLoop;
use super::decide::LeaseView;
use crate::api::{HaCommandError, HaResult, InstanceRole, InstanceStatus, SwitchoverDone, WalReceiverStatus};
use crate::clock::BootInstant;
use crate::instance::Desired;
use crate::lease::with_deadline;

/// How far behind our current LSN a switchover target may be.
pub const MAX_LAG: u64 = 16 * 1024 * 1024;
/// How long the target gets to receive the shutdown checkpoint.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fast shutdown may take before the handover gives up.
pub const HALT_TIMEOUT: Duration = Duration::from_secs(30);

/// Chooses the switchover target among the peers: `wanted` if given, else the best
/// streaming replica. `Err` says why nobody qualifies.
pub fn choose_target(
    peers: &[(String, Option<InstanceStatus>)],
    wanted: Option<&str>,
    my_lsn: u64,
) -> Result<String, HaCommandError> {
    let mut best: Option<(u64, u32, std::cmp::Reverse<&str>)> = None;
    let mut reasons = Vec::new();
    for (name, status) in peers {
        if wanted.is_some_and(|w| w != name) {
            continue;
        }
        let why_not = match status {
            None => Some("unreachable".to_string()),
            Some(s) if s.role != InstanceRole::Replica => Some(format!("is {}", s.role)),
            Some(s) if s.wal_receiver.as_ref().is_none_or(|w| w.status != WalReceiverStatus::Streaming) => {
                Some("is not streaming".into())
            }
            Some(s) if s.fenced => Some("is fenced".into()),
            Some(s) if wanted.is_none() && s.priority == 0 => Some("has priority 0".into()),
            Some(s) => {
                let lsn = crate::peers::election_lsn(s).unwrap_or(0);
                (my_lsn.saturating_sub(lsn) > MAX_LAG).then(|| format!("is {} bytes behind", my_lsn - lsn))
            }
        };
        match why_not {
            Some(why) => reasons.push(format!("{name} {why}")),
            None => {
                let s =
                    status.as_ref().map(|s| (crate::peers::election_lsn(s).unwrap_or(0), s.priority)).unwrap_or((0, 0));
                let key = (s.0, s.1, std::cmp::Reverse(name.as_str()));
                if best.as_ref().is_none_or(|b| key > *b) {
                    best = Some(key);
                }
            }
        }
    }
    match (best, wanted) {
        (Some((_, _, std::cmp::Reverse(name))), _) => Ok(name.to_string()),
        (None, Some(w)) if reasons.is_empty() => {
            let names: Vec<&str> = peers.iter().map(|(n, _)| n.as_str()).collect();
            Err(HaCommandError::NoTarget(match names.as_slice() {
                [] => format!("{w} is not a member of this cluster, which has no other member"),
                _ => format!("{w} is not a member of this cluster; switch over to one of: {}", names.join(", ")),
            }))
        }
        (None, _) if reasons.is_empty() => Err(HaCommandError::NoTarget("there is no replica to hand over to".into())),
        (None, _) => Err(HaCommandError::NoTarget(format!("no replica can take over: {}", reasons.join("; ")))),
    }
}

impl HaLoop {
    /// Hands the lease to `wanted` (or the best replica). Returns the new primary.
    pub(super) async fn switchover(&mut self, wanted: Option<String>) -> HaResult<SwitchoverDone> {
        let v = self.instance.config();
        let me = v.name.clone();
        let view = self.read_lease().await;
        let LeaseView::Present { record, .. } = &view else {
            return Err(HaCommandError::Lease("the lease cannot be read".into()));
        };
        if !record.is_held_by(&me) || !self.renew_is_fresh() {
            return Err(HaCommandError::WrongRole(format!(
                "{me} is not the primary; ask the lease holder ({})",
                record.holder.as_deref().unwrap_or("nobody")
            )));
        }
        if wanted.as_deref() == Some(me.as_str()) {
            return Err(HaCommandError::NoTarget(format!("{me} is already the primary")));
        }
        let my_lsn = self.instance.observe().await.and_then(|o| o.current_lsn).map(|l| l.as_u64());
        let Some(my_lsn) = my_lsn else {
            return Err(HaCommandError::WrongRole("postgres is not running as primary here".into()));
        };
        // The current members only: a removed instance is never made the primary.
        let others = self.membership.others(&me);
        let peers: Vec<(String, Option<InstanceStatus>)> = crate::peers::statuses(&v, &others, Duration::from_secs(2))
            .await
            .into_iter()
            .map(|(m, s)| (m.name, s))
            .collect();
        let target = choose_target(&peers, wanted.as_deref(), my_lsn)?;
        tracing::info!(%target, "switchover: handing the lease over");
        let started = BootInstant::now();

        // 2. Announce, renewing the lease.
        if !self.write_switchover_intent(&view, &target).await {
            return Err(HaCommandError::Lease("cannot renew the lease to announce the switchover".into()));
        }
        // 3. Halt Postgres.
        self.disarm();
        self.instance.set_desired(Desired::Halted);
        if let Err(e) = self.wait_halted().await {
            self.instance.set_desired(Desired::Primary);
            return Err(e);
        }
        // 4. Wait for the target to receive the shutdown checkpoint.
        let checkpoint = self.latest_checkpoint().await;
        if let Err(e) = self.wait_received(&target, checkpoint).await {
            tracing::warn!(error = %e, "switchover aborted; restarting as primary");
            self.instance.set_desired(Desired::Primary);
            return Err(e);
        }
        // 5. Hand over.
        self.hand_lease_to(&target).await?;
        let upstream = self.membership.upstream(&target);
        self.instance.set_desired(Desired::Replica(upstream));
        // The target promotes at once, and the other replicas re-point to it now rather than at
        // their next period: in synchronous mode the new primary acknowledges no commit before
        // one of them streams. Awaited (each call bounded): after a SIGTERM the manager exits
        // right after this, and a request left to a task of its own would die with it.
        crate::peers::wake_all(&v).await;
        tracing::info!(%target, elapsed_ms = started.elapsed().as_millis() as u64, "switchover: lease handed over");
        Ok(SwitchoverDone { primary: target })
    }

    async fn wait_halted(&self) -> HaResult<()> {
        let mut rx = self.instance.watch_process();
        let stopped = rx.wait_for(|p| p.pid.is_none());
        match tokio::time::timeout(HALT_TIMEOUT, stopped).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(HaCommandError::Aborted("postgres did not stop in time".into())),
        }
    }

    async fn latest_checkpoint(&self) -> Option<u64> {
        let v = self.instance.config();
        crate::pgdata::latest_checkpoint(&self.sup, &v, &self.instance.paths).await.ok()
    }

    /// Waits until the target reports a received LSN past `checkpoint`.
    async fn wait_received(&self, target: &str, checkpoint: Option<u64>) -> HaResult<()> {
        let aborted = |why: String| HaCommandError::Aborted(why);
        let Some(checkpoint) = checkpoint else {
            return Err(aborted("cannot read the shutdown checkpoint location".into()));
        };
        let v = self.instance.config();
        let member = self.membership.member(target);
        let member = member.ok_or_else(|| aborted(format!("{target} is not a member")))?;
        let tls = crate::peers::tls_config(&v);
        let client =
            crate::peers::client(member, tls.as_ref(), Duration::from_secs(1)).map_err(|e| aborted(e.to_string()))?;
        let deadline = BootInstant::now().checked_add(CATCH_UP_TIMEOUT).unwrap_or_else(BootInstant::now);
        loop {
            if let Ok(s) = client.get_json::<InstanceStatus>("/status").await
                && s.received_lsn.is_some_and(|r| r.as_u64() > checkpoint)
            {
                return Ok(());
            }
            if BootInstant::now() >= deadline {
                return Err(aborted(format!(
                    "{target} did not receive the shutdown checkpoint within {CATCH_UP_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn hand_lease_to(&mut self, target: &str) -> HaResult<()> {
        let deadline = self.timing.retry_period;
        let (record, version) = match with_deadline(self.store.get(), deadline).await {
            Ok(Some(rv)) => rv,
            Ok(None) => return Err(HaCommandError::Lease("the lease disappeared".into())),
            Err(e) => return Err(HaCommandError::Lease(format!("cannot read the lease: {e}"))),
        };
        let me = self.instance.config().name.clone();
        if !record.is_held_by(&me) {
            return Err(HaCommandError::Lease(format!(
                "lost the lease during the switchover (holder: {:?})",
                record.holder
            )));
        }
        let mut next = record.clone();
        let now = jiff::Timestamp::now();
        next.holder = Some(target.to_string());
        next.transitions += 1;
        next.acquire_time = Some(now);
        next.renew_time = Some(now);
        next.switchover_to = Some(target.to_string());
        next.sync_standbys.retain(|s| s != target);
        // From the send of this write on, we no longer hold the lease.
        self.forget_renew();
        match with_deadline(self.store.replace(&next, &version), deadline).await {
            Ok(_) => Ok(()),
            Err(e) => Err(HaCommandError::Lease(format!("cannot hand the lease over: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::choose_target;
    use crate::api::HaCommandError;

    #[test]
    fn an_unknown_target_is_refused_with_the_members_to_choose_from() {
        let peers = vec![("pg-2".to_string(), None), ("pg-3".to_string(), None)];
        assert_eq!(
            choose_target(&peers, Some("pg-9"), 0),
            Err(HaCommandError::NoTarget(
                "pg-9 is not a member of this cluster; switch over to one of: pg-2, pg-3".into()
            ))
        );
        assert_eq!(
            choose_target(&[], Some("pg-9"), 0),
            Err(HaCommandError::NoTarget("pg-9 is not a member of this cluster, which has no other member".into()))
        );
    }
}
