//! The safety invariants of docs/architecture.md §5, one test (or more) each, on the pure decision.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::decide::*;
use crate::clock::BootInstant;
use crate::lease::{LeaseRecord, LeaseTiming, Version};

const S: fn(u64) -> Duration = Duration::from_secs;

struct World {
    t0: BootInstant,
    settings: Settings,
    memory: Memory,
    local: Local,
    peers: Vec<Peer>,
    lease: LeaseView,
}

fn at(t0: BootInstant, secs: u64) -> BootInstant {
    t0.checked_add(S(secs)).unwrap()
}

fn record(holder: Option<&str>) -> LeaseRecord {
    LeaseRecord {
        holder: holder.map(Into::into),
        lease_duration_seconds: 15,
        acquire_time: None,
        renew_time: None,
        transitions: 3,
        sync_standbys: vec![],
        switchover_to: None,
        cluster: None,
        system_identifier: None,
    }
}

fn replica(lsn: u64) -> Local {
    Local {
        postgres: PgState::Running { in_recovery: true },
        lsn: Some(lsn),
        timeline: Some(1),
        fenced: false,
        process: true,
        priority: 100,
        listed: true,
    }
}

fn peer(name: &str, role: &str, lsn: u64) -> Peer {
    Peer {
        name: name.into(),
        status: Some(PeerStatus {
            role: role.parse().unwrap(),
            lsn: Some(lsn),
            timeline: Some(1),
            eligible: role == "replica",
            priority: 100,
            term: 3,
        }),
    }
}

impl World {
    fn new() -> Self {
        let t0 = BootInstant::now();
        Self {
            t0,
            settings: Settings { timing: LeaseTiming::default(), paused: false, sync_required: false },
            memory: Memory::default(),
            local: replica(100),
            peers: vec![],
            lease: LeaseView::Absent,
        }
    }

    fn held_by(mut self, holder: Option<&str>, seen_at: u64) -> Self {
        self.lease = LeaseView::Present {
            record: record(holder),
            version: Version("7".into()),
            unchanged_since: at(self.t0, seen_at),
        };
        self
    }

    fn decide_at(&self, secs: u64) -> Vec<Action> {
        decide(&Inputs {
            now: at(self.t0, secs),
            me: "pg-2",
            lease: &self.lease,
            local: &self.local,
            peers: &self.peers,
            memory: &self.memory,
            settings: &self.settings,
            last_sync_set: &[],
        })
    }
}

fn is_fence(a: &[Action]) -> bool {
    matches!(a, [Action::Fence { .. }])
}

// 1. One writer.
#[test]
fn primary_fences_when_no_renew_succeeded_for_renew_deadline() {
    let mut w = World::new().held_by(Some("pg-2"), 0);
    w.local.postgres = PgState::Running { in_recovery: false };
    w.memory.last_renew_sent = Some(at(w.t0, 0));
    w.memory.expected_wake = Some(at(w.t0, 9));
    assert_eq!(w.decide_at(9), vec![Action::Renew], "a fresh lease keeps renewing");
    w.lease = LeaseView::Unreadable("timeout".into());
    assert!(!is_fence(&w.decide_at(9)), "store down but the renew is still fresh");
    assert!(is_fence(&w.decide_at(10)), "renewDeadline passed since the last successful send");
}

#[test]
fn primary_fences_when_someone_else_holds_the_lease() {
    let mut w = World::new().held_by(Some("pg-3"), 0);
    w.local.postgres = PgState::Running { in_recovery: false };
    w.memory.last_renew_sent = Some(at(w.t0, 0));
    assert!(is_fence(&w.decide_at(1)));
}

#[test]
fn writable_without_any_renew_is_fenced() {
    let mut w = World::new().held_by(Some("pg-2"), 0);
    w.local.postgres = PgState::Running { in_recovery: false };
    assert!(is_fence(&w.decide_at(0)));
}

