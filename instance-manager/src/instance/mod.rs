//! One supervised Postgres instance: the state the HTTP API reads ([`Instance`]) and the
//! loop of `instance-manager run` that bootstraps, starts, restarts and stops it ([`run`]).
//!
//! ```text
//!            ┌──────────────┐ empty dataDir: initdb or a backup (primary) / pg_basebackup or a backup (replica)
//!  start ──▶ │ bootstrapping│──────────────────────────────┐
//!            └──────────────┘                              ▼
//!                             ┌──────────┐ accepting ┌─────────┐
//!             ┌─────────────▶ │ starting │─────────▶ │ running │
//!             │               └──────────┘           └─────────┘
//!             │ backoff            │ exits               │ exits unexpectedly
//!        ┌─────────┐ ◀─────────────┴─────────────────────┘
//!        │ crashed │
//!        └─────────┘      SIGTERM/SIGINT/SIGQUIT in any state ─▶ stopping ─▶ stopped (exit)
//! ```

mod archiving;
mod command;
mod reload;
mod roles;
mod run;
mod start;
mod state;
pub mod sync_leave;

pub use command::{HaCommand, PostgresCommand};
pub use run::{ExitReason, prepare, run};
pub use state::{Desired, Instance, ProcessState, restart_delay, role_name};
