//! The HA loop: one task owns the lease state (record, version, when the version was first
//! seen, when our last successful renew was sent). Everything else reads snapshots.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{InstanceRole, Transition, TransitionKind, WalReceiverStatus};
use crate::clock::BootInstant;
use crate::config::Validated;
use crate::ha::deadman::Deadman;
use crate::ha::decide::{
    Action, Inputs, LeaseView, Local, Memory, PgState, Settings, candidacy, claim_deadline, claim_sent, decide,
    decide_bootstrap, may_promote, needs_peers, renew_fresh, transition_kind,
};
use crate::instance::{Desired, Instance};
use crate::lease::{LeaseStore, LeaseTiming, Version};
use crate::pgconf::Upstream;

/// How soon a holder whose lease store does not answer calls it again.
const STALLED_RETRY: Duration = Duration::from_millis(100);

/// How long peers get to answer `/status` during an election.
const PEER_TIMEOUT: Duration = Duration::from_millis(800);

pub use crate::instance::HaCommand;

/// The HA loop of one instance.
pub struct HaLoop {
    pub(super) instance: Arc<Instance>,
    pub(super) store: Arc<dyn LeaseStore>,
    pub(super) sup: crate::supervisor::Supervisor,
    pub(super) commands: tokio::sync::mpsc::Receiver<HaCommand>,
    pub(super) timing: LeaseTiming,
    pub(super) memory: Memory,
    /// The version last read and when we first saw it.
    pub(super) seen: Option<(Version, BootInstant)>,
    pub(super) last_error: Option<String>,
    pub(super) last_decision: String,
    pub(super) deadman: Option<Deadman>,
    /// A change of primary we started: (kind, from, term, when decided).
    pub(super) pending_transition: Option<(TransitionKind, Option<String>, u64, BootInstant)>,
    pub(super) last_transition: Option<Transition>,
    /// A forced promotion waits until the previous holder must have fenced itself.
    pub(super) promote_not_before: Option<BootInstant>,
    /// The synchronous names last seen in force, and the WAL position when first seen.
    pub(super) sync_in_force: Option<(crate::pgconf::SyncNames, u64)>,
    /// Published synchronous standbys not streaming, since when.
    pub(super) sync_dead_since: std::collections::BTreeMap<String, BootInstant>,
    /// Standbys stopping on purpose (`POST /ha/sync-leave`), when they last asked.
    pub(super) sync_leaving: std::collections::BTreeMap<String, BootInstant>,
    /// Since when this replica's WAL receiver has not been streaming.
    pub(super) not_streaming_since: Option<BootInstant>,
    /// What routing should say about this instance (see `routing_task`).
    pub(super) route: tokio::sync::watch::Sender<super::routing_task::RouteState>,
    /// The sync set of the lease as last read or written.
    pub(super) last_sync_set: Vec<String>,
    /// Successful and failed renews, and the changes of primary by kind, for the metrics.
    pub(super) renewals_total: u64,
    pub(super) renew_failures_total: u64,
    pub(super) transitions: std::collections::BTreeMap<TransitionKind, crate::api::TransitionCount>,
    /// The highest term seen anywhere (terms never go backwards), and the highest a member
    /// reported at the last election.
    pub(super) highest_term: super::term::HighestTerm,
    pub(super) peer_term: u64,
    /// This data directory's system identifier, once Postgres reported it.
    pub(super) system_identifier: Option<String>,
    /// Whether the store answers, for logs and `/status`.
    pub(super) store_health: super::store_health::StoreHealth,
    /// A write of *this tick* made or kept us the holder: (sync set, acquiring), for
    /// [`start_if_down`](Self::start_if_down). Cleared at the start of every tick: a write made
    /// between ticks (the switchover's announcing renew) says nothing about who holds the lease
    /// after the command, and once remembered past a handover it started the old primary's
    /// Postgres as primary while the lease was already the target's.
    pub(super) held_unstarted: Option<(Vec<String>, bool)>,
    /// Run the next tick at once (the lease was deleted under us).
    pub(super) renew_again: bool,
    /// The last read failed in a way failsafe may cover (unavailable, not refused).
    pub(super) store_unavailable: bool,
    /// The routing task's last failure, if it has one.
    pub(super) routing_problem: Option<tokio::sync::watch::Receiver<Option<String>>>,
    /// The holder this replica last followed.
    pub(super) following: Option<String>,
    /// The term of the lease we last wrote as holder.
    pub(super) my_term: u64,
    /// Why the last failsafe round was not acknowledged by everyone.
    pub(super) failsafe_refusal: Option<String>,
    /// The membership this loop applies (docs/architecture.md §4.8), moved to the
    /// configuration's `members` at the start of every tick.
    pub(super) membership: super::membership::Membership,
    /// The other members' names, for the routing task (it labels their pods).
    pub(super) routing_others: tokio::sync::watch::Sender<Vec<String>>,
    /// We said (WARN) that we hold the lease without being listed.
    pub(super) unlisted_holder_warned: bool,
}

