//! Base backups: taking them, the catalog in the store, retention, the schedule, and the
//! recovery bootstrap that restores one.

pub mod schedule;
