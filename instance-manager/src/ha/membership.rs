//! Membership changes without restarts (docs/architecture.md §4.8), as pure functions.
//!
//! The configuration's `members` is taken live: the run loop applies an edited file
//! (`instance::reload`) and wakes the HA loop, which moves its [`Membership`] to the new list at
//! the start of its next tick with [`Membership::next`]. A change applies **at once** where that
//! only makes this instance more careful, and **later** where applying it at once could drop a
//! guarantee already given:
//!
//! | what | a member added | a member removed |
//! |---|---|---|
//! | peers read in an election, switchover targets | at once | at once: never promoted by this instance's decisions |
//! | failsafe rounds (holder) | at once: its acknowledgement is required | only once the lease store answers again |
//! | synchronous set (primary, `ha::sync`) | a candidate at once: `ANY k+1 (…, new)`, published once Postgres counts it and it flushed | unpublished first, dropped from `synchronous_standby_names` after |
//! | this instance | — | never takes the lease again; a holder keeps it (WARN, `/status`) until switched over |
//! | following the holder | — | its address is remembered: replicas keep streaming from a holder removed before it was switched over |
//!
//! Why removals wait for the store in failsafe: during a lease-store outage the holder stays
//! writable only while every member promises not to take the lease (§4.6). A member removed from
//! the holder's list may not know it yet (each pod sees the edited file at its own time); had the
//! holder stopped asking it, nothing would keep it from taking the lease when the store answers
//! it. So an acknowledgement required during an outage stays required until the store answers.

use std::collections::BTreeMap;

use crate::api::Member;
use crate::pgconf::Upstream;

/// The membership the HA loop acts on, carried from tick to tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// The configured members by name, this instance included when it is listed.
    members: BTreeMap<String, Member>,
    /// Members removed while the lease store was failing: failsafe rounds still ask them
    /// until the store answers again.
    failsafe_retained: BTreeMap<String, Member>,
    /// Every member removed since the loop started, with its last address: a holder removed
    /// before it was switched over is still followed.
    former: BTreeMap<String, Member>,
}

/// What one call of [`Membership::next`] changed, by name (for the log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Listed now, not before.
    pub added: Vec<String>,
    /// Listed before, not now.
    pub removed: Vec<String>,
    /// Listed before and now, at another address.
    pub moved: Vec<String>,
    /// Removed members that failsafe rounds no longer ask: the store answered again.
    pub released: Vec<String>,
}

impl Change {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.moved.is_empty() && self.released.is_empty()
    }
}

fn by_name(members: &[Member]) -> BTreeMap<String, Member> {
    members.iter().map(|m| (m.name.clone(), m.clone())).collect()
}

impl Membership {
    /// The membership of a loop that starts with `configured`.
    pub fn new(configured: &[Member]) -> Self {
        Self { members: by_name(configured), ..Self::default() }
    }

    /// The membership once the configuration lists `configured`; `store_answers`: the last
    /// call to the lease store succeeded. Added members count everywhere at once; removed
    /// ones stop counting at once, except in failsafe rounds, which keep asking them while the
    /// store fails (see the module docs).
    pub fn next(&self, configured: &[Member], store_answers: bool) -> (Self, Change) {
        let members = by_name(configured);
        let mut change = Change::default();
        for (name, m) in &members {
            match self.members.get(name) {
                None => change.added.push(name.clone()),
                Some(old) if old != m => change.moved.push(name.clone()),
                Some(_) => {}
            }
        }
        let removed: Vec<(&String, &Member)> = self.members.iter().filter(|(n, _)| !members.contains_key(*n)).collect();
        change.removed = removed.iter().map(|(n, _)| (*n).clone()).collect();
        let mut failsafe_retained = if store_answers { BTreeMap::new() } else { self.failsafe_retained.clone() };
        if !store_answers {
            failsafe_retained.extend(removed.iter().map(|(n, m)| ((*n).clone(), (*m).clone())));
        }
        failsafe_retained.retain(|n, _| !members.contains_key(n));
        change.released = self
            .failsafe_retained
            .keys()
            .filter(|n| !failsafe_retained.contains_key(*n) && !members.contains_key(*n))
            .cloned()
            .collect();
        let mut former = self.former.clone();
        former.extend(removed.iter().map(|(n, m)| ((*n).clone(), (*m).clone())));
        former.retain(|n, _| !members.contains_key(n));
        (Self { members, failsafe_retained, former }, change)
    }

    /// The members' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// Whether `name` is a member.
    pub fn lists(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// The members but `me`: whom an election and a switchover read, and the candidates of the
    /// synchronous set.
    pub fn others(&self, me: &str) -> Vec<Member> {
        self.members.values().filter(|m| m.name != me).cloned().collect()
    }

    /// The names of [`others`](Self::others).
    pub fn other_names(&self, me: &str) -> Vec<String> {
        self.members.keys().filter(|n| *n != me).cloned().collect()
    }

    /// Whom a failsafe round asks: the other members, and those removed while the store was
    /// failing.
    pub fn failsafe_targets(&self, me: &str) -> Vec<Member> {
        let mut targets = self.others(me);
        targets.extend(self.failsafe_retained.values().filter(|m| m.name != me).cloned());
        targets
    }

    /// Where `name`'s Postgres is: a member's address, or a former member's last one (a
    /// holder removed before it was switched over keeps its replicas).
    pub fn upstream(&self, name: &str) -> Option<Upstream> {
        let m = self.members.get(name).or_else(|| self.former.get(name))?;
        Some(Upstream { name: m.name.clone(), host: m.host.clone(), port: u16::try_from(m.port).unwrap_or(5432) })
    }

    /// A member's (or a former member's) entry, for calls to its API.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.get(name).or_else(|| self.former.get(name))
    }

    /// What a change still waits for, in words, for `/status`: removed standbys still in the
    /// published synchronous set (`published`), and when this instance (`me`) holds the lease
    /// (`holds_lease`: its claim is fresh) the removed members its failsafe rounds still ask and
    /// whether it holds the lease without being listed.
    pub fn pending(&self, me: &str, published: &[String], holds_lease: bool) -> Vec<String> {
        let mut pending: Vec<String> = Vec::new();
        if holds_lease {
            pending.extend(
                self.failsafe_retained
                    .keys()
                    .map(|n| format!("{n}: removed; still asked in failsafe rounds until the lease store answers")),
            );
        }
        pending.extend(
            published.iter().filter(|p| !self.lists(p)).map(|p| {
                format!("{p}: removed; leaving the published synchronous set, then synchronous_standby_names")
            }),
        );
        if holds_lease && !self.lists(me) {
            pending.push(format!(
                "{me}: not listed in members but holds the lease: it keeps it until it is switched over \
                 (POST /switchover), and never takes it again"
            ));
        }
        pending
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
