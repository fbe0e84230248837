//! Synchronous durability (architecture invariant 7, docs/architecture.md §7), as a pure function.
//!
//! The primary lists exactly the published synchronous standbys in
//! `synchronous_standby_names = ANY k (s1, …, sk)`, so every acknowledged commit is on every
//! member of the published set, and any member may be promoted. Changes keep that true:
//!
//! - **Join**: a streaming standby `c` is first *required* — `ANY k+1 (published…, c)` — and
//!   published in the lease only once it has flushed past the WAL position at which that
//!   setting came into force (every commit acknowledged before needed only the old set).
//! - **Leave** (`dataDurability: preferred` only, after a timeout): a dead standby is removed
//!   from the lease first, then from `synchronous_standby_names`.
//! - **Required** durability never drops a standby: commits wait.
//!
//! A new primary starts with `ANY k (published minus itself)` in force before its first write
//! (or, when that is empty, `ANY 1 (every other member)`): commits wait for a standby.

pub use crate::pgconf::SyncNames;

/// A standby as `pg_stat_replication` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standby {
    /// Its `application_name` (instance name).
    pub name: String,
    /// `state = streaming`.
    pub streaming: bool,
    /// Its flush LSN.
    pub flush_lsn: u64,
}

/// The next step towards the target synchronous set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStep {
    /// Nothing to change.
    Nothing,
    /// Put this setting in force (and remember the LSN at which it was in force).
    SetNames(SyncNames),
    /// Publish this set in the lease.
    Publish(Vec<String>),
}

/// Inputs of [`next_step`].
#[derive(Debug, Clone)]
pub struct SyncInputs<'a> {
    /// `synchronous.number`.
    pub number: usize,
    /// The set published in the lease.
    pub published: &'a [String],
    /// The setting Postgres has in force.
    pub in_force: &'a SyncNames,
    /// WAL position at which `in_force` was first seen in force.
    pub in_force_since_lsn: Option<u64>,
    /// Connected standbys.
    pub standbys: &'a [Standby],
    /// Published members that `preferred` durability may drop now (dead past the timeout).
    pub droppable: &'a [String],
    /// `preferred` durability: with nobody left to require, commits go on asynchronously.
    pub allow_async: bool,
}

/// One step at a time; the HA loop applies it and asks again at its next tick.
pub fn next_step(i: &SyncInputs<'_>) -> SyncStep {
    let published: Vec<String> = {
        let mut p = i.published.to_vec();
        p.sort();
        p
    };
    // Leave (preferred only): unpublish first.
    let keep: Vec<String> = published.iter().filter(|p| !i.droppable.contains(p)).cloned().collect();
    if keep.len() < published.len() {
        return SyncStep::Publish(keep);
    }
    let required = SyncNames::any(published.len(), published.clone());
    let covers_published = published.iter().all(|p| i.in_force.names.contains(p)) && i.in_force.k >= published.len();
    // A joining candidate currently required together with the published set.
    let joining: Vec<&String> = i.in_force.names.iter().filter(|n| !published.contains(n)).collect();
    if covers_published && joining.len() == 1 && i.in_force.k == published.len() + 1 {
        let c = joining[0];
        let caught_up = i
            .standbys
            .iter()
            .any(|s| &s.name == c && s.streaming && i.in_force_since_lsn.is_some_and(|l| s.flush_lsn >= l));
        if caught_up {
            let mut p = published.clone();
            p.push(c.clone());
            p.sort();
            return SyncStep::Publish(p);
        }
        let still_there = i.standbys.iter().any(|s| &s.name == c && s.streaming);
        if still_there {
            return SyncStep::Nothing;
        }
    }
    if published.len() < i.number {
        // Join the best streaming standby that is not published yet.
        if let Some(c) = i
            .standbys
            .iter()
            .filter(|s| s.streaming && !published.contains(&s.name))
            .max_by_key(|s| (s.flush_lsn, std::cmp::Reverse(s.name.clone())))
        {
            let mut names = published.clone();
            names.push(c.name.clone());
            return set(i.in_force, SyncNames::any(published.len() + 1, names));
        }
    }
    if published.is_empty() {
        if i.allow_async && !i.standbys.iter().any(|s| s.streaming) {
            // `preferred`, and no standby streams at all: run asynchronously (logged by the caller).
            return set(i.in_force, SyncNames::default());
        }
        // Nobody to require yet: keep whatever protects commits now (a new primary's
        // "any other member"), never fall back to asynchronous under `required`.
        return SyncStep::Nothing;
    }
    set(i.in_force, required)
}

fn set(in_force: &SyncNames, want: SyncNames) -> SyncStep {
    if *in_force == want { SyncStep::Nothing } else { SyncStep::SetNames(want) }
}

/// What a primary puts in force before its first write: the published set without itself,
/// or — when that is empty — any one of the other members.
pub fn initial_names(number: usize, published: &[String], me: &str, members: &[String]) -> SyncNames {
    let others: Vec<String> = published.iter().filter(|p| *p != me).cloned().collect();
    if !others.is_empty() {
        return SyncNames::any(others.len(), others);
    }
    let rest: Vec<String> = members.iter().filter(|m| *m != me).cloned().collect();
    SyncNames::any(number.min(rest.len()).max(usize::from(!rest.is_empty())), rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(name: &str, lsn: u64) -> Standby {
        Standby { name: name.into(), streaming: true, flush_lsn: lsn }
    }

    fn step(published: &[&str], in_force: &SyncNames, since: Option<u64>, standbys: &[Standby]) -> SyncStep {
        let published: Vec<String> = published.iter().map(|s| s.to_string()).collect();
        next_step(&SyncInputs {
            number: 1,
            published: &published,
            in_force,
            in_force_since_lsn: since,
            standbys,
            droppable: &[],
            allow_async: false,
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
    fn required_durability_keeps_a_dead_standby() {
        let want = SyncNames::any(1, vec!["pg-2".into()]);
        assert_eq!(step(&["pg-2"], &want, Some(1), &[sb("pg-3", 500)]), SyncStep::Nothing);
    }

    #[test]
    fn preferred_unpublishes_first_then_relaxes() {
        let want = SyncNames::any(1, vec!["pg-2".into()]);
        let published = vec!["pg-2".to_string()];
        let dead = vec!["pg-2".to_string()];
        let i = SyncInputs {
            number: 1,
            published: &published,
            in_force: &want,
            in_force_since_lsn: None,
            standbys: &[],
            droppable: &dead,
            allow_async: true,
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
}