// 8. Backstop: a loop that woke up late assumes the lease is lost.
#[test]
fn late_wakeup_fences_even_with_a_recent_renew_record() {
    let mut w = World::new().held_by(Some("pg-2"), 0);
    w.local.postgres = PgState::Running { in_recovery: false };
    w.memory.last_renew_sent = Some(at(w.t0, 5));
    w.memory.expected_wake = Some(at(w.t0, 7));
    // Due at 7 with a fence budget of 2 s: starting at 9 is not late, at 10 it is.
    assert!(!is_fence(&w.decide_at(9)));
    let mut w2 = w;
    w2.memory.last_renew_sent = Some(at(w2.t0, 9));
    assert!(is_fence(&w2.decide_at(10)));
}

// docs/architecture.md §4.4: a slow store is not a frozen process.
#[test]
fn time_spent_waiting_on_the_store_is_not_a_late_wake_up() {
    let mut w = World::new().held_by(Some("pg-2"), 0);
    w.local.postgres = PgState::Running { in_recovery: false };
    w.memory.last_renew_sent = Some(at(w.t0, 0));
    w.memory.expected_wake = Some(at(w.t0, 2));
    w.memory.tick_started = Some(at(w.t0, 2));
    // The tick started on time; its read took 5 s: decided at 7, the renew still fresh.
    assert_eq!(w.decide_at(7), vec![Action::Renew], "a 5 s stall costs nothing");
    w.lease = LeaseView::Unreadable("timeout".into());
    assert!(!is_fence(&w.decide_at(9)), "still within renewDeadline of the last successful send");
    assert!(is_fence(&w.decide_at(10)), "and fenced at renewDeadline, as before");
    w.memory.tick_started = Some(at(w.t0, 5));
    assert!(is_fence(&w.decide_at(5)), "a tick that really started 3 s late is a frozen process");
}

// 2. Acquire only after observed expiry or explicit release.
#[test]
fn held_lease_is_taken_only_after_lease_duration_unchanged() {
    let w = World::new().held_by(Some("pg-1"), 0);
    assert_eq!(w.decide_at(14), vec![Action::Follow { holder: "pg-1".into() }]);
    assert_eq!(w.decide_at(15), vec![Action::Acquire { create: false }]);
}

#[test]
fn released_lease_is_taken_at_once() {
    let w = World::new().held_by(None, 0);
    assert_eq!(w.decide_at(0), vec![Action::Acquire { create: false }]);
}

// 10. A missing lease is never a free lease.
#[test]
fn a_missing_lease_is_created_only_lease_duration_after_it_was_first_seen_missing() {
    let mut w = World::new();
    w.memory.absent_since = Some(at(w.t0, 3));
    for t in [3, 10, 17] {
        assert!(matches!(w.decide_at(t).as_slice(), [Action::Wait { .. }]), "at {t}: {:?}", w.decide_at(t));
    }
    assert_eq!(w.decide_at(18), vec![Action::Acquire { create: true }]);
    w.settings.paused = true;
    assert!(matches!(w.decide_at(30).as_slice(), [Action::Wait { .. }]), "paused never creates it");
}

#[test]
fn in_sync_mode_a_missing_lease_is_taken_only_by_a_member_of_the_last_published_set() {
    let mut w = World::new();
    w.settings.sync_required = true;
    w.memory.absent_since = Some(at(w.t0, 0));
    let decide = |w: &World, set: &[String]| {
        decide(&Inputs {
            now: at(w.t0, 20),
            me: "pg-2",
            lease: &w.lease,
            local: &w.local,
            peers: &w.peers,
            memory: &w.memory,
            settings: &w.settings,
            last_sync_set: set,
        })
    };
    assert_eq!(decide(&w, &["pg-2".to_string()]), vec![Action::Acquire { create: true }]);
    assert!(matches!(decide(&w, &["pg-3".to_string()]).as_slice(), [Action::Wait { .. }]));
    assert!(matches!(decide(&w, &[]).as_slice(), [Action::Wait { .. }]));
}

