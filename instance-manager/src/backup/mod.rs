//! Base backups: taking them, the catalog in the store, retention, the schedule, and the
//! recovery bootstrap that restores one.

pub mod schedule;
pub mod catalog;
pub mod recover;
pub mod restore;

pub use catalog::{BackupFile, BackupInfo};
