//! The HA loop's side of synchronous replication ([`super::sync`], docs/architecture.md §7): on
//! the holder, one step of the synchronous set per tick, and the answers to standbys that are
//! stopping (`POST /ha/sync-leave`).
//!
//! A standby that gets SIGTERM asks the primary, again and again for a few seconds, to take it
//! out of the set before it stops (`instance::sync_leave`). The primary remembers it as
//! *leaving*; while a spare is there ([`super::sync::may_leave`]) the set's steps treat it as a
//! removed member: a spare joins, then it is unpublished, then dropped from the names — and
//! the answer becomes `released`. A mark is forgotten once the standby is seen not streaming
//! (it stopped: when it comes back it is a candidate like any other), or [`LEAVE_MARK`] after
//! its last ask.

use std::time::Duration;

use super::actor::HaLoop;
use super::decide::{LeaseView, renew_fresh};
use super::sync::{Standby, SyncNames};
use crate::api::{HaCommandError, HaResult, ReplicationState, SyncLeaveAnswer, SyncLeaveState};
use crate::clock::BootInstant;

/// How long a standby stays marked as leaving after its last ask.
pub const LEAVE_MARK: Duration = Duration::from_secs(10);

/// What the holder's Postgres says of its synchronous replication now.
struct SyncObservation {
    in_force: SyncNames,
    standbys: Vec<Standby>,
    current_lsn: Option<u64>,
}

impl HaLoop {
    /// Postgres as the primary: the names in force and the connected standbys.
    async fn observe_sync(&self) -> Option<SyncObservation> {
        let o = self.instance.observe().await.filter(|o| !o.in_recovery)?;
        let in_force = SyncNames::parse(&o.synchronous_standby_names)?;
        let standbys = o
            .replication
            .iter()
            .map(|r| Standby {
                name: r.name.clone(),
                streaming: r.state == ReplicationState::Streaming,
                counted: matches!(r.sync_state.as_str(), "quorum" | "sync"),
                flush_lsn: r.flush_lsn.map_or(0, |l| l.as_u64()),
            })
            .collect();
        Some(SyncObservation { in_force, standbys, current_lsn: o.current_lsn.map(|l| l.as_u64()) })
    }

    /// Forgets the leaving standbys that stopped (seen not streaming) or stopped asking, and
    /// says which of the others may leave now.
    fn leaving_now(&mut self, number: usize, published: &[String], obs: &SyncObservation) -> Vec<String> {
        let now = BootInstant::now();
        self.sync_leaving.retain(|name, asked| {
            now.duration_since(*asked) < LEAVE_MARK && obs.standbys.iter().any(|s| &s.name == name && s.streaming)
        });
        let leaving: Vec<String> = self.sync_leaving.keys().cloned().collect();
        let members = self.membership.other_names(&self.instance.config().name);
        super::sync::may_leave(number, &leaving, published, &obs.in_force, &obs.standbys, &members)
    }