#[test]
fn a_lease_deleted_under_a_frozen_primary_is_taken_only_after_its_postgres_stopped() {
    // The primary's last successful renew was sent at 0, the lease deleted right after and
    // seen missing at 1 by a replica; the primary (frozen) is killed by its deadman at
    // renewDeadline + fenceBudget / 2 = 11 at the latest.
    let t = LeaseTiming::default();
    let deadman = S(0) + t.renew_deadline + t.fence_budget / 2;
    let mut w = World::new();
    w.memory.absent_since = Some(at(w.t0, 1));
    let first_acquire = (0..60).find(|s| w.decide_at(*s) == vec![Action::Acquire { create: true }]).unwrap();
    assert!(S(first_acquire) > deadman, "acquired at {first_acquire} s, the old primary may write until {deadman:?}");
    w.memory.absent_since = None;
    assert!(matches!(w.decide_at(100).as_slice(), [Action::Wait { .. }]), "missing now: counts from now");
}

#[test]
fn the_holder_recreates_a_lease_deleted_under_it_at_once_and_keeps_writing() {
    let mut w = World::new();
    w.local.postgres = PgState::Running { in_recovery: false };
    w.memory.last_renew_sent = Some(at(w.t0, 0));
    w.memory.absent_since = Some(at(w.t0, 1));
    assert_eq!(w.decide_at(1), vec![Action::Acquire { create: true }], "no fence, recreate");
    assert!(is_fence(&w.decide_at(10)), "but not past its renew deadline");
}

#[test]
fn an_empty_member_never_initialises_a_second_cluster_beside_a_running_one() {
    let mut w = World::new();
    let members = ["pg-1", "pg-2", "pg-3"];
    let as_first = |w: &World| {
        decide_bootstrap(
            &Inputs {
                now: at(w.t0, 0),
                me: "pg-1",
                lease: &w.lease,
                local: &w.local,
                peers: &w.peers,
                memory: &w.memory,
                settings: &w.settings,
                last_sync_set: &[],
            },
            &members,
        )
    };
    assert_eq!(as_first(&w), vec![Action::Acquire { create: true }], "a new cluster");
    w.peers = vec![peer("pg-2", "primary", 100)];
    assert!(matches!(as_first(&w).as_slice(), [Action::Wait { .. }]), "pg-2 runs: the lease was deleted");
}

// 3. Best candidate.
#[test]
fn a_reachable_running_primary_blocks_the_election() {
    let mut w = World::new().held_by(Some("pg-1"), 0);
    w.peers = vec![peer("pg-1", "primary", 100)];
    let a = w.decide_at(20);
    assert!(a.iter().all(|a| !matches!(a, Action::Acquire { .. })), "{a:?}");
}

#[test]
fn the_replica_with_the_most_wal_wins() {
    let mut w = World::new().held_by(Some("pg-1"), 0);
    w.peers = vec![peer("pg-1", "stopped", 0), peer("pg-3", "replica", 101)];
    assert!(!w.decide_at(20).contains(&Action::Acquire { create: false }));
    w.peers[1] = peer("pg-3", "replica", 99);
    assert_eq!(w.decide_at(20), vec![Action::Acquire { create: false }]);
}

#[test]
fn ties_go_to_priority_then_name() {
    let mut w = World::new().held_by(None, 0);
    w.peers = vec![peer("pg-1", "replica", 100)];
    // Same LSN and priority: "pg-1" < "pg-2" wins.
    assert!(!w.decide_at(0).contains(&Action::Acquire { create: false }));
    w.local.priority = 200;
    assert_eq!(w.decide_at(0), vec![Action::Acquire { create: false }]);
}

