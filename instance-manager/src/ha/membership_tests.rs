#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Membership changes: what applies at once and what waits (docs/architecture.md §4.8).

use super::*;

fn m(name: &str) -> Member {
    Member { name: name.into(), host: "127.0.0.1".into(), port: 5432, api: format!("http://{name}:8000") }
}

fn names(members: &[Member]) -> Vec<String> {
    members.iter().map(|m| m.name.clone()).collect()
}

#[test]
fn an_added_member_counts_everywhere_at_once_even_during_an_outage() {
    let start = Membership::new(&[m("pg-1"), m("pg-2"), m("pg-3")]);
    for store_answers in [true, false] {
        let (next, change) = start.next(&[m("pg-1"), m("pg-2"), m("pg-3"), m("pg-4")], store_answers);
        assert_eq!(change.added, ["pg-4"]);
        assert_eq!(names(&next.others("pg-1")), ["pg-2", "pg-3", "pg-4"], "elections read it");
        assert_eq!(
            names(&next.failsafe_targets("pg-1")),
            ["pg-2", "pg-3", "pg-4"],
            "its acknowledgement is required at once (store answers: {store_answers})"
        );
        assert!(next.lists("pg-4"));
    }
}

#[test]
fn a_removed_member_stops_counting_at_once_while_the_store_answers() {
    let start = Membership::new(&[m("pg-1"), m("pg-2"), m("pg-3")]);
    let (next, change) = start.next(&[m("pg-1"), m("pg-2")], true);
    assert_eq!(change.removed, ["pg-3"]);
    assert_eq!(names(&next.others("pg-1")), ["pg-2"]);
    assert_eq!(names(&next.failsafe_targets("pg-1")), ["pg-2"]);
    assert!(next.pending("pg-1", &[], true).is_empty());
}

#[test]
fn during_an_outage_a_removal_never_drops_a_required_acknowledgement() {
    let start = Membership::new(&[m("pg-1"), m("pg-2"), m("pg-3")]);
    let (during, change) = start.next(&[m("pg-1"), m("pg-2")], false);
    assert_eq!(change.removed, ["pg-3"]);
    assert_eq!(names(&during.others("pg-1")), ["pg-2"], "never promoted, never read in an election");
    assert_eq!(names(&during.failsafe_targets("pg-1")), ["pg-2", "pg-3"], "still asked while the store fails");
    assert_eq!(during.pending("pg-1", &[], true).len(), 1, "{:?}", during.pending("pg-1", &[], true));
    assert!(during.pending("pg-2", &[], false).is_empty(), "only the holder asks");
    // Ticks go on, the store still failing: still asked, however many ticks pass.
    let (still, change) = during.next(&[m("pg-1"), m("pg-2")], false);
    assert!(change.is_empty(), "{change:?}");
    assert_eq!(names(&still.failsafe_targets("pg-1")), ["pg-2", "pg-3"]);
    // A second removal during the same outage adds to what is kept.
    let (two, _) = still.next(&[m("pg-1")], false);
    assert_eq!(names(&two.failsafe_targets("pg-1")), ["pg-2", "pg-3"]);
    assert!(two.others("pg-1").is_empty());
    // The store answers: both are released.
    let (after, change) = two.next(&[m("pg-1")], true);
    assert_eq!(change.released, ["pg-2", "pg-3"]);
    assert!(after.failsafe_targets("pg-1").is_empty());
    assert!(after.pending("pg-1", &[], true).is_empty());
}

#[test]
fn a_member_removed_and_added_back_during_an_outage_is_asked_once() {
    let start = Membership::new(&[m("pg-1"), m("pg-2")]);
    let (during, _) = start.next(&[m("pg-1")], false);
    let (back, change) = during.next(&[m("pg-1"), m("pg-2")], false);
    assert_eq!(change.added, ["pg-2"]);
    assert!(change.released.is_empty(), "it is a member again, not released");
    assert_eq!(names(&back.failsafe_targets("pg-1")), ["pg-2"]);
}

#[test]
fn a_removed_holder_is_still_followed_at_its_last_address() {
    let start = Membership::new(&[m("pg-1"), m("pg-2"), m("pg-3")]);
    let (next, _) = start.next(&[m("pg-2"), m("pg-3")], true);
    assert!(!next.lists("pg-1"));
    let up = next.upstream("pg-1").expect("the removed holder's address");
    assert_eq!((up.name.as_str(), up.port), ("pg-1", 5432));
    assert!(next.member("pg-1").is_some());
    assert!(next.upstream("pg-9").is_none());
}

#[test]
fn a_moved_member_is_reached_at_its_new_address() {
    let start = Membership::new(&[m("pg-1"), m("pg-2")]);
    let moved = Member { host: "10.0.0.2".into(), ..m("pg-2") };
    let (next, change) = start.next(&[m("pg-1"), moved], true);
    assert_eq!(change.moved, ["pg-2"]);
    assert_eq!(next.upstream("pg-2").map(|u| u.host), Some("10.0.0.2".into()));
}

#[test]
fn an_instance_left_out_is_not_listed_and_says_so_while_it_holds_the_lease() {
    let start = Membership::new(&[m("pg-1"), m("pg-2"), m("pg-3")]);
    let (next, change) = start.next(&[m("pg-2"), m("pg-3")], true);
    assert_eq!(change.removed, ["pg-1"]);
    assert!(!next.lists("pg-1"));
    assert_eq!(names(&next.others("pg-1")), ["pg-2", "pg-3"]);
    let pending = next.pending("pg-1", &[], true);
    assert!(pending.iter().any(|p| p.contains("not listed") && p.contains("switchover")), "{pending:?}");
    assert!(next.pending("pg-1", &[], false).is_empty());
}

#[test]
fn a_removed_published_standby_is_pending_until_it_left_the_set() {
    let start = Membership::new(&[m("pg-1"), m("pg-2"), m("pg-3")]);
    let (next, _) = start.next(&[m("pg-1"), m("pg-3")], true);
    let pending = next.pending("pg-1", &["pg-2".into()], true);
    assert!(pending.iter().any(|p| p.starts_with("pg-2: removed; leaving")), "{pending:?}");
    assert!(next.pending("pg-1", &["pg-3".into()], true).is_empty());
}
