//! The decision of one HA tick: a pure function from what the instance observes to what it
//! must do. No I/O and no clock of its own, so every safety invariant of docs/architecture.md §5 is a
//! unit test below.

use std::time::Duration;

use crate::api::{InstanceRole, TransitionKind};
use crate::clock::BootInstant;
use crate::lease::{LeaseRecord, LeaseTiming, Version};

/// The lease as the last read saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseView {
    /// The store did not answer (within its deadline).
    Unreadable(String),
    /// There is no lease yet.
    Absent,
    /// The lease, its version, and since when (our clock) we have seen that version unchanged.
    Present {
        /// The record.
        record: LeaseRecord,
        /// Its version.
        version: Version,
        /// When this version was first observed by us.
        unchanged_since: BootInstant,
    },
}

/// The local Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgState {
    /// Not running (or not answering).
    Down,
    /// Running; `in_recovery` false means it accepts writes.
    Running {
        /// `pg_is_in_recovery()`.
        in_recovery: bool,
    },
}

/// This instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Local {
    /// Postgres.
    pub postgres: PgState,
    /// Received (replica) or current (primary) WAL position.
    pub lsn: Option<u64>,
    /// Timeline.
    pub timeline: Option<u32>,
    /// Fenced by an operator.
    pub fenced: bool,
    /// Whether a postmaster process exists (starting, running or stopping), whether or not
    /// it answers queries.
    pub process: bool,
    /// Failover priority; 0 never becomes primary automatically.
    pub priority: u32,
    /// Listed in its own configuration's `members`. An instance left out is being removed: it
    /// never takes the lease (docs/architecture.md §4.8); as the holder it keeps renewing.
    pub listed: bool,
}

/// Another member, as its `/status` answered (`None`: unreachable within the deadline).
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Its name.
    pub name: String,
    /// What it reported.
    pub status: Option<PeerStatus>,
}

/// The parts of a peer's `/status` that matter for an election.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// `primary`, `replica`, `stopped`, …
    pub role: InstanceRole,
    /// Received (replica) or current (primary) WAL position.
    pub lsn: Option<u64>,
    /// Timeline.
    pub timeline: Option<u32>,
    /// Whether it could be promoted: a running, unfenced replica with priority > 0.
    pub eligible: bool,
    /// Failover priority.
    pub priority: u32,
    /// The highest lease term it has seen (terms never go backwards).
    pub term: u64,
}

/// What the HA loop remembers between ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// When the last *successful* write of the lease by us as holder was **sent**.
    pub last_renew_sent: Option<BootInstant>,
    /// When this tick was due to start; a tick that starts later than that by more than the
    /// fence budget (a frozen process, a suspended machine) assumes the lease is lost.
    pub expected_wake: Option<BootInstant>,
    /// When this tick really started, before any I/O: lateness is measured here, so that time
    /// spent waiting on a slow lease store is never taken for a frozen process (docs/architecture.md §4.4).
    pub tick_started: Option<BootInstant>,
    /// Failsafe (holder): when the last round of acknowledgements that **every** member
    /// answered was sent. While the store is unavailable it counts like a renew sent then.
    pub failsafe_confirmed: Option<BootInstant>,
    /// Failsafe (member): we promised a holder not to take the lease before this instant.
    pub promised_until: Option<BootInstant>,
    /// Since when (our clock) the lease has been observed absent: an absent lease is an
    /// unknown holder, not a free lease; nobody creates it before `leaseDuration` has passed.
    pub absent_since: Option<BootInstant>,
}

/// Cluster-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Lease timing.
    pub timing: LeaseTiming,
    /// Automatic failover disabled.
    pub paused: bool,
    /// Synchronous replication with `dataDurability: required`: only members of the
    /// published synchronous set may be promoted automatically.
    pub sync_required: bool,
}

/// Everything one decision looks at.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// Now, on the boot-time clock.
    pub now: BootInstant,
    /// This instance's name.
    pub me: &'a str,
    /// The lease.
    pub lease: &'a LeaseView,
    /// This instance.
    pub local: &'a Local,
    /// The other members.
    pub peers: &'a [Peer],
    /// What the loop remembers.
    pub memory: &'a Memory,
    /// Settings.
    pub settings: &'a Settings,
    /// The synchronous set of the last lease read: while the lease is missing, it still says
    /// who may be promoted without losing an acknowledged commit.
    pub last_sync_set: &'a [String],
}

