//! Synchronous durability (architecture invariant 7, docs/architecture.md §7), as a pure function.
//!
//! The primary lists exactly the published synchronous standbys in
//! `synchronous_standby_names = ANY k (s1, …, sk)`, so every acknowledged commit is on every
//! member of the published set, and any member may be promoted. Changes keep that true:
//!
//! - **Join**: a streaming standby `c` that is a member is first *required* —
//!   `ANY k+1 (published…, c)` — and published in the lease only once Postgres counts it
//!   (`sync_state` `quorum`: its WAL sender took the setting) and it has flushed past the WAL
//!   position at which that setting was first seen in force so (every commit acknowledged
//!   before needed only the old set).
//! - **Leave** (`dataDurability: preferred` only, after a timeout): a dead standby is removed
//!   from the lease first, then from `synchronous_standby_names`.
//! - **Removed from the membership** (docs/architecture.md §4.8): a published standby that is
//!   no longer a member leaves the same way, lease first, names after — under `required` too:
//!   an operator removed it. While it still streams and the set would otherwise shrink below
//!   `number`, a streaming member joins first (`ANY k+1`), so the set keeps a standby that may
//!   be promoted; a removed standby that does not stream is unpublished at once.
//! - **Stopping** (`POST /ha/sync-leave`, a standby's SIGTERM): a standby the set needs (it is
//!   published or in the names in force) and that is going away on purpose leaves like a
//!   removed member — a spare streaming member joins first, then it is unpublished, then
//!   dropped from the names — and only once a spare is there ([`may_leave`]): the set never
//!   shrinks below `number` for it. It stops once commits no longer wait for it ([`leave_state`]),
//!   so a rolling update costs no write gap.
//! - **Required** durability never drops a member that is down: commits wait.
//!
//! A new primary starts with `ANY k (published minus itself)` in force before its first write
//! (or, when that is empty, `ANY 1 (every other member)`): commits wait for a standby.

pub use crate::pgconf::SyncNames;

pub use crate::api::SyncLeaveState;

/// A standby as `pg_stat_replication` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standby {
    /// Its `application_name` (instance name).
    pub name: String,
    /// `state = streaming`.
    pub streaming: bool,
    /// Postgres counts it among the synchronous standbys (`sync_state` `quorum` or `sync`):
    /// its WAL sender runs with a setting that lists it.
    pub counted: bool,
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
    /// WAL position at which `in_force` was first seen in force with every standby it lists
    /// counted ([`counted`]).
    pub in_force_since_lsn: Option<u64>,
    /// Connected standbys.
    pub standbys: &'a [Standby],
    /// Published members that `preferred` durability may drop now (dead past the timeout).
    pub droppable: &'a [String],
    /// `preferred` durability: with nobody left to require, commits go on asynchronously.
    pub allow_async: bool,
    /// The current members other than this primary: only they join the set, and a published
    /// standby that is not among them (it was removed) leaves it.
    pub members: &'a [String],
}

/// Whether Postgres counts every connected standby that `in_force` lists: their WAL senders
/// run with the setting. The WAL position a join is measured from is taken only then.
pub fn counted(in_force: &SyncNames, standbys: &[Standby]) -> bool {
    standbys.iter().filter(|s| s.streaming && in_force.names.contains(&s.name)).all(|s| s.counted)
}