#[test]
fn unreachable_peers_do_not_block_and_timeline_behind_does() {
    let mut w = World::new().held_by(None, 0);
    w.peers = vec![Peer { name: "pg-1".into(), status: None }];
    assert_eq!(w.decide_at(0), vec![Action::Acquire { create: false }]);
    let mut p = peer("pg-3", "replica", 50);
    if let Some(s) = p.status.as_mut() {
        s.timeline = Some(2);
    }
    w.peers.push(p);
    assert!(!w.decide_at(0).contains(&Action::Acquire { create: false }));
}

#[test]
fn fenced_down_or_priority_zero_never_run() {
    for f in [
        |l: &mut Local| l.fenced = true,
        |l: &mut Local| l.postgres = PgState::Down,
        |l: &mut Local| l.priority = 0,
        |l: &mut Local| l.lsn = None,
    ] {
        let mut w = World::new().held_by(None, 0);
        f(&mut w.local);
        assert!(matches!(w.decide_at(0).as_slice(), [Action::Wait { .. }]), "{:?}", w.local);
    }
}

// 4. Promote only as holder, with enough of the deadline left.
#[test]
fn holder_in_recovery_renews_then_promotes() {
    let w = World::new().held_by(Some("pg-2"), 0);
    assert_eq!(w.decide_at(1), vec![Action::Renew, Action::Promote]);
}

#[test]
fn promotion_needs_deadline_left() {
    let t = LeaseTiming::default();
    let t0 = BootInstant::now();
    let m = Memory { last_renew_sent: Some(t0), ..Memory::default() };
    assert!(may_promote(at(t0, 7), &m, &t));
    assert!(!may_promote(at(t0, 9), &m, &t), "10 s deadline - 9 s < 2 s fence budget");
    assert!(!may_promote(t0, &Memory::default(), &t));
}

// 5. Never writable without the lease: a non-holder never gets Promote.
#[test]
fn non_holders_never_promote() {
    for holder in [Some("pg-1"), None] {
        let w = World::new().held_by(holder, 0);
        for t in [0, 5, 15, 30] {
            assert!(!w.decide_at(t).contains(&Action::Promote), "{holder:?} at {t}");
        }
    }
}

// 7. Synchronous durability: only published synchronous standbys are promotable.
#[test]
fn sync_required_restricts_candidates_to_the_published_set() {
    let mut w = World::new().held_by(None, 0);
    w.settings.sync_required = true;
    assert!(!w.decide_at(0).contains(&Action::Acquire { create: false }), "empty set: nobody");
    if let LeaseView::Present { record, .. } = &mut w.lease {
        record.sync_standbys = vec!["pg-3".into()];
    }
    assert!(!w.decide_at(0).contains(&Action::Acquire { create: false }), "not in the set");
    if let LeaseView::Present { record, .. } = &mut w.lease {
        record.sync_standbys = vec!["pg-2".into(), "pg-3".into()];
    }
    assert_eq!(w.decide_at(0), vec![Action::Acquire { create: false }]);
}

// 9. Maintenance: paused disables automatic failover.
#[test]
fn paused_never_acquires_an_expired_lease() {
    let mut w = World::new().held_by(Some("pg-1"), 0);
    w.settings.paused = true;
    assert!(matches!(w.decide_at(60).as_slice(), [Action::Wait { .. }]));
}

#[test]
fn in_sync_mode_only_published_members_compete() {
    let mut w = World::new().held_by(None, 0);
    w.settings.sync_required = true;
    if let LeaseView::Present { record, .. } = &mut w.lease {
        record.sync_standbys = vec!["pg-2".into()];
    }
    // pg-3 has more WAL but is asynchronous: it cannot be promoted, so it must not block pg-2.
    w.peers = vec![peer("pg-3", "replica", 500)];
    assert_eq!(w.decide_at(0), vec![Action::Acquire { create: false }]);
}

