//! Failsafe's one-writer argument, on the pure parts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::ha::decide::{self, Action, Inputs, LeaseView, Local, Memory, PgState, Settings};
use crate::lease::LeaseTiming;

fn req(holder: &str, term: u64) -> FailsafeRequest {
    FailsafeRequest { cluster: "main".into(), holder: holder.into(), term }
}

fn members() -> Vec<String> {
    vec!["pg-1".into(), "pg-2".into(), "pg-3".into()]
}

fn view<'a>(members: &'a [String], lease: Option<(Option<&'a str>, u64)>) -> MemberView<'a> {
    MemberView { me: "pg-2", cluster: "main", members, lease, holds_lease: false }
}

fn at(t0: BootInstant, ms: u64) -> BootInstant {
    t0.checked_add(Duration::from_millis(ms)).unwrap()
}

#[test]
fn a_member_acknowledges_the_holder_it_knows_and_refuses_anything_else() {
    let m = members();
    assert_eq!(may_acknowledge(&req("pg-1", 4), &view(&m, Some((Some("pg-1"), 4)))), Ok(()));
    assert_eq!(may_acknowledge(&req("pg-1", 4), &view(&m, None)), Ok(()), "store unreadable here too");
    let other = may_acknowledge(&req("pg-1", 4), &view(&m, Some((Some("pg-3"), 4)))).unwrap_err();
    assert!(other.contains("saw pg-3 hold the lease at term 4"), "{other}");
    assert!(may_acknowledge(&req("pg-1", 4), &view(&m, Some((Some("pg-1"), 5)))).is_err(), "a newer term");
    let mut holding = view(&m, Some((Some("pg-2"), 5)));
    holding.holds_lease = true;
    assert!(may_acknowledge(&req("pg-1", 4), &holding).unwrap_err().contains("holds the lease"));
    assert!(may_acknowledge(&req("pg-9", 4), &view(&m, None)).unwrap_err().contains("not a member"));
    let foreign = FailsafeRequest { cluster: "other".into(), ..req("pg-1", 4) };
    assert!(may_acknowledge(&foreign, &view(&m, None)).unwrap_err().contains("cluster"));
}

#[test]
fn an_acknowledgement_and_an_acquisition_never_overlap() {
    let (m, t0, lease) = (members(), BootInstant::now(), Duration::from_secs(15));
    let p = Promises::default();
    p.begin_acquire(t0).unwrap();
    assert!(p.acknowledge(&req("pg-1", 4), &view(&m, None), t0, lease).unwrap_err().contains("acquiring"));
    p.end_acquire();
    p.acknowledge(&req("pg-1", 4), &view(&m, None), at(t0, 1000), lease).unwrap();
    let refused = p.begin_acquire(at(t0, 15_999)).unwrap_err();
    assert!(refused.contains("promised pg-1"), "{refused}");
    assert_eq!(p.begin_acquire(at(t0, 16_000)), Ok(()), "the promise lasts leaseDuration after the ack");
    p.end_acquire();
    assert!(p.promised_until(at(t0, 16_000)).is_none());
}

#[test]
fn an_operator_promote_stops_the_acknowledgements_and_waits_for_the_promises() {
    let (m, t0, lease) = (members(), BootInstant::now(), Duration::from_secs(15));
    let p = Promises::default();
    p.acknowledge(&req("pg-1", 4), &view(&m, None), t0, lease).unwrap();
    assert_eq!(p.stop_acknowledging(), Some(at(t0, 15_000)));
    assert!(p.acknowledge(&req("pg-1", 4), &view(&m, None), t0, lease).unwrap_err().contains("promote"));
    p.acknowledge_again();
    assert_eq!(p.acknowledge(&req("pg-1", 4), &view(&m, None), t0, lease), Ok(()));
}

#[test]
fn a_promise_is_never_shortened() {
    let (m, t0) = (members(), BootInstant::now());
    let p = Promises::default();
    p.acknowledge(&req("pg-1", 4), &view(&m, None), at(t0, 5000), Duration::from_secs(15)).unwrap();
    p.acknowledge(&req("pg-1", 4), &view(&m, None), at(t0, 6000), Duration::from_secs(1)).unwrap();
    assert_eq!(p.promised_until(t0).map(|(_, t)| t), Some(at(t0, 20_000)));
}

fn primary_inputs(memory: &Memory, settings: &Settings, now: BootInstant) -> Vec<Action> {
    let local = Local {
        postgres: PgState::Running { in_recovery: false },
        lsn: Some(1),
        timeline: Some(1),
        fenced: false,
        process: true,
        priority: 100,
        listed: true,
    };
    let lease = LeaseView::Unreadable("api server down".into());
    decide::decide(&Inputs {
        now,
        me: "pg-1",
        lease: &lease,
        local: &local,
        peers: &[],
        memory,
        settings,
        last_sync_set: &[],
    })
}

proptest! {
    /// For every valid timing and every schedule of rounds: the holder stops writing (fences,
    /// its Postgres gone within the fence budget) before any member that acknowledged may take
    /// the lease.
    #[test]
    fn one_writer_under_failsafe(
        renew_ms in 1_500u64..20_000,
        retry_frac in 0.1f64..0.8,
        fence_ms in 1_000u64..4_000,
        slack_ms in 10u64..20_000,
        last_round_ms in 0u64..60_000,
        ack_delay_ms in 0u64..2_000,
    ) {
        let retry_ms = (renew_ms as f64 * retry_frac) as u64;
        let lease_ms = ((renew_ms + fence_ms + slack_ms) / 1000 + 1) * 1000;
        let timing = LeaseTiming::from_seconds(
            lease_ms as f64 / 1000.0, renew_ms as f64 / 1000.0, retry_ms as f64 / 1000.0, fence_ms as f64 / 1000.0,
        );
        prop_assume!(timing.is_ok());
        let timing = timing.unwrap();
        let settings = Settings { timing, paused: false, sync_required: false };
        let t0 = BootInstant::now();
        // The last round every member acknowledged was sent at `last_round_ms`; a member's
        // acknowledgement arrived at or after that.
        let round = at(t0, last_round_ms);
        let memory = Memory { last_renew_sent: Some(at(t0, 0)), failsafe_confirmed: Some(round), ..Memory::default() };
        let (m, p) = (members(), Promises::default());
        p.acknowledge(&req("pg-1", 4), &view(&m, None), at(t0, last_round_ms + ack_delay_ms), timing.lease_duration).unwrap();
        // The first instant the holder decides to fence, millisecond by millisecond.
        let fence_at = (last_round_ms..last_round_ms + lease_ms * 2)
            .step_by(10)
            .find(|ms| matches!(primary_inputs(&memory, &settings, at(t0, *ms)).as_slice(), [Action::Fence { .. }]))
            .expect("the holder never fences without new rounds");
        let stopped_by = fence_at + timing.fence_budget.as_millis() as u64;
        let first_acquire = (0..last_round_ms + lease_ms * 3).step_by(10).find(|ms| p.begin_acquire(at(t0, *ms)).is_ok()).unwrap();
        prop_assert!(stopped_by < first_acquire, "writes until {stopped_by} ms, a member may acquire at {first_acquire} ms");
    }
}