/// One step at a time; the HA loop applies it and asks again at its next tick.
pub fn next_step(i: &SyncInputs<'_>) -> SyncStep {
    let is_member = |n: &String| i.members.contains(n);
    let published: Vec<String> = {
        let mut p = i.published.to_vec();
        p.sort();
        p
    };
    let streams = |n: &String| i.standbys.iter().any(|s| &s.name == n && s.streaming);
    // Candidates are members only: a removed instance that still streams never joins.
    let candidates: Vec<&Standby> = i.standbys.iter().filter(|s| s.streaming && is_member(&s.name)).collect();
    let join = joining(i, &published).filter(|c| is_member(c) && streams(c));
    // Join, second half: publish the candidate once Postgres counts it and it has flushed past
    // the position from which every acknowledged commit needed it.
    if let Some(c) = join
        && candidates
            .iter()
            .any(|s| &s.name == c && s.counted && i.in_force_since_lsn.is_some_and(|l| s.flush_lsn >= l))
    {
        let mut p = published.clone();
        p.push(c.clone());
        p.sort();
        return SyncStep::Publish(p);
    }
    // Leave, first half: unpublish. `preferred`'s dead standbys at once; a removed standby at
    // once, unless it still streams and a member can first take its place in the set.
    let staying = published.iter().filter(|p| is_member(p) && !i.droppable.contains(p)).count();
    let replacement = join.is_some() || candidates.iter().any(|s| !published.contains(&s.name));
    let waits_for_replacement = |p: &String| streams(p) && staying < i.number && replacement;
    let keep: Vec<String> = published
        .iter()
        .filter(|p| !i.droppable.contains(p) && (is_member(p) || waits_for_replacement(p)))
        .cloned()
        .collect();
    if keep.len() < published.len() {
        return SyncStep::Publish(keep);
    }
    if join.is_some() {
        // Required, not counted or not caught up yet.
        return SyncStep::Nothing;
    }
    if staying < i.number {
        // Join, first half: require the best streaming member that is not published yet.
        if let Some(c) = candidates
            .iter()
            .filter(|s| !published.contains(&s.name))
            .max_by_key(|s| (s.flush_lsn, std::cmp::Reverse(s.name.clone())))
        {
            let mut names = published.clone();
            names.push(c.name.clone());
            return set(i.in_force, SyncNames::any(published.len() + 1, names));
        }
    }
    if published.is_empty() {
        if i.allow_async && candidates.is_empty() {
            // `preferred`, and no member streams at all: run asynchronously (logged by the caller).
            return set(i.in_force, SyncNames::default());
        }
        // Nobody to require yet: keep whatever protects commits now (a new primary's
        // "any other member"), never fall back to asynchronous under `required`.
        return SyncStep::Nothing;
    }
    // Leave, second half (and the steady state): exactly the published set.
    set(i.in_force, SyncNames::any(published.len(), published))
}

/// Of the standbys stopping on purpose (`leaving`), those that may leave the set now. One the
/// set does not need (neither published nor in the names in force) leaves freely. The ones it
/// needs may leave while the set can still be filled to `number` without them — from the
/// published standbys that stay and the spares (streaming members, `members` being the
/// others, neither published nor leaving), so that a member joins in a leaving one's place
/// before it goes. When it cannot, the last ones by name stay: commits wait while they are
/// down, as `required` promises.
pub fn may_leave(
    number: usize,
    leaving: &[String],
    published: &[String],
    in_force: &SyncNames,
    standbys: &[Standby],
    members: &[String],
) -> Vec<String> {
    let is_leaving = |n: &String| leaving.contains(n);
    let staying = published.iter().filter(|p| !is_leaving(p)).count();
    let spares = standbys
        .iter()
        .filter(|s| s.streaming && members.contains(&s.name) && !is_leaving(&s.name) && !published.contains(&s.name))
        .count();
    let mut sorted = leaving.to_vec();
    sorted.sort();
    sorted.dedup();
    let (needed, free): (Vec<String>, Vec<String>) =
        sorted.into_iter().partition(|n| published.contains(n) || in_force.names.contains(n));
    let must_stay = number.saturating_sub(staying + spares).min(needed.len());
    let mut may = free;
    may.extend(needed[..needed.len() - must_stay].iter().cloned());
    may.sort();
    may
}

/// Where the stopping standby `name` stands: released once commits no longer wait for it,
/// waiting while a spare is swapped in (`may_leave`: [`may_leave`]'s answer), and "cannot
/// leave" when it has no spare or does not stream (commits wait for it either way).
pub fn leave_state(
    name: &str,
    may_leave: &[String],
    published: &[String],
    in_force: &SyncNames,
    standbys: &[Standby],
) -> (SyncLeaveState, String) {
    let name = name.to_string();
    if !published.contains(&name) && !in_force.names.contains(&name) {
        return (SyncLeaveState::Released, format!("commits do not wait for {name}"));
    }
    if !standbys.iter().any(|s| s.name == name && s.streaming) {
        return (SyncLeaveState::CannotLeave, format!("{name} does not stream: commits wait for it already"));
    }
    if may_leave.contains(&name) {
        return (SyncLeaveState::Waiting, format!("another standby is being swapped in for {name}"));
    }
    (
        SyncLeaveState::CannotLeave,
        format!(
            "no other streaming standby can take {name}'s place in the synchronous set: commits wait while it is down"
        ),
    )
}

/// The candidate currently required together with the whole published set
/// (`ANY k+1 (published…, c)`), if one is.
fn joining<'a>(i: &SyncInputs<'a>, published: &[String]) -> Option<&'a String> {
    let in_force: &'a SyncNames = i.in_force;
    let covers_published = published.iter().all(|p| in_force.names.contains(p)) && in_force.k >= published.len();
    let extra: Vec<&'a String> = in_force.names.iter().filter(|n| !published.contains(n)).collect();
    match extra.as_slice() {
        [c] if covers_published && in_force.k == published.len() + 1 => Some(*c),
        _ => None,
    }
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
#[path = "sync_tests.rs"]
mod tests;