/// What to do, in order. The loop stops at the first action that fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop Postgres at once (immediate shutdown, SIGKILL if needed): it is writable without
    /// a live lease.
    Fence {
        /// Why.
        reason: String,
    },
    /// Write our lease again (compare-and-swap on the observed version).
    Renew,
    /// Take the lease: create it, or compare-and-swap over the observed expired version.
    Acquire {
        /// There is no lease object yet.
        create: bool,
    },
    /// Promote the local Postgres (we hold a fresh lease).
    Promote,
    /// Give our lease up (holder none): a fenced holder whose Postgres has stopped, so that
    /// the others take over at once instead of after the lease expires.
    Release,
    /// Run as a replica of `holder`.
    Follow {
        /// The lease holder.
        holder: String,
    },
    /// Nothing to do.
    Wait {
        /// Why not.
        reason: String,
    },
}

impl<'a> Inputs<'a> {
    fn since(&self, t: BootInstant) -> Duration {
        self.now.duration_since(t)
    }

    /// Whether our claim to the lease is fresh: a successful renew, or a failsafe round every
    /// member acknowledged, sent less than `renewDeadline` ago.
    pub fn renew_fresh(&self) -> bool {
        renew_fresh(self.memory, &self.settings.timing, self.now)
    }

    fn woke_late(&self) -> bool {
        let started = self.memory.tick_started.unwrap_or(self.now);
        self.memory
            .expected_wake
            .is_some_and(|due| started > due && started.duration_since(due) > self.settings.timing.fence_budget)
    }

    fn writable(&self) -> bool {
        self.local.postgres == PgState::Running { in_recovery: false }
    }
}

/// When our claim to the lease was last confirmed: the send of the last successful renew,
/// or of the last failsafe round every member acknowledged, whichever is later. The one
/// definition of "held by me" that every deadline is measured from.
pub fn claim_sent(memory: &Memory) -> Option<BootInstant> {
    memory.last_renew_sent.max(memory.failsafe_confirmed)
}

/// The moment our claim to the lease runs out: `renewDeadline` after [`claim_sent`]. Past it
/// a writable Postgres is fenced and may not be started as a primary.
pub fn claim_deadline(memory: &Memory, timing: &LeaseTiming) -> Option<BootInstant> {
    claim_sent(memory).and_then(|t| t.checked_add(timing.renew_deadline))
}

/// Whether we hold the lease at `now`: our claim was confirmed less than `renewDeadline` ago.
/// The one definition every part of the loop uses (the fence, the wake-up, the call
/// deadlines, the primary's routing, handovers and failsafe rounds).
pub fn renew_fresh(memory: &Memory, timing: &LeaseTiming, now: BootInstant) -> bool {
    claim_deadline(memory, timing).is_some_and(|deadline| now < deadline)
}

/// Whether this tick must ask the other members for their status: only when this instance
/// may be about to take the lease (it is missing, free, or unchanged for `leaseDuration`).
pub fn needs_peers(view: &LeaseView, me: &str, timing: &LeaseTiming, now: BootInstant) -> bool {
    match view {
        LeaseView::Absent => true,
        LeaseView::Unreadable(_) => false,
        LeaseView::Present { record, unchanged_since, .. } => {
            !record.is_held_by(me)
                && (record.holder.is_none() || now.duration_since(*unchanged_since) >= timing.lease_duration)
        }
    }
}

/// The kind of change of primary when `me` becomes it: a switchover when the lease names us
/// as the handover target, a failover when the lease had another holder (`after_another`),
/// else a bootstrap.
pub fn transition_kind(switchover_to: Option<&str>, me: &str, after_another: bool) -> TransitionKind {
    if switchover_to == Some(me) {
        TransitionKind::Switchover
    } else if after_another {
        TransitionKind::Failover
    } else {
        TransitionKind::Bootstrap
    }
}