// An operator's fence: the holder lets go of the lease once its Postgres has stopped.
#[test]
fn a_fenced_holder_releases_the_lease_only_after_postgres_stopped() {
    let mut w = World::new().held_by(Some("pg-2"), 0);
    w.memory.last_renew_sent = Some(at(w.t0, 0));
    w.local.fenced = true;
    assert_eq!(w.decide_at(1), vec![Action::Renew], "postgres still stopping: keep the lease meanwhile");
    w.local.process = false;
    w.local.postgres = PgState::Down;
    assert_eq!(w.decide_at(1), vec![Action::Release]);
    w.local.fenced = false;
    assert_eq!(w.decide_at(1), vec![Action::Renew], "unfenced: the holder keeps its lease to start again");
}

// The one definition of "we hold the lease", measured from the send of the last confirmation.
#[test]
fn the_claim_is_fresh_until_exactly_the_renew_deadline_after_its_send() {
    let t = LeaseTiming::default();
    let t0 = BootInstant::now();
    assert!(!renew_fresh(&Memory::default(), &t, t0), "never renewed");
    let m = Memory { last_renew_sent: Some(t0), ..Memory::default() };
    assert_eq!(claim_deadline(&m, &t), t0.checked_add(t.renew_deadline));
    assert!(renew_fresh(&m, &t, at(t0, 9)));
    assert!(!renew_fresh(&m, &t, t0.checked_add(t.renew_deadline).unwrap()));
    let confirmed = Memory { failsafe_confirmed: Some(at(t0, 5)), ..m };
    assert!(renew_fresh(&confirmed, &t, at(t0, 12)), "a failsafe round every member acknowledged counts too");
}

#[test]
fn peers_are_asked_only_when_the_lease_may_change_hands() {
    let t = LeaseTiming::default();
    let w = World::new().held_by(Some("pg-1"), 0);
    assert!(!needs_peers(&w.lease, "pg-2", &t, at(w.t0, 1)), "a live holder");
    assert!(needs_peers(&w.lease, "pg-2", &t, at(w.t0, 15)), "unchanged for leaseDuration");
    assert!(!needs_peers(&w.lease, "pg-1", &t, at(w.t0, 15)), "our own lease");
    assert!(needs_peers(&LeaseView::Absent, "pg-2", &t, w.t0));
    assert!(!needs_peers(&LeaseView::Unreadable("down".into()), "pg-2", &t, w.t0));
}

#[test]
fn transitions_are_named_by_how_the_lease_changed_hands() {
    assert_eq!(transition_kind(Some("pg-2"), "pg-2", true), "switchover");
    assert_eq!(transition_kind(Some("pg-3"), "pg-2", true), "failover", "another member was the target");
    assert_eq!(transition_kind(None, "pg-2", true), "failover");
    assert_eq!(transition_kind(None, "pg-2", false), "bootstrap");
}

// 6. Timelines change only when leadership moved.
#[test]
fn a_held_lease_starts_postgres_as_primary_only_when_nobody_else_can_have_written() {
    assert!(start_held_as_primary(false, true, None), "a new cluster");
    assert!(start_held_as_primary(true, false, Some(true)), "our lease, and we were the primary");
    assert!(!start_held_as_primary(true, true, Some(true)), "just acquired: someone else may have written");
    assert!(!start_held_as_primary(true, false, Some(false)), "a standby's data directory");
    assert!(!start_held_as_primary(true, false, None), "pg_control unreadable");
}

