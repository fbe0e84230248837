//! The HA loop: one task owns the lease state (record, version, when the version was first
//! seen, when our last successful renew was sent). Everything else reads snapshots.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{LeaseBackend, LeaseStatus, Member, Transition};
use crate::clock::BootInstant;
use crate::config::Validated;
use crate::ha::deadman::Deadman;
use crate::ha::decide::{Action, Inputs, LeaseView, Local, Memory, PgState, Settings, candidacy, decide, may_promote};
use crate::instance::{Desired, Instance};
use crate::lease::{LeaseError, LeaseRecord, LeaseStore, LeaseTiming, Version, with_deadline};
use crate::pgconf::Upstream;

/// How long peers get to answer `/status` during an election.
const PEER_TIMEOUT: Duration = Duration::from_millis(800);

/// Builds the lease store the configuration names.
pub async fn open_store(v: &Validated) -> Result<Arc<dyn LeaseStore>, String> {
    let Some(spec) = &v.config.lease else { return Err("no lease configured".into()) };
    let fault = spec.fault_file.clone();
    Ok(match spec.backend {
        LeaseBackend::File => {
            let path = spec.path.clone().ok_or("lease.path is required for the file backend")?;
            with_faults(crate::lease::FileLeaseStore::new(path), fault)
        }
        LeaseBackend::Kubernetes => {
            let client =
                kube::Client::try_default().await.map_err(|e| format!("cannot reach the Kubernetes API: {e}"))?;
            let ns = v.config.namespace.clone().unwrap_or_else(|| "default".into());
            let name = spec.name.clone().unwrap_or_else(|| format!("{}-primary", v.cluster));
            with_faults(crate::lease::KubernetesLeaseStore::new(client, ns, name), fault)
        }
    })
}

fn with_faults<S: LeaseStore>(store: S, fault_file: Option<std::path::PathBuf>) -> Arc<dyn LeaseStore> {
    match fault_file {
        Some(f) => Arc::new(crate::lease::FaultyStore::new(store).with_fault_file(f)),
        None => Arc::new(store),
    }
}

/// The lease timing the configuration asks for.
pub fn timing_of(v: &Validated) -> LeaseTiming {
    v.config
        .lease
        .as_ref()
        .and_then(|l| {
            LeaseTiming::from_seconds(
                l.lease_duration_seconds,
                l.renew_deadline_seconds,
                l.retry_period_seconds,
                l.fence_budget_seconds,
            )
            .ok()
        })
        .unwrap_or_default()
}