/// How a member that holds the lease while its Postgres is stopped starts it (invariant 6:
/// timelines change only when leadership moved). Directly as the primary, by crash recovery
/// on its own timeline, only when nobody else can have written since this data directory last
/// ran as a primary: a new cluster (nothing to recover), or a lease we already held before
/// this write (`acquiring` false) over a data directory whose `pg_control` says it was a
/// primary. Anything else starts as a standby and is promoted onto a new timeline.
pub fn start_held_as_primary(initialized: bool, acquiring: bool, was_primary: Option<bool>) -> bool {
    !initialized || (!acquiring && was_primary == Some(true))
}

/// The decision of one tick.
pub fn decide(i: &Inputs<'_>) -> Vec<Action> {
    if let Some(reason) = fence_reason(i) {
        return vec![Action::Fence { reason }];
    }
    let actions = decide_lease(i);
    match i.memory.promised_until.filter(|t| *t > i.now) {
        // Failsafe: a member that acknowledged a holder takes the lease from nobody until
        // leaseDuration after its acknowledgement.
        Some(until) if actions.iter().any(|a| matches!(a, Action::Acquire { .. })) && !i.renew_fresh() => {
            vec![wait(format!(
                "failsafe: promised the holder not to take the lease for {:.1}s more",
                until.duration_since(i.now).as_secs_f64()
            ))]
        }
        _ => actions,
    }
}

fn decide_lease(i: &Inputs<'_>) -> Vec<Action> {
    match i.lease {
        LeaseView::Unreadable(e) => vec![wait(format!("lease store unreadable: {e}"))],
        LeaseView::Absent => decide_absent(i),
        LeaseView::Present { record, unchanged_since, .. } => decide_present(i, record, *unchanged_since),
    }
}

fn wait(reason: impl Into<String>) -> Action {
    Action::Wait { reason: reason.into() }
}

/// Invariants 1 and 8: a writable Postgres without a live lease of ours is stopped at once.
fn fence_reason(i: &Inputs<'_>) -> Option<String> {
    if !i.writable() {
        return None;
    }
    if i.woke_late() {
        return Some("the HA loop woke up later than the fence budget allows; the lease may be lost".into());
    }
    if !i.renew_fresh() {
        return Some(format!("no successful lease renew for {:?} (renewDeadline)", i.settings.timing.renew_deadline));
    }
    if let LeaseView::Present { record, .. } = i.lease
        && !record.is_held_by(i.me)
    {
        return Some(format!("the lease is held by {}", record.holder.as_deref().unwrap_or("nobody")));
    }
    None
}

/// Invariant 10: a missing lease is never a free lease. Its holder (our renew is fresh)
/// recreates it at once; anyone else waits `leaseDuration` after it first saw it missing — the
/// last holder, if alive, recreates it meanwhile, and if it is frozen its deadman has stopped
/// its Postgres by then (renewDeadline + fenceBudget < leaseDuration).
fn decide_absent(i: &Inputs<'_>) -> Vec<Action> {
    if i.renew_fresh() {
        // Keeping the lease we hold, not taking it: also when this instance is no longer
        // listed (a holder never steps down by itself).
        return vec![Action::Acquire { create: true }];
    }
    let missing_for = i.memory.absent_since.map(|t| i.since(t)).unwrap_or_default();
    if missing_for < i.settings.timing.lease_duration {
        let left = i.settings.timing.lease_duration - missing_for;
        return vec![wait(format!(
            "the lease is missing: waiting {:.1}s more before anyone may create it (a missing lease is not a free one)",
            left.as_secs_f64()
        ))];
    }
    if i.settings.paused {
        return vec![wait("paused: automatic failover is disabled")];
    }
    match candidacy(i, None) {
        Ok(()) => vec![Action::Acquire { create: true }],
        Err(why) => vec![wait(why)],
    }
}

fn decide_present(i: &Inputs<'_>, record: &LeaseRecord, unchanged_since: BootInstant) -> Vec<Action> {
    let expired = i.since(unchanged_since) >= i.settings.timing.lease_duration;
    match record.holder.as_deref() {
        // A fenced holder whose Postgres has stopped must not keep the lease.
        Some(h) if h == i.me && i.local.fenced && !i.local.process => vec![Action::Release],
        Some(h) if h == i.me => {
            let mut actions = vec![Action::Renew];
            if i.local.postgres == (PgState::Running { in_recovery: true }) && !i.local.fenced {
                actions.push(Action::Promote);
            }
            actions
        }
        Some(h) if !expired => vec![Action::Follow { holder: h.to_string() }],
        _ if i.settings.paused => vec![wait("paused: automatic failover is disabled")],
        _ => match candidacy(i, Some(record)) {
            Ok(()) => vec![Action::Acquire { create: false }],
            Err(why) => match record.holder.as_deref() {
                Some(h) => vec![Action::Follow { holder: h.to_string() }, wait(why)],
                None => vec![wait(why)],
            },
        },
    }
}