// Membership changes (docs/architecture.md §4.8).
#[test]
fn an_instance_not_listed_in_members_never_acquires() {
    let mut w = World::new().held_by(Some("pg-1"), 0);
    assert_eq!(w.decide_at(100), vec![Action::Acquire { create: false }], "listed: the expired lease is taken");
    w.local.listed = false;
    let a = w.decide_at(100);
    assert!(
        matches!(&a[..], [Action::Follow { holder }, Action::Wait { reason }]
        if holder == "pg-1" && reason.contains("not listed")),
        "{a:?}"
    );
    // Released or missing: still never.
    let mut w = World::new().held_by(None, 0);
    w.local.listed = false;
    assert!(matches!(w.decide_at(0).as_slice(), [Action::Wait { .. }]));
    let mut w = World::new();
    w.local.listed = false;
    w.memory.absent_since = Some(at(w.t0, 0));
    assert!(matches!(w.decide_at(100).as_slice(), [Action::Wait { .. }]));
    // Not eligible, and saying why.
    let inputs = Inputs {
        now: at(w.t0, 100),
        me: "pg-2",
        lease: &w.lease,
        local: &w.local,
        peers: &w.peers,
        memory: &w.memory,
        settings: &w.settings,
        last_sync_set: &[],
    };
    assert!(candidacy(&inputs, None).unwrap_err().contains("pg-2 is not listed in members"));
}

#[test]
fn a_holder_left_out_of_members_keeps_the_lease_until_switched_over() {
    let mut w = World::new().held_by(Some("pg-2"), 0);
    w.local.postgres = PgState::Running { in_recovery: false };
    w.local.listed = false;
    w.memory.last_renew_sent = Some(at(w.t0, 0));
    w.memory.expected_wake = Some(at(w.t0, 2));
    assert_eq!(w.decide_at(2), vec![Action::Renew], "no step down by itself, no fence");
    // A lease deleted under it is recreated: that keeps the lease, it takes nothing.
    w.lease = LeaseView::Absent;
    w.memory.absent_since = Some(at(w.t0, 2));
    assert_eq!(w.decide_at(2), vec![Action::Acquire { create: true }]);
    // Once its claim ran out it is fenced as any holder, and never takes the lease again.
    assert!(is_fence(&w.decide_at(10)));
}

#[test]
fn an_instance_not_listed_never_bootstraps_a_cluster() {
    let mut w = World::new();
    w.local.listed = false;
    let bootstrap = |w: &World, me: &str, members: &[&str]| {
        decide_bootstrap(
            &Inputs {
                now: at(w.t0, 0),
                me,
                lease: &w.lease,
                local: &w.local,
                peers: &w.peers,
                memory: &w.memory,
                settings: &w.settings,
                last_sync_set: &[],
            },
            members,
        )
    };
    // pg-1 would be first by name, but the membership left it out.
    assert!(matches!(bootstrap(&w, "pg-1", &["pg-2", "pg-3"]).as_slice(), [Action::Wait { .. }]));
    w.local.listed = true;
    assert_eq!(bootstrap(&w, "pg-2", &["pg-2", "pg-3"]), vec![Action::Acquire { create: true }]);
    assert!(matches!(bootstrap(&w, "pg-3", &["pg-2", "pg-3"]).as_slice(), [Action::Wait { .. }]));
}

#[test]
fn a_removed_member_is_never_deferred_to_and_so_never_promoted_by_this_decision() {
    use crate::api::Member;
    use crate::ha::membership::Membership;
    let member = |n: &str| Member { name: n.into(), host: "h".into(), port: 5432, api: format!("http://{n}:8000") };
    let all = Membership::new(&[member("pg-1"), member("pg-2"), member("pg-3")]);
    let (now, _) = all.next(&[member("pg-1"), member("pg-2")], true);
    // pg-3 is the most caught-up replica and still runs; the primary pg-1 is gone.
    let reported = [peer("pg-3", "replica", 900)];
    let peers_of = |m: &Membership| -> Vec<Peer> {
        let others = m.other_names("pg-2");
        reported.iter().filter(|p| others.contains(&p.name)).cloned().collect()
    };
    let mut w = World::new().held_by(Some("pg-1"), 0);
    w.peers = peers_of(&all);
    assert!(
        matches!(&w.decide_at(100)[..], [Action::Follow { .. }, Action::Wait { reason }] if reason.contains("pg-3"))
    );
    w.peers = peers_of(&now);
    assert_eq!(w.decide_at(100), vec![Action::Acquire { create: false }], "pg-3 is no member of pg-2's cluster");
}