impl HaLoop {
    /// A loop for `instance` over `store`; connects the instance's command channel to it.
    pub fn new(
        instance: Arc<Instance>,
        store: Arc<dyn LeaseStore>,
        sup: crate::supervisor::Supervisor,
        deadman: Option<Deadman>,
    ) -> Self {
        let v = instance.config();
        let timing = super::open::timing_of(&v);
        let membership = super::membership::Membership::new(&v.config.members);
        let routing_others = tokio::sync::watch::channel(membership.other_names(&v.name)).0;
        let (tx, commands) = tokio::sync::mpsc::channel(4);
        instance.set_ha(tx);
        let instance_data_dir = instance.paths.data_dir.clone();
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
            sync_leaving: std::collections::BTreeMap::new(),
            last_sync_set: Vec::new(),
            not_streaming_since: None,
            route: tokio::sync::watch::channel(super::routing_task::RouteState::Unknown).0,
            renewals_total: 0,
            renew_failures_total: 0,
            transitions: std::collections::BTreeMap::new(),
            highest_term: super::term::HighestTerm::load(&instance_data_dir),
            peer_term: 0,
            system_identifier: None,
            store_health: Default::default(),
            held_unstarted: None,
            renew_again: false,
            store_unavailable: false,
            following: None,
            routing_problem: None,
            my_term: 0,
            failsafe_refusal: None,
            membership,
            routing_others,
            unlisted_holder_warned: false,
        }
    }

    /// Starts the routing task fed by this loop.
    pub fn with_routing(self, routing: Arc<dyn crate::routing::Routing>) -> Self {
        let (problem, problems) = tokio::sync::watch::channel(None);
        let others = self.routing_others.subscribe();
        tokio::spawn(super::routing_task::run(routing, self.route.subscribe(), others, problem));
        Self { routing_problem: Some(problems), ..self }
    }

    /// Runs until `stop` is cancelled (the manager's shutdown, after the run loop stopped
    /// Postgres and gave the lease up): a tick every `retryPeriod`, and exactly at the renew
    /// deadline when that comes first (so fencing is never late by a whole period). A tick in
    /// progress always finishes.
    pub async fn run(mut self, stop: tokio_util::sync::CancellationToken) {
        let mut due = BootInstant::now();
        while !stop.is_cancelled() {
            self.memory.expected_wake = Some(due);
            // Lateness is measured here, before any I/O of the tick (docs/architecture.md §4.4).
            self.memory.tick_started = Some(BootInstant::now());
            self.tick().await;
            let now = BootInstant::now();
            let mut sleep = self.timing.retry_period;
            if std::mem::take(&mut self.renew_again) {
                sleep = Duration::ZERO;
            }
            // A holder whose store stopped answering tries again at once (each call is bounded):
            // the renew then goes out the moment a stall ends, not up to a period later, so
            // any stall shorter than renewDeadline - fenceBudget costs nothing. (Not while
            // failsafe holds: its rounds keep to the retry period.)
            if renew_fresh(&self.memory, &self.timing, now)
                && self.memory.failsafe_confirmed.is_none()
                && self.store_health.failing_for(now).is_some()
            {
                sleep = sleep.min(STALLED_RETRY);
            }
            // Wake exactly when something is due: the holder's fence deadline, and for the
            // others the moment the observed lease expires (a failover should not wait for
            // the next period).
            let fence_at = claim_deadline(&self.memory, &self.timing);
            let expires_at = match (&claim_sent(&self.memory), &self.seen) {
                (None, Some((_, since))) => since.checked_add(self.timing.lease_duration),
                _ => None,
            };
            for at in [fence_at, expires_at].into_iter().flatten() {
                if at > now {
                    sleep = sleep.min(at.duration_since(now));
                }
            }
            due = now.checked_add(sleep).unwrap_or(now);
            tokio::select! {
                () = stop.cancelled() => {}
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
        // A switchover or a promote asked right after an edit of `members` sees the new list.
        let v = self.instance.config();
        self.apply_membership(&v);
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
            HaCommand::SyncLeave { name, reply } => {
                let _ = reply.send(self.sync_leave(&name).await);
            }
            HaCommand::Release { reply } => {
                let _ = reply.send(self.release().await);
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
                [o.received_lsn, o.current_lsn, o.replayed_lsn].into_iter().flatten().max().map(|l| l.as_u64())
            }),
            timeline: o.as_ref().and_then(|o| o.timeline),
            fenced: self.instance.is_fenced(),
            process: self.instance.process().pid.is_some(),
            priority: v.config.priority,
            listed: self.membership.lists(&v.name),
        }
    }

    async fn tick(&mut self) {
        self.instance.ha_heartbeat();
        self.held_unstarted = None;
        let v = self.instance.config();
        let me = v.name.clone();
        if self.system_identifier.is_none() {
            self.system_identifier = self.instance.observe().await.and_then(|o| o.system_identifier);
        }
        let view = self.read_lease().await;
        // After the read: whether the store answers decides what a removal may drop now.
        self.apply_membership(&v);
        if matches!(view, LeaseView::Unreadable(_)) {
            self.failsafe_round(&v).await;
        }
        self.memory.promised_until = self.instance.failsafe.promised_until(BootInstant::now()).map(|(_, t)| t);
        let local = self.local().await;
        let now = BootInstant::now();
        let peers: Vec<_> = if needs_peers(&view, &me, &self.timing, now) {
            crate::peers::statuses(&v, &self.membership.others(&me), PEER_TIMEOUT)
                .await
                .iter()
                .map(|(m, s)| super::peer_view::peer_view(&m.name, s.as_ref()))
                .collect()
        } else {
            Vec::new()
        };
        self.peer_term = peers.iter().filter_map(|p| p.status.as_ref().map(|s| s.term)).max().unwrap_or(0);
        let sync_required =
            v.config.synchronous.as_ref().is_some_and(|s| s.data_durability == crate::api::DataDurability::Required);
        let settings = Settings { timing: self.timing, paused: self.instance.is_paused(), sync_required };
        if let LeaseView::Present { record, .. } = &view {
            self.last_sync_set = record.sync_standbys.clone();
        }
        let initialized = crate::pgdata::is_initialized(&self.instance.paths.data_dir);
        let inputs = Inputs {
            now,
            me: &me,
            lease: &view,
            local: &local,
            peers: &peers,
            memory: &self.memory,
            settings: &settings,
            last_sync_set: &self.last_sync_set,
        };
        let actions = if initialized {
            decide(&inputs)
        } else {
            let names = self.membership.names();
            let members: Vec<&str> = names.iter().map(String::as_str).collect();
            decide_bootstrap(&inputs, &members)
        };
        let record = match &view {
            LeaseView::Present { record, .. } => Some(record),
            _ => None,
        };
        let eligibility = candidacy(&inputs, record).err();
        self.last_decision = super::decision::Decision(&actions).to_string();
        for action in actions {
            if !self.execute(action, &view, &local, &v).await {
                break;
            }
        }
        self.start_if_down().await;
        self.finish_transition(&local);
        let primary = renew_fresh(&self.memory, &self.timing, BootInstant::now())
            && local.postgres == (PgState::Running { in_recovery: false });
        if primary {
            self.manage_sync(&view).await;
        }
        let term = match &view {
            LeaseView::Present { record, .. } => Some(record.transitions),
            _ => None,
        };
        let route = match (primary, term) {
            (true, Some(term)) => super::routing_task::RouteState::Primary(term),
            (true, None) => *self.route.borrow(),
            (false, _) if local.postgres == PgState::Down => *self.route.borrow(),
            (false, _) => super::routing_task::RouteState::Replica,
        };
        self.route.send_if_modified(|r| std::mem::replace(r, route) != route);
        self.note_unlisted_holder(&view, &me);
        self.publish(&view, &me, eligibility);
    }

    /// Carries out one action; `false` stops the rest of the tick.
    async fn execute(&mut self, action: Action, view: &LeaseView, local: &Local, v: &Validated) -> bool {
        match action {
            Action::Fence { reason } => {
                tracing::error!(reason, "fencing");
                self.memory.last_renew_sent = None;
                self.memory.failsafe_confirmed = None;
                self.instance.set_primary_allowed_until(None);
                self.instance.fence_now(reason);
                self.disarm();
                // Follow another holder; otherwise stay stopped until the lease says who
                // leads: if it is still ours at the same term, Postgres starts again as the
                // primary on its own timeline (docs/architecture.md §4.4), not as a standby to be promoted.
                let next = match self.holder_upstream(view, &v.name) {
                    Some(up) => Desired::Replica(Some(up)),
                    None => Desired::Halted,
                };
                self.instance.set_desired(next);
                false
            }
            Action::Renew => self.write(view, v, false).await,
            Action::Acquire { create } => {
                // Failsafe: never while a promise to another holder stands, and no promise
                // is given while this acquisition is in flight.
                if let Err(why) = self.instance.failsafe.begin_acquire(BootInstant::now()) {
                    tracing::info!(reason = %why, "not acquiring");
                    return false;
                }
                let ok = self.write(view, v, create).await;
                self.instance.failsafe.end_acquire();
                if ok && local.postgres == (PgState::Running { in_recovery: true }) {
                    self.promote();
                }
                ok
            }
            Action::Promote => {
                if self.pending_transition.is_none()
                    && self.instance.desired() != Desired::Primary
                    && let LeaseView::Present { record, .. } = view
                {
                    // A standby holding the lease: we took it from another member, or were
                    // named its handover target.
                    // The previous primary is the one this replica followed.
                    let kind = transition_kind(record.switchover_to.as_deref(), &v.name, true);
                    let from = self.following.clone();
                    self.pending_transition = Some((kind, from, record.transitions, BootInstant::now()));
                }
                self.promote();
                true
            }
            Action::Release => {
                if let Err(e) = self.release().await {
                    tracing::warn!(error = %e, "cannot release the lease of a fenced primary");
                }
                false
            }
            Action::Follow { holder } => {
                self.disarm();
                if self.following.as_deref() != Some(holder.as_str()) {
                    // A new primary: how long we have not streamed counts from now, not from
                    // the death of the previous one (that is what rewound healthy replicas).
                    self.not_streaming_since = None;
                    self.following = Some(holder.clone());
                }
                self.instance.set_desired(Desired::Replica(self.membership.upstream(&holder)));
                self.check_diverged(&holder).await;
                true
            }
            Action::Wait { reason } => {
                tracing::debug!(reason, "waiting");
                if self.instance.desired() == Desired::Unknown
                    && crate::pgdata::is_initialized(&self.instance.paths.data_dir)
                {
                    // Start read-only so that this instance can be a candidate.
                    self.instance.set_desired(Desired::Replica(self.holder_upstream(view, &v.name)));
                }
                true
            }
        }
    }

    /// A replica that cannot stream from the primary for long while the primary is on a later
    /// timeline than the one it replays has diverged (it received WAL the new primary never
    /// had): rewind it. The replayed timeline, not the reported one: a diverged replica's WAL
    /// receiver fetches the new timeline's history file all the same, which raises the
    /// reported timeline to the primary's although it can never follow it.
    async fn check_diverged(&mut self, holder: &str) {
        let (streaming, replaying) = match self.instance.observe().await {
            Some(o) if o.in_recovery => {
                (o.wal_receiver.is_some_and(|w| w.status == WalReceiverStatus::Streaming), o.replay_timeline)
            }
            _ => {
                self.not_streaming_since = None;
                return;
            }
        };
        if streaming {
            self.not_streaming_since = None;
            return;
        }
        let since = *self.not_streaming_since.get_or_insert_with(BootInstant::now);
        if since.elapsed() < self.timing.lease_duration.max(Duration::from_secs(10)) {
            return;
        }
        let v = self.instance.config();
        let Some(member) = self.membership.member(holder).cloned() else { return };
        let peers = crate::peers::statuses(&v, &[member], Duration::from_secs(1)).await;
        let primary = peers.into_iter().next().and_then(|(_, s)| s);
        if let Some(p) = primary.filter(|p| p.role == InstanceRole::Primary)
            && p.timeline.zip(replaying).is_some_and(|(theirs, mine)| theirs > mine)
        {
            let reason = format!(
                "this replica (replaying timeline {replaying:?}) cannot follow {holder} (timeline {:?}): rewinding it",
                p.timeline
            );
            tracing::warn!("{reason}");
            self.not_streaming_since = None;
            self.instance.request_rewind(reason);
        }
    }

    pub(super) fn promote(&mut self) {
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

    pub(super) fn arm(&mut self) {
        let (Some(sent), Some(d), Some(pid)) =
            (claim_sent(&self.memory), self.deadman.as_mut(), self.instance.process().pid)
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
}

impl HaLoop {
    /// Where the lease's holder streams from, when it is another instance whose address this
    /// instance knows (a member, or a former member: see `membership`).
    fn holder_upstream(&self, view: &LeaseView, me: &str) -> Option<Upstream> {
        match view {
            LeaseView::Present { record, .. } => {
                record.holder.as_deref().filter(|h| *h != me).and_then(|h| self.membership.upstream(h))
            }
            _ => None,
        }
    }
}
