//! Base backups: taking them ([`take`]; each object streamed by [`upload`], a [`tarball`]
//! through a [`sink`]), the catalog in the store ([`catalog`]), [`retention`], the
//! [`schedule`], one backup at a time per instance ([`runner`]), and the recovery bootstrap
//! that restores one.

pub mod catalog;
pub mod recover;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod sink;
mod status;
mod syncer;
pub mod take;
pub mod tarball;
pub mod upload;

pub use catalog::{BackupFile, BackupInfo};
pub use status::Backups;
