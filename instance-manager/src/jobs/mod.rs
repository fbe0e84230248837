//! The long-lived work around Postgres that is neither the run loop nor the HA loop: base
//! backups (on request and on schedule, with retention) and the periodic audit of the WAL
//! archive. They read the instance's state and Postgres; the `backup` and `archive` modules
//! below them do the work and never see the instance.

pub mod audit;
pub mod backups;
