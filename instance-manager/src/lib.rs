//! pgwarden's instance manager: PID 1 of every PostgreSQL pod, and its CLI.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`api`] | the contract types (the `pgwarden-contract` crate): `InstanceConfig`, `InstanceStatus`, error body |
//! | [`config`] | loading `InstanceConfig` (file + env + flags), validation (for a start or an edit), change notification |
//! | [`supervisor`] | PID 1: spawning children, the one reaper that owns every `waitpid` |
//! | [`postgres`] | the postmaster: start, shutdown escalation, logs, SQL over the socket |
//! | [`pgdata`] | the data directory: initdb, clone (pg_basebackup), signal files, `pg_wal` on its own volume (`walDir`) |
//! | [`pgconf`] | rendering `pgwarden.conf` (with `synchronous_standby_names`), `pg_hba.conf`, `pg_ident.conf`, pgpass |
//! | [`archive`] | the WAL archive in an object store: the archiver, the restorer, gaps |
//! | [`backup`] | base backups: taking, the catalog, retention, restore, the recovery bootstrap |
//! | [`instance`] | the state the API reads, the loop of `instance-manager run` (the one owner of the postmaster) and the commands the two loops send each other |
//! | [`lease`] | `LeaseStore` (compare-and-swap) with `kubernetes` and `file` backends |
//! | [`ha`] | the election: pure decision, the loop that owns the lease (on its own thread), membership changes, the deadman |
//! | [`failsafe`] | the promises a member gives a primary during a lease-store outage |
//! | [`peers`] | reading the other members' `/status` |
//! | [`routing`] | the `-rw` EndpointSlice and the pod's role label |
//! | [`jobs`] | base backups on request and on schedule, the archive audit |
//! | [`clock`] | `CLOCK_BOOTTIME` instants for every safety deadline |
//! | [`http`] | the axum server, one route per file |
//! | [`metrics`] | what is measured: families (CloudNativePG's names where it has them), queries |
//! | [`exporter`] | serving the metrics on their own port from the instance's snapshots |
//! | [`tls`] | rustls: certificates from files, rotation, their expiry, the HTTPS listener, tokio-postgres over TLS |
//! | [`cli`] | the CLI's client of the API, `status`, `diagnose`, `config check` and `config print` |
//! | [`paths`] | where every file of an instance lives; atomic writes |
//! | [`osuser`] | the OS user Postgres runs as; secret files |
//! | [`logging`] | JSON logs on stdout |
//! | [`tasks`] | structured shutdown: every long-lived task, ended and accounted for at exit |
//! | `testkit` | (feature `testkit`) temporary instances for integration tests |
//!
//! Dependencies point down: `main` wires `http`, `exporter`, `jobs` and `ha` onto `instance`,
//! which never calls them (`docs/architecture.md` §2).

pub use pgwarden_contract as api;
pub mod archive;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod exporter;
pub mod failsafe;
pub mod ha;
pub mod http;
pub mod instance;
pub mod jobs;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod osuser;
pub mod paths;
pub mod peers;
pub mod pgconf;
pub mod pgdata;
pub mod postgres;
pub mod routing;
pub mod supervisor;
pub mod tasks;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;