/// Invariant 3: may this instance try to take the lease? `Err` says why not: a reason to
/// wait (the text of [`Action::Wait`]), not a failure; nothing matches on it.
pub fn candidacy(i: &Inputs<'_>, record: Option<&LeaseRecord>) -> Result<(), String> {
    let l = i.local;
    if !l.listed {
        return Err(format!("{} is not listed in members (it is being removed): it never takes the lease", i.me));
    }
    if l.fenced {
        return Err("fenced".into());
    }
    if l.priority == 0 {
        return Err("priority 0: never promoted automatically".into());
    }
    if l.postgres == PgState::Down {
        return Err("postgres is not running".into());
    }
    let Some(my_lsn) = l.lsn else { return Err("own WAL position unknown".into()) };
    let reachable = i.peers.iter().filter_map(|p| p.status.as_ref().map(|s| (p.name.as_str(), s)));
    for (name, s) in reachable.clone() {
        if s.role == InstanceRole::Primary {
            return Err(format!("{name} reports a running primary"));
        }
        if s.timeline.zip(l.timeline).is_some_and(|(theirs, mine)| theirs > mine) {
            return Err(format!("{name} is on a later timeline"));
        }
    }
    let set = record.map(|r| r.sync_standbys.as_slice()).unwrap_or(i.last_sync_set);
    if i.settings.sync_required {
        if set.is_empty() {
            return Err("synchronous mode: no published synchronous standby may be promoted safely".into());
        }
        if !set.iter().any(|s| s == i.me) {
            return Err("synchronous mode: not in the published synchronous set".into());
        }
    }
    // Only peers that could themselves be promoted compete: in synchronous mode, the
    // published set's members.
    let competes = |name: &str| !i.settings.sync_required || set.iter().any(|s| s == name);
    let me = (my_lsn, l.priority, std::cmp::Reverse(i.me));
    for (name, s) in reachable.filter(|(name, s)| s.eligible && competes(name)) {
        let them = (s.lsn.unwrap_or(0), s.priority, std::cmp::Reverse(name));
        if them > me {
            return Err(format!("{name} is a better candidate"));
        }
    }
    Ok(())
}

/// Invariant 4: a promotion needs a renew fresh enough to leave at least the fence budget.
pub fn may_promote(now: BootInstant, memory: &Memory, timing: &LeaseTiming) -> bool {
    memory.last_renew_sent.is_some_and(|t| {
        let age = now.duration_since(t);
        age < timing.renew_deadline && timing.renew_deadline - age >= timing.fence_budget
    })
}

/// The decision of an instance whose data directory is empty. It takes the lease only to
/// create a new cluster: when no lease exists at all, it is the bootstrap member (the first of
/// `members` by name, so never an instance that is not listed) and no reachable member reports
/// a running Postgres (a lease deleted under a living cluster must never make an empty member
/// initialise a second one). Otherwise it clones the holder.
pub fn decide_bootstrap(i: &Inputs<'_>, members: &[&str]) -> Vec<Action> {
    let first = members.iter().copied().min();
    match i.lease {
        LeaseView::Absent if i.local.listed && first == Some(i.me) => {
            match i.peers.iter().find(|p| p.status.as_ref().is_some_and(|s| s.lsn.is_some())) {
                Some(p) => vec![wait(format!(
                    "empty data directory and no lease, but {} runs Postgres: waiting for its lease (not creating a second cluster)",
                    p.name
                ))],
                None => vec![Action::Acquire { create: true }],
            }
        }
        LeaseView::Present { record, .. } => match record.holder.as_deref() {
            Some(h) if h == i.me => vec![Action::Renew],
            Some(h) => vec![Action::Follow { holder: h.to_string() }],
            None => vec![wait("empty data directory: waiting for a primary to clone")],
        },
        _ => vec![wait("empty data directory: waiting for the bootstrap member to create the cluster")],
    }
}