    /// The holder's synchronous-replication step of a tick (see [`super::sync`]).
    pub(super) async fn manage_sync(&mut self, view: &LeaseView) {
        let v = self.instance.config();
        let Some(spec) = &v.config.synchronous else { return };
        let LeaseView::Present { record, .. } = view else { return };
        let Some(obs) = self.observe_sync().await else { return };
        let (in_force, standbys) = (&obs.in_force, &obs.standbys);
        // A join is measured from the position at which the setting was first seen in force
        // with every standby it lists counted by Postgres (their WAL senders took it).
        let since = match &self.sync_in_force {
            Some((names, lsn)) if names == in_force => Some(*lsn),
            _ if super::sync::counted(in_force, standbys) => {
                self.sync_in_force = obs.current_lsn.map(|l| (in_force.clone(), l));
                obs.current_lsn
            }
            _ => {
                self.sync_in_force = None;
                None
            }
        };
        let now = BootInstant::now();
        self.sync_dead_since
            .retain(|n, _| record.sync_standbys.contains(n) && !standbys.iter().any(|s| &s.name == n && s.streaming));
        for n in &record.sync_standbys {
            if !standbys.iter().any(|s| &s.name == n && s.streaming) {
                self.sync_dead_since.entry(n.clone()).or_insert(now);
            }
        }
        let droppable: Vec<String> = if spec.data_durability == crate::api::DataDurability::Preferred {
            self.sync_dead_since
                .iter()
                .filter(|(_, t)| now.duration_since(**t) >= self.timing.lease_duration)
                .map(|(n, _)| n.clone())
                .collect()
        } else {
            Vec::new()
        };
        // A standby stopping on purpose leaves like a removed member, once a spare is there.
        let leaving = self.leaving_now(spec.number as usize, &record.sync_standbys, &obs);
        let members: Vec<String> =
            self.membership.other_names(&v.name).into_iter().filter(|m| !leaving.contains(m)).collect();
        let step = super::sync::next_step(&super::sync::SyncInputs {
            number: spec.number as usize,
            published: &record.sync_standbys,
            in_force,
            in_force_since_lsn: since,
            standbys,
            droppable: &droppable,
            allow_async: spec.data_durability == crate::api::DataDurability::Preferred,
            members: &members,
        });
        match step {
            super::sync::SyncStep::Nothing => {}
            super::sync::SyncStep::SetNames(n) => {
                if n.render().is_empty() {
                    tracing::warn!(
                        "synchronous replication degraded: no standby streams, commits are asynchronous (dataDurability: preferred)"
                    );
                }
                self.instance.set_sync_names(n);
            }
            super::sync::SyncStep::Publish(set) => {
                let gone: Vec<&String> = record.sync_standbys.iter().filter(|s| !set.contains(s)).collect();
                let stopping: Vec<&&String> = gone.iter().filter(|s| leaving.contains(s)).collect();
                let removed: Vec<&&String> = gone.iter().filter(|s| !self.membership.lists(s)).collect();
                if !stopping.is_empty() {
                    tracing::info!(from = ?record.sync_standbys, to = ?set, ?stopping, "unpublishing standbys that are stopping");
                } else if !removed.is_empty() {
                    tracing::info!(from = ?record.sync_standbys, to = ?set, ?removed, "unpublishing standbys removed from the membership");
                } else if set.len() < record.sync_standbys.len() {
                    tracing::warn!(from = ?record.sync_standbys, to = ?set, "synchronous replication degraded: unpublishing a dead standby");
                } else {
                    tracing::info!(set = ?set, "publishing the synchronous standby set");
                }
                // This tick's renew changed the version: publish over a fresh read.
                let LeaseView::Present { record, version, unchanged_since } = self.read_lease().await else { return };
                if !record.is_held_by(&v.name) {
                    return;
                }
                let mut r = record;
                r.sync_standbys = set;
                let announced = LeaseView::Present { record: r, version, unchanged_since };
                self.write(&announced, &v, false).await;
            }
        }
    }

    /// `POST /ha/sync-leave` on the holder: `name` is stopping. Marks it as leaving (the tick
    /// that follows the command takes the next step) and says where it stands.
    pub(super) async fn sync_leave(&mut self, name: &str) -> HaResult<SyncLeaveAnswer> {
        let v = self.instance.config();
        let Some(spec) = &v.config.synchronous else {
            let detail = "synchronous replication is off: commits never wait for a standby".to_string();
            return Ok(SyncLeaveAnswer { state: SyncLeaveState::Released, detail });
        };
        let not_primary = || HaCommandError::WrongRole(format!("{} is not the primary; ask the lease holder", v.name));
        if !renew_fresh(&self.memory, &self.timing, BootInstant::now()) {
            return Err(not_primary());
        }
        let obs = self.observe_sync().await.ok_or_else(not_primary)?;
        let first = self.sync_leaving.insert(name.to_string(), BootInstant::now()).is_none();
        let published = self.last_sync_set.clone();
        let may = self.leaving_now(spec.number as usize, &published, &obs);
        let (state, detail) = super::sync::leave_state(name, &may, &published, &obs.in_force, &obs.standbys);
        if first {
            tracing::info!(standby = name, ?state, %detail, "a standby is stopping: taking it out of the synchronous set first");
        } else if state != SyncLeaveState::Waiting {
            tracing::info!(standby = name, ?state, %detail, "a stopping standby was answered");
        }
        Ok(SyncLeaveAnswer { state, detail })
    }

    /// Before Postgres becomes (or restarts as) primary: the synchronous names it must have in
    /// force before its first write.
    pub(super) fn prepare_primary_sync(&self, published: &[String]) {
        let v = self.instance.config();
        let Some(spec) = &v.config.synchronous else { return };
        let members = self.membership.names();
        self.instance.set_sync_names(super::sync::initial_names(spec.number as usize, published, &v.name, &members));
    }

    /// The stopping standbys this holder is swapping out, for `/status`.
    pub(super) fn leaving_standbys(&self) -> Vec<String> {
        self.sync_leaving.keys().cloned().collect()
    }
}
