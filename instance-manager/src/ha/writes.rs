//! Reading and writing the lease: every compare-and-swap the HA loop makes, bounded so that a
//! hung store never delays a fence, and the re-read that settles a conflict.

use std::time::Duration;

use super::actor::HaLoop;
use super::decide::LeaseView;
use crate::clock::BootInstant;
use crate::config::Validated;
use crate::instance::Desired;
use crate::lease::{LeaseError, LeaseRecord, Version, with_deadline};

impl HaLoop {
    /// Whether our last renew is within the renew deadline.
    pub(super) fn renew_is_fresh(&self) -> bool {
        self.memory.last_renew_sent.is_some_and(|t| BootInstant::now().duration_since(t) < self.timing.renew_deadline)
    }

    /// From now on we do not hold the lease.
    pub(super) fn forget_renew(&mut self) {
        self.memory.last_renew_sent = None;
        self.instance.set_primary_allowed_until(None);
        self.disarm();
    }

    /// Gives the lease up when we hold it and Postgres is stopped.
    pub(super) async fn release(&mut self) -> Result<(), String> {
        let me = self.instance.config().name.clone();
        let (record, version) = match with_deadline(self.store.get(), self.timing.retry_period).await {
            Ok(Some(rv)) => rv,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if record.holder.as_deref() != Some(me.as_str()) {
            return Ok(());
        }
        if self.instance.process().pid.is_some() {
            return Err("postgres is still running".into());
        }
        let mut next = record;
        next.holder = None;
        next.renew_time = Some(jiff::Timestamp::now());
        self.forget_renew();
        with_deadline(self.store.replace(&next, &version), self.timing.retry_period)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())?;
        tracing::info!("released the lease");
        Ok(())
    }

    /// How long a lease call may take: a period, and never past the moment a holder must
    /// fence (a hung store must not delay the fence).
    pub(super) fn call_deadline(&self) -> Duration {
        let mut d = self.timing.retry_period;
        if let Some(sent) = self.memory.last_renew_sent {
            let left = self.timing.renew_deadline.saturating_sub(BootInstant::now().duration_since(sent));
            d = d.min(left);
        }
        d
    }

    pub(super) async fn read_lease(&mut self) -> LeaseView {
        if self.memory.last_renew_sent.is_some() && self.call_deadline().is_zero() {
            // The renew deadline passed: we no longer hold the lease, whatever the store says.
            // Forget the renew (decide() fences a writable Postgres) and read normally.
            tracing::warn!("the renew deadline passed without a successful renew");
            self.memory.last_renew_sent = None;
            self.instance.set_primary_allowed_until(None);
            // Decide now (a fence must not wait for a read); read at the next tick.
            return LeaseView::Unreadable("the renew deadline passed".into());
        }
        let deadline = self.call_deadline();
        match with_deadline(self.store.get(), deadline).await {
            Ok(Some((record, version))) => {
                let now = BootInstant::now();
                let since = match &self.seen {
                    Some((v, t)) if *v == version => *t,
                    _ => now,
                };
                self.seen = Some((version.clone(), since));
                self.last_error = None;
                LeaseView::Present { record, version, unchanged_since: since }
            }
            Ok(None) => {
                self.seen = None;
                self.last_error = None;
                LeaseView::Absent
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                LeaseView::Unreadable(e.to_string())
            }
        }
    }

    /// Renew (`create` false, holder is us), acquire over an expired or released lease
    /// (holder is someone else or nobody), or create a missing lease.
    pub(super) async fn write(&mut self, view: &LeaseView, v: &Validated, create: bool) -> bool {
        let me = v.name.as_str();
        let wall = jiff::Timestamp::now();
        let (record, version, previous) = match view {
            LeaseView::Present { record, version, .. } => {
                let mut r = record.clone();
                let previous = r.holder.clone();
                if previous.as_deref() != Some(me) {
                    r.transitions += 1;
                    r.acquire_time = Some(wall);
                    r.sync_standbys.retain(|s| s != me);
                    r.switchover_to = None;
                }
                if r.switchover_to.as_deref().is_none_or(|t| t == me) && self.instance.promoted_at().is_some() {
                    // The announced handover to us is complete.
                    r.switchover_to = None;
                }
                r.holder = Some(me.to_string());
                r.renew_time = Some(wall);
                r.lease_duration_seconds = self.timing.lease_duration.as_secs().max(1) as u32;
                (r, Some(version.clone()), previous)
            }
            _ => (
                LeaseRecord {
                    holder: Some(me.to_string()),
                    lease_duration_seconds: self.timing.lease_duration.as_secs().max(1) as u32,
                    acquire_time: Some(wall),
                    renew_time: Some(wall),
                    transitions: 1,
                    sync_standbys: Vec::new(),
                    switchover_to: None,
                },
                None,
                None,
            ),
        };
        let acquiring = previous.as_deref() != Some(me);
        let sent = BootInstant::now();
        let deadline = if acquiring { self.timing.retry_period } else { self.call_deadline() };
        if deadline.is_zero() {
            return false;
        }
        let result = match (&version, create) {
            (Some(ver), false) => with_deadline(self.store.replace(&record, ver), deadline).await,
            _ => with_deadline(self.store.create(&record), deadline).await,
        };
        match result {
            Ok(new_version) => self.wrote(record, new_version, sent, acquiring, previous, v),
            Err(LeaseError::Conflict) => self.after_conflict(&record, sent, acquiring, previous, v).await,
            Err(e) => {
                tracing::warn!(error = %e, acquiring, "lease write failed");
                self.last_error = Some(e.to_string());
                false
            }
        }
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
        self.instance.set_primary_allowed_until(sent.checked_add(self.timing.renew_deadline));
        self.seen = Some((version, BootInstant::now()));
        if acquiring {
            tracing::info!(term = record.transitions, previous = ?previous, "acquired the lease");
            let kind = if record.switchover_to.is_some() {
                "switchover"
            } else if previous.is_some() {
                "failover"
            } else {
                "bootstrap"
            };
            self.pending_transition = Some((kind.into(), previous, record.transitions, sent));
        }
        if self.instance.desired() != Desired::Primary && self.instance.process().pid.is_none() {
            // We hold the lease and Postgres is not running: start it as the primary.
            self.prepare_primary_sync(&record.sync_standbys.clone());
            self.instance.set_desired(Desired::Primary);
        }
        if self.instance.desired() == Desired::Primary {
            self.arm();
        }
        let _ = v;
        true
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
            Ok(_) => {
                tracing::info!(acquiring, "lost the lease race: someone else wrote first");
                if !acquiring {
                    self.memory.last_renew_sent = None;
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
