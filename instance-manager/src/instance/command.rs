//! What the HA loop and the run loop ask of each other: [`PostgresCommand`] (to the run loop,
//! which alone owns the postmaster) and [`HaCommand`] (to the HA loop, which alone decides
//! the role). Both are defined here, below the HA loop, so that `instance` never depends on
//! `ha`.
//!
//! Two channels reach the run loop: the **desired role** ([`super::Desired`], a watch: the
//! HA loop's standing decision — primary, replica of whom, halted — which the run loop
//! converges to, restarting or promoting as needed) and **commands** ([`PostgresCommand`], a
//! queue: one-off acts that must happen exactly once, now). Nobody else starts, stops,
//! promotes or kills Postgres; the HTTP handlers, the metrics and the backups read
//! [`super::ProcessState`] snapshots from a watch.

use crate::api::{HaResult, PromoteOutcome, SwitchoverDone, SyncLeaveAnswer};

/// Requests to the HA loop, answered on their `reply` channel.
pub enum HaCommand {
    /// Hand the lease to `target` (or the best replica); answers the new primary's name.
    Switchover {
        /// The replica to hand over to.
        target: Option<String>,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<HaResult<SwitchoverDone>>,
    },
    /// Promote this replica now; with `force`, even from a live holder.
    Promote {
        /// Take the lease from a live holder.
        force: bool,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<HaResult<PromoteOutcome>>,
    },
    /// Run a tick now (a peer just handed us the lease).
    Tick,
    /// A standby is stopping (`POST /ha/sync-leave`): take it out of the synchronous set first;
    /// answers where it stands.
    SyncLeave {
        /// The stopping standby.
        name: String,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<HaResult<SyncLeaveAnswer>>,
    },
    /// Give the lease up (holder none) after Postgres stopped, so others take over at once.
    Release {
        /// The answer.
        reply: tokio::sync::oneshot::Sender<HaResult<()>>,
    },
}

/// A one-off act on the postmaster, carried out by the run loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresCommand {
    /// Stop Postgres at once (immediate shutdown, SIGKILL of its process group within half
    /// the fence budget): it is writable without a live lease. Ignored while it is not
    /// running.
    Fence {
        /// Why, for the log.
        reason: String,
    },
    /// Stop Postgres at once and rewind the data directory onto its upstream before the next
    /// start (a replica that diverged from the primary's timeline).
    Rewind {
        /// Why, for the log.
        reason: String,
    },
}
