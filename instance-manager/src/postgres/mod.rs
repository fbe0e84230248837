//! The Postgres instance: the postmaster as a supervised foreground child, its logs, and SQL
//! over the Unix socket.
//!
//! - [`postmaster`]: start (`postgres -D <dataDir> -c config_file=…`, never `pg_ctl`), the
//!   shutdown escalation smart → fast → immediate → SIGKILL.
//! - [`logs`]: Postgres' stderr, one JSON record per line with `"logger":"postgres"`.
//! - [`sql`]: a cached superuser connection over the socket in `runDir`.
//! - [`observe`]: what `/status` reports about Postgres, read with SQL.
//! - [`roles`]: the roles and database a primary must have.

pub mod logs;
pub mod observe;
pub mod postmaster;
pub mod roles;
pub mod sql;

pub use postmaster::{Postmaster, ShutdownMode};
pub use sql::Db;
