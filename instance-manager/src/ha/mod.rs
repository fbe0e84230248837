//! High availability through a lease (docs/architecture.md §3.2 and §4): the instances elect their primary
//! themselves.
//!
//! - [`decide`]: the pure decision of one tick, where every safety invariant lives.
//! - [`actor`]: the loop that owns the lease state — it reads the lease, asks the peers, runs
//!   the decision and carries it out (renew, acquire, promote, follow, fence), and publishes
//!   what it sees for `/status`. It is the only writer of the lease and of its version.
//! - [`deadman`]: the backstop — a tiny separate process that SIGKILLs Postgres when the
//!   loop stops renewing (a frozen or stopped manager cannot fence itself).
//! - [`membership`]: membership changes without restarts — what a change of `members` applies
//!   at once and what waits (the loop's side: `membership_loop`).
//! - [`sync`]: the synchronous set, one step at a time, and standbys that stop on purpose
//!   leaving it first (the loop's side: `sync_loop`).
//!
//! ```text
//!                    lease absent/expired, best candidate
//!   ┌─────────┐  ───────────────────────────────────────▶ ┌──────────┐ renew ok   ┌─────────┐
//!   │ replica │        Acquire (CAS, term+1)               │  holder  │──────────▶ │ primary │
//!   │(Follow) │ ◀─────────────────────────────────────── ─ │(in recov)│  Promote   │ (Renew) │
//!   └─────────┘        lease held by another               └──────────┘            └─────────┘
//!        ▲                                                                              │
//!        │ rewind + start as standby        no renew for renewDeadline / late wake-up / │
//!        └──────────────────────────────── Fence (immediate, SIGKILL) ◀──────────────────┘
//! ```

pub mod actor;
mod control;
pub mod deadman;
pub mod decide;
#[cfg(test)]
mod decide_tests;
mod decision;
pub use crate::failsafe;
mod failsafe_round;
mod handover;
pub mod membership;
mod membership_loop;
pub mod open;
mod peer_view;
mod report;
pub mod routing_task;
mod store_health;
pub mod sync;
mod sync_loop;
pub mod term;
mod thread;
mod writes;

pub use actor::{HaCommand, HaLoop};
pub use handover::choose_target;
pub use open::{OpenError, open_store};
pub use thread::{StartError, start};
