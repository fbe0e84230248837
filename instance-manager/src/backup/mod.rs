//! Base backups: taking them, the catalog in the store, retention, the schedule, and the
//! recovery bootstrap that restores one.

pub mod schedule;
pub mod catalog;

pub use catalog::{BackupFile, BackupInfo};
