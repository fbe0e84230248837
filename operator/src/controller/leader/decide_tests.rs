//! One test per rule of the election's decision, on a clock we move by hand.

use std::time::Duration;

use tokio::time::Instant;

use super::*;

const ME: &str = "operator-a";
const OTHER: &str = "operator-b";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn read(version: &str, holder: Option<&str>) -> LeaseRead {
    LeaseRead { resource_version: version.into(), holder: holder.map(str::to_owned), lease_duration: secs(15) }
}

fn present(version: &str, holder: Option<&str>, first_seen: Instant) -> Observed {
    Observed::Present(Sighting { read: read(version, holder), first_seen })
}

fn leader(renewed_at: Instant) -> Role {
    Role::Leader { renewed_at }
}

#[test]
fn default_timings_leave_a_margin_between_stepping_down_and_a_takeover() {
    let t = Timings::default();
    assert!(t.retry_period < t.renew_deadline && t.renew_deadline < t.lease_duration, "{t:?}");
    assert!(t.call_timeout() * 2 <= t.renew_deadline, "two renew attempts fit in the deadline: {t:?}");
    assert_eq!(t.lease_duration_seconds(), 15);
    let odd = Timings { lease_duration: Duration::from_millis(1_200), ..t };
    assert_eq!(odd.lease_duration_seconds(), 2, "rounded up, never shorter than what we wait for");
    let tiny = Timings { lease_duration: Duration::from_millis(10), ..t };
    assert_eq!(tiny.lease_duration_seconds(), 1);
}

#[test]
fn the_same_version_keeps_its_first_sighting_and_a_new_one_restarts_it() {
    let t0 = Instant::now();
    let first = sight(None, read("1", Some(OTHER)), t0);
    assert_eq!(first.first_seen, t0);
    let again = sight(Some(&first), read("1", Some(OTHER)), t0 + secs(7));
    assert_eq!(again.first_seen, t0, "an unchanged version was not renewed: its age counts from the first read");
    let renewed = sight(Some(&again), read("2", Some(OTHER)), t0 + secs(9));
    assert_eq!(renewed.first_seen, t0 + secs(9), "a renewal (new version) restarts the clock");
    assert_eq!(renewed.expires_at(), t0 + secs(24));
}

#[test]
fn a_candidate_creates_an_absent_lease() {
    let now = Instant::now();
    assert_eq!(decide(&Role::Candidate, &Observed::Absent, ME, &Timings::default(), now), Decision::Create);
}

#[test]
fn a_candidate_waits_while_another_holds_an_unexpired_lease() {
    let t0 = Instant::now();
    let observed = present("1", Some(OTHER), t0);
    for elapsed in [0, 1, 14] {
        let d = decide(&Role::Candidate, &observed, ME, &Timings::default(), t0 + secs(elapsed));
        assert_eq!(d, Decision::Wait { holder: OTHER.into() }, "at {elapsed}s");
    }
}

#[test]
fn a_candidate_takes_an_expired_lease_measured_from_its_own_first_sighting() {
    let t0 = Instant::now();
    let observed = present("1", Some(OTHER), t0);
    assert_eq!(decide(&Role::Candidate, &observed, ME, &Timings::default(), t0 + secs(15)), Decision::Acquire);
    // The holder's own leaseDurationSeconds counts, not ours.
    let short = Observed::Present(Sighting {
        read: LeaseRead { lease_duration: secs(3), ..read("1", Some(OTHER)) },
        first_seen: t0,
    });
    assert_eq!(
        decide(&Role::Candidate, &short, ME, &Timings::default(), t0 + secs(2)),
        Decision::Wait { holder: OTHER.into() }
    );
    assert_eq!(decide(&Role::Candidate, &short, ME, &Timings::default(), t0 + secs(3)), Decision::Acquire);
}

#[test]
fn a_candidate_takes_a_released_lease_at_once() {
    let now = Instant::now();
    assert_eq!(decide(&Role::Candidate, &present("4", None, now), ME, &Timings::default(), now), Decision::Acquire);
}

#[test]
fn a_lease_naming_us_is_renewed_even_by_a_fresh_process() {
    // A restarted container keeps its pod name: the lease its previous process held is ours.
    let now = Instant::now();
    let observed = present("4", Some(ME), now);
    assert_eq!(decide(&Role::Candidate, &observed, ME, &Timings::default(), now), Decision::Renew);
    assert_eq!(decide(&leader(now), &observed, ME, &Timings::default(), now + secs(2)), Decision::Renew);
}

#[test]
fn an_unreadable_lease_is_retried_without_changing_role() {
    let now = Instant::now();
    assert_eq!(decide(&Role::Candidate, &Observed::Unreadable, ME, &Timings::default(), now), Decision::Retry);
    assert_eq!(decide(&leader(now), &Observed::Unreadable, ME, &Timings::default(), now + secs(9)), Decision::Retry);
}

#[test]
fn a_leader_steps_down_at_its_renew_deadline_whatever_it_reads() {
    let t0 = Instant::now();
    let t = Timings::default();
    let expected = Decision::StepDown(Loss::RenewDeadline(secs(10)));
    for observed in [Observed::Unreadable, present("9", Some(ME), t0), Observed::Absent] {
        assert_eq!(decide(&leader(t0), &observed, ME, &t, t0 + secs(10)), expected, "{observed:?}");
    }
    assert_eq!(leader(t0).deadline(&t), Some(t0 + secs(10)));
    assert_eq!(Role::Candidate.deadline(&t), None);
}

#[test]
fn a_leader_that_reads_another_holder_or_no_lease_steps_down() {
    let now = Instant::now();
    let t = Timings::default();
    let me = leader(now);
    assert_eq!(
        decide(&me, &present("5", Some(OTHER), now), ME, &t, now),
        Decision::StepDown(Loss::TakenBy(OTHER.into()))
    );
    assert_eq!(decide(&me, &present("5", None, now), ME, &t, now), Decision::StepDown(Loss::Cleared));
    assert_eq!(decide(&me, &Observed::Absent, ME, &t, now), Decision::StepDown(Loss::Deleted));
}

#[test]
fn a_write_that_succeeds_makes_a_leader_from_when_it_was_sent() {
    let t0 = Instant::now();
    let sent = t0 + secs(3);
    assert_eq!(after_write(&Role::Candidate, WriteOutcome::Written, sent), Ok(leader(sent)));
    assert_eq!(after_write(&leader(t0), WriteOutcome::Written, sent), Ok(leader(sent)));
}

#[test]
fn a_conflict_loses_leadership_but_only_delays_a_candidate() {
    let t0 = Instant::now();
    assert_eq!(after_write(&leader(t0), WriteOutcome::Conflict, t0 + secs(2)), Err(Loss::Conflict));
    assert_eq!(after_write(&Role::Candidate, WriteOutcome::Conflict, t0), Ok(Role::Candidate));
}

#[test]
fn a_failed_renewal_keeps_the_old_deadline() {
    let t0 = Instant::now();
    assert_eq!(after_write(&leader(t0), WriteOutcome::Failed, t0 + secs(2)), Ok(leader(t0)));
    assert_eq!(after_write(&Role::Candidate, WriteOutcome::Failed, t0), Ok(Role::Candidate));
}
