//! What the HA loop asks of the run loop, which alone owns the postmaster.
//!
//! Two channels reach the run loop: the **desired role** ([`super::Desired`], a watch: the
//! HA loop's standing decision — primary, replica of whom, halted — which the run loop
//! converges to, restarting or promoting as needed) and **commands** ([`PostgresCommand`], a
//! queue: one-off acts that must happen exactly once, now). Nobody else starts, stops,
//! promotes or kills Postgres; the HTTP handlers, the metrics and the backups read
//! [`super::ProcessState`] snapshots from a watch.

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
