//! The WAL archive in an object store: where things go ([`layout`]), how they are packed
//! ([`compress`], [`pack`]), the store client ([`store`]), and the manager's archiver and restorer.
//!
//! Postgres' `archive_command` and `restore_command` are thin clients
//! (`instance-manager wal-archive %p`, `wal-restore %f %p`) that ask the running manager
//! over its Unix socket; the manager keeps one store client, uploads in parallel and ahead of
//! Postgres' calls, and prefetches during recovery.

pub mod archiver;
pub mod cipher;
pub mod compress;
pub mod destination;
mod error;
pub mod gaps;
pub mod identity;
pub mod inventory;
pub mod layout;
pub mod local;
pub mod pack;
pub mod restorer;
pub mod store;
pub mod unmarked;

pub use archiver::Archiver;
pub use destination::{Destination, Scheme};
pub use error::ArchiveError;
pub use layout::{Layout, SegmentId, WalName, parse_wal_name};
pub use restorer::Restorer;
pub use store::{Created, Store, StoreError};
