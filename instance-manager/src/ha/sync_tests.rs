#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Synchronous set changes (architecture invariant 7): the steps one by one, and a model of a
//! primary that commits between the steps, checking after each one that every acknowledged
//! commit is on every published standby.

use std::collections::BTreeMap;

use super::*;

fn sb(name: &str, lsn: u64) -> Standby {
    Standby { name: name.into(), streaming: true, counted: true, flush_lsn: lsn }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const MEMBERS: [&str; 3] = ["pg-2", "pg-3", "pg-4"];

fn step(published: &[&str], in_force: &SyncNames, since: Option<u64>, standbys: &[Standby]) -> SyncStep {
    let published = strings(published);
    next_step(&SyncInputs {
        number: 1,
        published: &published,
        in_force,
        in_force_since_lsn: since,
        standbys,
        droppable: &[],
        allow_async: false,
        members: &strings(&MEMBERS),
    })
}

#[test]
fn render_and_parse_round_trip() {
    let n = SyncNames::any(1, vec!["pg-3".into(), "pg-2".into()]);
    assert_eq!(n.render(), "ANY 1 (\"pg-2\", \"pg-3\")");
    assert_eq!(SyncNames::parse(&n.render()), Some(n));
    assert_eq!(SyncNames::parse(""), Some(SyncNames::default()));
}

#[test]
fn a_standby_is_required_before_it_is_published() {
    let empty = SyncNames::default();
    let s = [sb("pg-2", 100), sb("pg-3", 90)];
    let want = SyncNames::any(1, vec!["pg-2".into()]);
    assert_eq!(step(&[], &empty, None, &s), SyncStep::SetNames(want.clone()));
    // In force since LSN 150: not published until pg-2 flushed past it.
    assert_eq!(step(&[], &want, Some(150), &s), SyncStep::Nothing);
    let s = [sb("pg-2", 150), sb("pg-3", 90)];
    assert_eq!(step(&[], &want, Some(150), &s), SyncStep::Publish(vec!["pg-2".into()]));
    // Published and required: stable.
    assert_eq!(step(&["pg-2"], &want, Some(150), &s), SyncStep::Nothing);
}

#[test]
fn a_joining_standby_is_published_only_once_postgres_counts_it() {
    let want = SyncNames::any(2, strings(&["pg-2", "pg-3"]));
    let not_counted = Standby { counted: false, ..sb("pg-3", 500) };
    assert_eq!(step(&["pg-2"], &want, Some(100), &[sb("pg-2", 500), not_counted]), SyncStep::Nothing);
    assert_eq!(
        step(&["pg-2"], &want, Some(100), &[sb("pg-2", 500), sb("pg-3", 500)]),
        SyncStep::Publish(strings(&["pg-2", "pg-3"]))
    );
    // The position a join is measured from is taken only once every listed standby is counted.
    assert!(!counted(&want, &[sb("pg-2", 1), Standby { counted: false, ..sb("pg-3", 1) }]));
    assert!(counted(&want, &[sb("pg-2", 1), sb("pg-3", 1), Standby { counted: false, ..sb("pg-9", 1) }]));
}

#[test]
fn required_durability_keeps_a_dead_standby() {
    let want = SyncNames::any(1, vec!["pg-2".into()]);
    assert_eq!(step(&["pg-2"], &want, Some(1), &[sb("pg-3", 500)]), SyncStep::Nothing);
}

#[test]
fn preferred_unpublishes_first_then_relaxes() {
    let want = SyncNames::any(1, vec!["pg-2".into()]);
    let published = vec!["pg-2".to_string()];
    let dead = vec!["pg-2".to_string()];
    let members = strings(&MEMBERS);
    let i = SyncInputs {
        number: 1,
        published: &published,
        in_force: &want,
        in_force_since_lsn: None,
        standbys: &[],
        droppable: &dead,
        allow_async: true,
        members: &members,
    };
    assert_eq!(next_step(&i), SyncStep::Publish(vec![]));
    // Then, with nobody streaming, commits go on asynchronously (required would wait).
    let none: Vec<String> = vec![];
    let i = SyncInputs { published: &none, droppable: &[], ..i };
    assert_eq!(next_step(&i), SyncStep::SetNames(SyncNames::default()));
    let i = SyncInputs { allow_async: false, ..i };
    assert_eq!(next_step(&i), SyncStep::Nothing);
}

#[test]
fn new_primary_requires_the_others_before_its_first_write() {
    let members: Vec<String> = ["pg-1", "pg-2", "pg-3"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        initial_names(1, &["pg-2".into()], "pg-2", &members),
        SyncNames::any(1, vec!["pg-1".into(), "pg-3".into()])
    );
    assert_eq!(
        initial_names(1, &["pg-2".into(), "pg-3".into()], "pg-2", &members),
        SyncNames::any(1, vec!["pg-3".into()])
    );
    // Its commits never run unprotected: the new set is never empty with other members.
    assert!(!initial_names(1, &[], "pg-2", &members).render().is_empty());
}

#[test]
fn a_removed_instance_that_still_streams_never_joins() {
    // pg-9 streams (it was removed, or never was a member) and is the most caught up.
    let s = [sb("pg-9", 900), sb("pg-3", 100)];
    assert_eq!(step(&[], &SyncNames::default(), None, &s), SyncStep::SetNames(SyncNames::any(1, strings(&["pg-3"]))));
    // A join of pg-9 in force (set before its removal) is abandoned for a member.
    let joining = SyncNames::any(1, strings(&["pg-9"]));
    assert_eq!(step(&[], &joining, Some(10), &s), SyncStep::SetNames(SyncNames::any(1, strings(&["pg-3"]))));
}

#[test]
fn a_removed_standby_that_streams_leaves_after_a_member_took_its_place() {
    // pg-2 is published, streams, and was removed; pg-3 streams.
    let members = strings(&["pg-3", "pg-4"]);
    let inputs = |published: &[&str], in_force: &SyncNames, since| {
        let published = strings(published);
        let in_force = in_force.clone();
        let standbys = [sb("pg-2", 500), sb("pg-3", 500)];
        let members = members.clone();
        next_step(&SyncInputs {
            number: 1,
            published: &published,
            in_force: &in_force,
            in_force_since_lsn: since,
            standbys: &standbys,
            droppable: &[],
            allow_async: false,
            members: &members,
        })
    };
    let old = SyncNames::any(1, strings(&["pg-2"]));
    let both = SyncNames::any(2, strings(&["pg-2", "pg-3"]));
    assert_eq!(inputs(&["pg-2"], &old, Some(1)), SyncStep::SetNames(both.clone()), "ANY 2 (old, new) first");
    assert_eq!(inputs(&["pg-2"], &both, Some(400)), SyncStep::Publish(strings(&["pg-2", "pg-3"])));
    assert_eq!(inputs(&["pg-2", "pg-3"], &both, Some(400)), SyncStep::Publish(strings(&["pg-3"])), "lease first");
    assert_eq!(inputs(&["pg-3"], &both, Some(400)), SyncStep::SetNames(SyncNames::any(1, strings(&["pg-3"]))));
}

#[test]
fn a_removed_standby_that_does_not_stream_is_unpublished_at_once_even_when_required() {
    let old = SyncNames::any(1, strings(&["pg-2"]));
    let members = strings(&["pg-3", "pg-4"]);
    let standbys = [sb("pg-3", 500)];
    let i = SyncInputs {
        number: 1,
        published: &["pg-2".to_string()],
        in_force: &old,
        in_force_since_lsn: Some(1),
        standbys: &standbys,
        droppable: &[],
        allow_async: false,
        members: &members,
    };
    assert_eq!(next_step(&i), SyncStep::Publish(vec![]));
    // Names after: the published set is empty now, so a member joins, which also drops pg-2.
    let i = SyncInputs { published: &[], ..i };
    assert_eq!(next_step(&i), SyncStep::SetNames(SyncNames::any(1, strings(&["pg-3"]))));
}

/// A primary committing between the HA loop's steps, as Postgres would: a commit is
/// acknowledged once `k` of the names in force have flushed it (at once without names); waiting
/// commits are released when a new setting is satisfied. Streaming standbys flush everything
/// at once, stopped ones nothing.
struct Model {
    lsn: u64,
    /// name → (streaming, flush LSN)
    standbys: BTreeMap<String, (bool, u64)>,
    in_force: SyncNames,
    since: Option<u64>,
    published: Vec<String>,
    members: Vec<String>,
    /// Standbys stopping on purpose (`POST /ha/sync-leave`).
    leaving: Vec<String>,
    number: usize,
    waiting: Vec<u64>,
    acked: Vec<u64>,
}

impl Model {
    fn new(number: usize, members: &[&str], published: &[&str]) -> Self {
        Self {
            lsn: 100,
            standbys: members.iter().map(|m| (m.to_string(), (true, 100))).collect(),
            in_force: SyncNames::any(published.len(), strings(published)),
            since: Some(100),
            published: strings(published),
            members: strings(members),
            leaving: Vec::new(),
            number,
            waiting: Vec::new(),
            acked: Vec::new(),
        }
    }

    fn flush(&mut self) {
        let lsn = self.lsn;
        for (streaming, flush) in self.standbys.values_mut() {
            if *streaming {
                *flush = lsn;
            }
        }
    }

    fn satisfied(&self, lsn: u64) -> bool {
        let have = self.in_force.names.iter().filter(|n| self.standbys.get(*n).is_some_and(|s| s.1 >= lsn)).count();
        self.in_force.names.is_empty() || have >= self.in_force.k
    }

    fn release(&mut self) {
        let (done, wait): (Vec<u64>, Vec<u64>) = self.waiting.iter().partition(|l| self.satisfied(**l));
        self.acked.extend(done);
        self.waiting = wait;
    }

    fn commit(&mut self) {
        self.lsn += 1;
        self.flush();
        self.waiting.push(self.lsn);
        self.release();
    }

    fn standbys(&self) -> Vec<Standby> {
        self.standbys
            .iter()
            .filter(|(_, (streaming, _))| *streaming)
            .map(|(n, (_, flush))| Standby { name: n.clone(), streaming: true, counted: true, flush_lsn: *flush })
            .collect()
    }

    /// One tick of the HA loop, then the invariant.
    fn tick(&mut self) -> SyncStep {
        let standbys = self.standbys();
        let may = may_leave(self.number, &self.leaving, &self.published, &self.in_force, &standbys, &self.members);
        let members: Vec<String> = self.members.iter().filter(|m| !may.contains(m)).cloned().collect();
        let step = next_step(&SyncInputs {
            number: self.number,
            published: &self.published,
            in_force: &self.in_force,
            in_force_since_lsn: self.since,
            standbys: &standbys,
            droppable: &[],
            allow_async: false,
            members: &members,
        });
        match &step {
            SyncStep::Nothing => {}
            SyncStep::SetNames(n) => {
                self.in_force = n.clone();
                self.since = Some(self.lsn);
                self.release();
            }
            SyncStep::Publish(p) => self.published = p.clone(),
        }
        for p in &self.published {
            let flush = self.standbys.get(p).map_or(0, |s| s.1);
            if let Some(lost) = self.acked.iter().find(|l| **l > flush) {
                panic!("commit {lost} acknowledged, not on published {p} (flushed {flush}); {:?}", self.in_force);
            }
        }
        step
    }

    /// What the primary answers `name`'s `POST /ha/sync-leave` now.
    fn leave_state(&self, name: &str) -> SyncLeaveState {
        let standbys = self.standbys();
        let may = may_leave(self.number, &self.leaving, &self.published, &self.in_force, &standbys, &self.members);
        leave_state(name, &may, &self.published, &self.in_force, &standbys).0
    }

    /// `name` stops: it asks to leave, the primary ticks until it answers, and it stops.
    /// Returns the last answer.
    fn stop_standby(&mut self, name: &str) -> SyncLeaveState {
        self.leaving.push(name.into());
        let mut state = self.leave_state(name);
        for _ in 0..20 {
            if state != SyncLeaveState::Waiting {
                break;
            }
            self.commit();
            self.tick();
            state = self.leave_state(name);
        }
        self.standbys.get_mut(name).unwrap().0 = false;
        // Seen not streaming: the primary forgets that it was leaving.
        self.leaving.retain(|l| l != name);
        state
    }

    /// `name` streams again (its pod came back), caught up.
    fn start_standby(&mut self, name: &str) {
        *self.standbys.get_mut(name).unwrap() = (true, self.lsn);
    }

    /// Ticks (a commit before each) until the step is `Nothing` twice in a row.
    fn settle(&mut self) {
        let mut quiet = 0;
        for _ in 0..50 {
            self.commit();
            quiet = if self.tick() == SyncStep::Nothing { quiet + 1 } else { 0 };
            if quiet == 2 {
                return;
            }
        }
        panic!("no steady state: {:?} published {:?}", self.in_force, self.published);
    }
}

#[test]
fn model_removing_a_streaming_published_standby_keeps_every_commit_on_the_published_set() {
    let mut m = Model::new(1, &["pg-2", "pg-3"], &["pg-2"]);
    m.settle();
    m.members = strings(&["pg-3"]);
    m.settle();
    assert_eq!(m.published, ["pg-3"]);
    assert_eq!(m.in_force, SyncNames::any(1, strings(&["pg-3"])));
    // The operator stops it now: commits go on.
    m.standbys.get_mut("pg-2").unwrap().0 = false;
    let before = m.acked.len();
    m.settle();
    assert!(m.acked.len() > before, "commits go on without the removed standby");
}

#[test]
fn model_removing_a_stopped_published_standby_under_required() {
    let mut m = Model::new(1, &["pg-2", "pg-3"], &["pg-2"]);
    m.settle();
    m.standbys.get_mut("pg-2").unwrap().0 = false;
    m.commit();
    m.tick();
    assert!(!m.waiting.is_empty(), "required: commits wait for the stopped standby");
    m.members = strings(&["pg-3"]);
    m.settle();
    assert_eq!(m.published, ["pg-3"]);
    assert!(m.waiting.len() <= 1, "the waiting commits were released once pg-3 was required: {:?}", m.waiting);
}

#[test]
fn model_adding_members_and_raising_the_number() {
    let mut m = Model::new(1, &["pg-2"], &["pg-2"]);
    m.settle();
    m.members = strings(&["pg-2", "pg-3", "pg-4"]);
    m.standbys.insert("pg-3".into(), (true, 0));
    m.standbys.insert("pg-4".into(), (true, 0));
    m.settle();
    assert_eq!(m.published, ["pg-2"], "number 1: an added member is a candidate, not published");
    m.number = 3;
    m.settle();
    assert_eq!(m.published, ["pg-2", "pg-3", "pg-4"]);
    assert_eq!(m.in_force, SyncNames::any(3, strings(&["pg-2", "pg-3", "pg-4"])));
}

#[test]
fn model_replacing_every_standby_of_the_set() {
    // Scale out to new instances, then remove the old ones, with number 2: at no step is an
    // acknowledged commit missing from a published standby (checked by tick).
    let mut m = Model::new(2, &["pg-2", "pg-3"], &["pg-2", "pg-3"]);
    m.settle();
    m.members = strings(&["pg-2", "pg-3", "pg-4", "pg-5"]);
    m.standbys.insert("pg-4".into(), (true, 0));
    m.standbys.insert("pg-5".into(), (true, 0));
    m.settle();
    m.members = strings(&["pg-4", "pg-5"]);
    m.settle();
    assert_eq!(m.published, ["pg-4", "pg-5"]);
    assert_eq!(m.in_force, SyncNames::any(2, strings(&["pg-4", "pg-5"])));
    for s in ["pg-2", "pg-3"] {
        m.standbys.get_mut(s).unwrap().0 = false;
    }
    let before = m.acked.len();
    m.settle();
    assert!(m.acked.len() > before);
}

#[test]
fn model_a_rolling_restart_of_every_standby_never_makes_a_commit_wait() {
    // number 1 over two standbys, each stopped and started in turn: each one is swapped out of
    // the set before it stops, so no commit waits for a standby that is down (and at every
    // step each acknowledged commit is on every published standby: checked by tick).
    let mut m = Model::new(1, &["pg-2", "pg-3"], &["pg-2"]);
    m.settle();
    for name in ["pg-2", "pg-3", "pg-2"] {
        assert_eq!(m.stop_standby(name), SyncLeaveState::Released, "{name}");
        assert!(!m.published.contains(&name.to_string()) && !m.in_force.names.contains(&name.to_string()));
        m.commit();
        m.tick();
        assert!(m.waiting.is_empty(), "{name} is down: no commit waits for it ({:?})", m.in_force);
        m.start_standby(name);
        m.settle();
        assert_eq!(m.published.len(), 1, "the set is whole again");
    }
}

#[test]
fn model_a_stopping_standby_without_a_spare_stays_in_the_set() {
    // One standby, number 1: leaving would leave nobody to promote; it stays, commits wait.
    let mut m = Model::new(1, &["pg-2"], &["pg-2"]);
    m.settle();
    assert_eq!(m.stop_standby("pg-2"), SyncLeaveState::CannotLeave);
    assert_eq!(m.published, ["pg-2"]);
    m.commit();
    m.tick();
    assert!(!m.waiting.is_empty(), "required: commits wait for it");
    // number 2 over two standbys: no spare either; the set never shrinks below number for it.
    let mut m = Model::new(2, &["pg-2", "pg-3"], &["pg-2", "pg-3"]);
    m.settle();
    m.leaving.push("pg-2".into());
    assert_eq!(m.leave_state("pg-2"), SyncLeaveState::CannotLeave);
    m.settle();
    assert_eq!(m.published, ["pg-2", "pg-3"]);
}

#[test]
fn two_stopping_standbys_share_the_spares_in_name_order() {
    let names = SyncNames::any(2, strings(&["pg-2", "pg-3"]));
    let standbys = [sb("pg-2", 1), sb("pg-3", 1), sb("pg-4", 1)];
    let members = strings(&["pg-2", "pg-3", "pg-4"]);
    let published = strings(&["pg-2", "pg-3"]);
    let leaving = strings(&["pg-3", "pg-2"]);
    assert_eq!(may_leave(2, &leaving, &published, &names, &standbys, &members), ["pg-2"]);
    // A standby the set does not need leaves freely, and is no spare.
    let leaving = strings(&["pg-4", "pg-2"]);
    assert_eq!(may_leave(2, &leaving, &published, &names, &standbys, &members), ["pg-4"]);
    let (state, detail) = leave_state("pg-4", &["pg-4".into()], &published, &names, &standbys);
    assert_eq!((state, detail.as_str()), (SyncLeaveState::Released, "commits do not wait for pg-4"));
}

#[test]
fn a_joining_standby_that_stops_is_replaced_in_the_names() {
    // pg-3 is required (ANY 2 (pg-2, pg-3)), not yet published, and stops: pg-4 is required
    // in its place before it is released.
    let names = SyncNames::any(2, strings(&["pg-2", "pg-3"]));
    let standbys = [sb("pg-2", 1), sb("pg-3", 1), sb("pg-4", 1)];
    let published = strings(&["pg-2"]);
    let all = strings(&["pg-2", "pg-3", "pg-4"]);
    let may = may_leave(2, &strings(&["pg-3"]), &published, &names, &standbys, &all);
    assert_eq!(may, ["pg-3"]);
    assert_eq!(leave_state("pg-3", &may, &published, &names, &standbys).0, SyncLeaveState::Waiting);
    let members = strings(&["pg-2", "pg-4"]);
    let step = next_step(&SyncInputs {
        number: 2,
        published: &published,
        in_force: &names,
        in_force_since_lsn: Some(1),
        standbys: &standbys,
        droppable: &[],
        allow_async: false,
        members: &members,
    });
    assert_eq!(step, SyncStep::SetNames(SyncNames::any(2, strings(&["pg-2", "pg-4"]))));
}