/// Requests to the HA loop, answered on their `reply` channel.
pub enum HaCommand {
    /// Hand the lease to `target` (or the best replica); answers the new primary's name.
    Switchover {
        /// The replica to hand over to.
        target: Option<String>,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// Promote this replica now; with `force`, even from a live holder.
    Promote {
        /// Take the lease from a live holder.
        force: bool,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// Run a tick now (a peer just handed us the lease).
    Tick,
    /// Give the lease up (holder none) after Postgres stopped, so others take over at once.
    Release {
        /// The answer.
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
}

/// The HA loop of one instance.
pub struct HaLoop {
    pub(super) instance: Arc<Instance>,
    pub(super) store: Arc<dyn LeaseStore>,
    pub(super) sup: crate::supervisor::Supervisor,
    commands: tokio::sync::mpsc::Receiver<HaCommand>,
    pub(super) timing: LeaseTiming,
    memory: Memory,
    /// The version last read and when we first saw it.
    seen: Option<(Version, BootInstant)>,
    last_error: Option<String>,
    last_decision: String,
    deadman: Option<Deadman>,
    /// A change of primary we started: (kind, from, term, when decided).
    pending_transition: Option<(String, Option<String>, u64, BootInstant)>,
    last_transition: Option<Transition>,
    /// A forced promotion waits until the previous holder must have fenced itself.
    promote_not_before: Option<BootInstant>,
    /// The synchronous names last seen in force, and the WAL position when first seen.
    pub(super) sync_in_force: Option<(crate::ha::sync::SyncNames, u64)>,
    /// Published synchronous standbys not streaming, since when.
    pub(super) sync_dead_since: std::collections::BTreeMap<String, BootInstant>,
    /// The sync set of the lease as last read or written.
    last_sync_set: Vec<String>,
}

impl HaLoop {
    /// A loop for `instance` over `store`; connects the instance's command channel to it.
    pub fn new(
        instance: Arc<Instance>,
        store: Arc<dyn LeaseStore>,
        sup: crate::supervisor::Supervisor,
        deadman: Option<Deadman>,
    ) -> Self {
        let timing = timing_of(&instance.config());
        let (tx, commands) = tokio::sync::mpsc::channel(4);
        instance.set_ha(tx);
        Self {
            instance,
            store,
            sup,
            commands,
            timing,
            memory: Memory::default(),
            seen: None,
            last_error: None,
            last_decision: "starting".into(),
            deadman,
            pending_transition: None,
            last_transition: None,
            promote_not_before: None,
            sync_in_force: None,
            sync_dead_since: std::collections::BTreeMap::new(),
            last_sync_set: Vec::new(),
        }
    }

    /// Runs forever: a tick every `retryPeriod`, and exactly at the renew deadline when that
    /// comes first (so fencing is never late by a whole period).
    pub async fn run(mut self) {
        let mut due = BootInstant::now();
        loop {
            self.memory.expected_wake = Some(due);
            self.tick().await;
            let now = BootInstant::now();
            let mut sleep = self.timing.retry_period;
            if let Some(sent) = self.memory.last_renew_sent {
                let fence_at = sent.checked_add(self.timing.renew_deadline).unwrap_or(now);
                if fence_at > now {
                    sleep = sleep.min(fence_at.duration_since(now));
                }
            }
            due = now.checked_add(sleep).unwrap_or(now);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                Some(cmd) = self.commands.recv() => {
                    self.command(cmd).await;
                    // A command is not a late wake-up: the next tick is due now.
                    due = BootInstant::now();
                }
            }
        }
    }

    async fn command(&mut self, cmd: HaCommand) {
        match cmd {
            HaCommand::Switchover { target, reply } => {
                let r = self.switchover(target).await;
                if let Err(e) = &r {
                    tracing::warn!(error = %e, "switchover refused");
                }
                let _ = reply.send(r);
            }
            HaCommand::Promote { force, reply } => {
                let _ = reply.send(self.manual_promote(force).await);
            }
            HaCommand::Tick => {}
            HaCommand::Release { reply } => {
                let _ = reply.send(self.release().await);
            }
        }
    }

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
    async fn manual_promote(&mut self, force: bool) -> Result<String, String> {
        let v = self.instance.config();
        let view = self.read_lease().await;
        let local = self.local().await;
        if local.postgres != (PgState::Running { in_recovery: true }) {
            return Err("postgres is not running as a replica here".into());
        }
        let holder = match &view {
            LeaseView::Present { record, unchanged_since, .. } => {
                let expired = BootInstant::now().duration_since(*unchanged_since) >= self.timing.lease_duration;
                record.holder.clone().filter(|_| !expired)
            }
            LeaseView::Absent => None,
            LeaseView::Unreadable(e) => return Err(format!("the lease cannot be read: {e}")),
        };
        if holder.as_deref() == Some(v.name.as_str()) {
            return Ok("already the lease holder".into());
        }
        if let (Some(h), false) = (&holder, force) {
            return Err(format!("a live primary ({h}) holds the lease; use switchover on it, or promote with force"));
        }
        if !self.write(&view, &v, matches!(view, LeaseView::Absent)).await {
            return Err("could not take the lease (someone else wrote first); try again".into());
        }
        if holder.is_some() {
            // The previous holder stops writing at the latest renewDeadline + fenceBudget after
            // its last renew, which was before our write.
            self.promote_not_before =
                BootInstant::now().checked_add(self.timing.renew_deadline + self.timing.fence_budget);
        }
        self.pending_transition = Some(("promote".into(), holder.clone(), self.seen_term(), BootInstant::now()));
        self.promote();
        Ok(match holder {
            Some(h) => format!("took the lease from {h}; promoting once it must have fenced itself"),
            None => "promoting".into(),
        })
    }

    fn seen_term(&self) -> u64 {
        self.instance.lease_status().map(|l| l.term + 1).unwrap_or(0)
    }

    /// Gives the lease up when we hold it and Postgres is stopped.
    async fn release(&mut self) -> Result<(), String> {
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
    fn call_deadline(&self) -> Duration {
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

    pub(super) async fn local(&self) -> Local {
        let v = self.instance.config();
        let o = self.instance.observe().await;
        Local {
            postgres: match &o {
                Some(o) => PgState::Running { in_recovery: o.in_recovery },
                None => PgState::Down,
            },
            lsn: o.as_ref().and_then(|o| {
                [&o.received_lsn, &o.current_lsn, &o.replayed_lsn]
                    .into_iter()
                    .flatten()
                    .filter_map(|l| crate::peers::parse_lsn(l))
                    .max()
            }),
            timeline: o.as_ref().and_then(|o| o.timeline),
            fenced: self.instance.is_fenced(),
            priority: v.config.priority,
        }
    }

    fn needs_peers(&self, view: &LeaseView, me: &str) -> bool {
        match view {
            LeaseView::Absent => true,
            LeaseView::Unreadable(_) => false,
            LeaseView::Present { record, unchanged_since, .. } => {
                record.holder.as_deref() != Some(me)
                    && (record.holder.is_none()
                        || BootInstant::now().duration_since(*unchanged_since) >= self.timing.lease_duration)
            }
        }
    }

    async fn tick(&mut self) {
        self.instance.ha_heartbeat();
        let v = self.instance.config();
        let me = v.name.clone();
        let view = self.read_lease().await;
        let local = self.local().await;
        let peers = if self.needs_peers(&view, &me) {
            crate::peers::statuses(&v.config.members, &me, PEER_TIMEOUT)
                .await
                .iter()
                .map(|(m, s)| crate::peers::peer_view(&m.name, s.as_ref()))
                .collect()
        } else {
            Vec::new()
        };
        let sync_required =
            v.config.synchronous.as_ref().is_some_and(|s| s.data_durability == crate::api::DataDurability::Required);
        let settings = Settings { timing: self.timing, paused: self.instance.is_paused(), sync_required };
        if let LeaseView::Present { record, .. } = &view {
            self.last_sync_set = record.sync_standbys.clone();
        }
        if self.instance.is_fenced() && self.instance.process().pid.is_none() {
            if let LeaseView::Present { record, .. } = &view {
                if record.holder.as_deref() == Some(me.as_str()) {
                    // A fenced primary must not keep the lease: the others take over at once.
                    if let Err(e) = self.release().await {
                        tracing::warn!(error = %e, "cannot release the lease of a fenced primary");
                    }
                }
            }
        }
        let initialized = crate::pgdata::is_initialized(&self.instance.paths.data_dir);
        let now = BootInstant::now();
        let inputs = Inputs {
            now,
            me: &me,
            lease: &view,
            local: &local,
            peers: &peers,
            memory: &self.memory,
            settings: &settings,
        };
        let actions = if initialized { decide(&inputs) } else { bootstrap_actions(&inputs, &v) };
        let eligibility = candidacy(&inputs, None).err();
        self.last_decision = format!("{actions:?}");
        for action in actions {
            if !self.execute(action, &view, &local, &v).await {
                break;
            }
        }
        self.finish_transition(&local);
        if self.renew_is_fresh() && local.postgres == (PgState::Running { in_recovery: false }) {
            self.manage_sync(&view).await;
        }
        self.publish(&view, &me, eligibility);
    }

    /// Carries out one action; `false` stops the rest of the tick.
    async fn execute(&mut self, action: Action, view: &LeaseView, local: &Local, v: &Validated) -> bool {
        match action {
            Action::Fence { reason } => {
                tracing::error!(reason, "fencing");
                self.memory.last_renew_sent = None;
                self.instance.set_primary_allowed_until(None);
                self.instance.fence_now(reason);
                self.disarm();
                self.instance.set_desired(Desired::Replica(holder_upstream(view, v)));
                false
            }
            Action::Renew => self.write(view, v, false).await,
            Action::Acquire { create } => {
                let ok = self.write(view, v, create).await;
                if ok && local.postgres == (PgState::Running { in_recovery: true }) {
                    self.promote();
                }
                ok
            }
            Action::Promote => {
                if self.pending_transition.is_none() && self.instance.desired() != Desired::Primary {
                    if let LeaseView::Present { record, .. } = view {
                        let kind = if record.switchover_to.as_deref() == Some(v.name.as_str()) {
                            "switchover"
                        } else {
                            "failover"
                        };
                        self.pending_transition = Some((kind.into(), None, record.transitions, BootInstant::now()));
                    }
                }
                self.promote();
                true
            }
            Action::Follow { holder } => {
                self.disarm();
                self.instance.set_desired(Desired::Replica(upstream_of(&v.config.members, &holder)));
                true
            }
            Action::Wait { reason } => {
                tracing::debug!(reason, "waiting");
                if self.instance.desired() == Desired::Unknown
                    && crate::pgdata::is_initialized(&self.instance.paths.data_dir)
                {
                    // Start read-only so that this instance can be a candidate.
                    self.instance.set_desired(Desired::Replica(holder_upstream(view, v)));
                }
                true
            }
        }
    }

    fn promote(&mut self) {
        if self.promote_not_before.is_some_and(|t| BootInstant::now() < t) {
            tracing::info!("forced promotion: waiting until the previous holder must have fenced itself");
            return;
        }
        if may_promote(BootInstant::now(), &self.memory, &self.timing) {
            if self.instance.desired() != Desired::Primary {
                self.prepare_primary_sync(&self.last_sync_set.clone());
            }
            self.instance.set_desired(Desired::Primary);
            self.arm();
        } else {
            tracing::warn!("not promoting: too little of the renew deadline is left; will retry after the next renew");
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
                if !r.switchover_to.as_deref().is_some_and(|t| t != me) && self.instance.promoted_at().is_some() {
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

    fn wrote(
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
    async fn after_conflict(
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

    fn arm(&mut self) {
        let (Some(sent), Some(d), Some(pid)) =
            (self.memory.last_renew_sent, self.deadman.as_mut(), self.instance.process().pid)
        else {
            return;
        };
        let deadline = self.timing.renew_deadline + self.timing.fence_budget / 2;
        let left = deadline.saturating_sub(BootInstant::now().duration_since(sent));
        d.arm(pid, left);
    }

    pub(super) fn disarm(&mut self) {
        if let Some(d) = self.deadman.as_mut() {
            d.disarm();
        }
    }

    fn finish_transition(&mut self, local: &Local) {
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
            kind: kind.clone(),
            from: from.clone(),
            to: self.instance.config().name.clone(),
            term: *term,
            at: jiff::Timestamp::now().to_string(),
            duration_ms: took.as_millis() as u64,
        };
        tracing::info!(kind = %t.kind, from = ?t.from, term = t.term, duration_ms = t.duration_ms, "now the primary");
        self.last_transition = Some(t);
        self.pending_transition = None;
    }

    fn publish(&self, view: &LeaseView, me: &str, not_eligible: Option<String>) {
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
        let renew_age = self.memory.last_renew_sent.map(|t| now.duration_since(t).as_secs_f64());
        self.instance.set_lease_status(Some(LeaseStatus {
            store: self.store.describe(),
            held_by_me: holder.as_deref() == Some(me)
                && renew_age.is_some_and(|a| a < self.timing.renew_deadline.as_secs_f64()),
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
        }));
    }
}

/// A fresh member takes the lease only to create a new cluster: when no lease exists at all
/// and it is the bootstrap member (the first by name). Otherwise it clones the holder.
fn bootstrap_actions(i: &Inputs<'_>, v: &Validated) -> Vec<Action> {
    let first = v.config.members.iter().map(|m| m.name.as_str()).chain([i.me]).min().unwrap_or(i.me);
    match i.lease {
        LeaseView::Absent if first == i.me => vec![Action::Acquire { create: true }],
        LeaseView::Present { record, .. } => match record.holder.as_deref() {
            Some(h) if h == i.me => vec![Action::Renew],
            Some(h) => vec![Action::Follow { holder: h.to_string() }],
            None => vec![Action::Wait { reason: "empty data directory: waiting for a primary to clone".into() }],
        },
        _ => vec![Action::Wait {
            reason: "empty data directory: waiting for the bootstrap member to create the cluster".into(),
        }],
    }
}

pub(super) fn upstream_of(members: &[Member], name: &str) -> Option<Upstream> {
    members.iter().find(|m| m.name == name).map(|m| Upstream {
        name: m.name.clone(),
        host: m.host.clone(),
        port: u16::try_from(m.port).unwrap_or(5432),
    })
}

fn holder_upstream(view: &LeaseView, v: &Validated) -> Option<Upstream> {
    match view {
        LeaseView::Present { record, .. } => {
            record.holder.as_deref().filter(|h| *h != v.name).and_then(|h| upstream_of(&v.config.members, h))
        }
        _ => None,
    }
}
