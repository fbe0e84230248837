//! The command line: `instance-manager run` (the manager itself), `config check|print` (its
//! configuration, loaded as `run` loads it), and the commands an on-call DBA runs with
//! `kubectl exec <pod> -- instance-manager …`, each a thin client of the HTTP API.

mod args;
mod backup;
mod client;
mod config;
mod diagnose;
mod logs_hint;
mod status;
mod wal;

pub use args::{BackupCommand, Cli, Command, ConfigArgs, ConfigCommand, ConfigFormat, Output, RunArgs};
pub use backup::{backup_command, render_backups};
pub use client::{ApiClient, ApiTarget, ClientError};
pub use config::{config_command, effective, render};
pub use diagnose::{
    CertificateFacts, Check, CheckResult, DataDirFacts, DiskFacts, EXPIRY_WARN, Facts, Outcome, Validity,
    diagnose_command, evaluate_checks,
};
pub use status::{render_status_table, status_command};
pub use wal::{EXIT_FATAL, wal_archive, wal_restore};
