//! Rendering what Postgres reads: the managed configuration file, `pg_hba.conf`,
//! `pg_ident.conf`, the replication password file and the copies of the TLS files ([`tls`]).
//! Pure functions from the validated configuration to text; [`write_all`] puts them on disk
//! atomically, after [`check`] made sure Postgres accepts the values.
//!
//! The user's `postgresql.conf` (initdb's, or one they keep in the data directory) is never
//! edited. Postgres starts with `config_file = <dataDir>/pgwarden.conf`, which reads, in order
//! (later wins): the user's `postgresql.conf`; pgwarden's overridable defaults; the user's
//! `postgres.parameters`; the parameters pgwarden manages (port, sockets, hba, logging,
//! replication). `postgresql.auto.conf` (`ALTER SYSTEM`) is still read last by Postgres.

pub mod check;
mod hba;
mod sync_names;
pub mod tls;

use std::fmt::Write as _;

pub use hba::{render_hba, render_ident};
pub use sync_names::SyncNames;

use crate::api::Role;
use crate::config::Validated;
use crate::osuser::Secret;
use crate::paths::{Paths, write_atomic};

/// The role replicas connect as.
pub const REPLICATION_USER: &str = "streaming_replica";
/// The superuser.
pub const SUPERUSER: &str = "postgres";
/// `log_line_prefix`, which `postgres::logs` parses.
pub const LOG_LINE_PREFIX: &str = "%m [%p] ";

/// Defaults the user may override in `postgres.parameters`.
const DEFAULTS: &[(&str, &str)] = &[
    ("wal_level", "replica"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("wal_keep_size", "512MB"),
    ("password_encryption", "scram-sha-256"),
    ("shared_buffers", "128MB"),
    // A standby whose primary changed reconnects within a second, not five (Postgres'
    // default): a synchronous primary's first commit after a failover waits for it.
    ("wal_retrieve_retry_interval", "1s"),
];

/// Quotes a value for postgresql.conf.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes a value for a libpq connection string.
pub fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// How long, in milliseconds, a replication connection's sent data (a connect's SYN too) may
/// go unacknowledged before the kernel gives up on it.
///
/// Postgres' WAL receiver ignores `connect_timeout`: a connect to an address where nothing
/// answers (a re-created primary pod's old address, still in a DNS cache) hangs through every
/// SYN retry, about two minutes, while synchronous commits wait. The TCP user timeout bounds
/// it to seconds; the next attempt resolves the name again.
pub const TCP_USER_TIMEOUT_MS: u32 = 5000;

/// `primary_conninfo` for a replica of `host:port` (also `pg_basebackup`'s connection).
pub fn primary_conninfo(v: &Validated, paths: &Paths, host: &str, port: u16) -> String {
    format!(
        "host={} port={port} user={REPLICATION_USER} passfile={} application_name={} {} connect_timeout=5 \
         tcp_user_timeout={TCP_USER_TIMEOUT_MS}",
        conninfo_quote(host),
        conninfo_quote(&paths.pgpass().to_string_lossy()),
        conninfo_quote(&v.name),
        tls::ssl_conninfo(v, paths),
    )
}

/// The primary a replica streams from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its instance name.
    pub name: String,
    /// Host of its Postgres.
    pub host: String,
    /// Port of its Postgres.
    pub port: u16,
}

/// The managed parameters, in the order written. `upstream` is the primary a replica
/// streams from (`None` for a primary, or a replica that does not know its primary yet).
pub fn managed_parameters(
    v: &Validated,
    paths: &Paths,
    upstream: Option<&Upstream>,
    synchronous_standby_names: &str,
) -> Vec<(&'static str, String)> {
    let cfg = &v.config;
    let mut p = vec![
        ("listen_addresses", cfg.postgres.listen_addresses.clone()),
        ("port", v.port.to_string()),
        ("unix_socket_directories", paths.run_dir.to_string_lossy().into_owned()),
        // Only Postgres' OS user (and root) may connect over the socket; in a pod that is
        // also the manager's user. The run directory is 0700 besides.
        ("unix_socket_permissions", "0700".into()),
        ("hba_file", paths.hba_file().to_string_lossy().into_owned()),
        ("ident_file", paths.ident_file().to_string_lossy().into_owned()),
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
        ("log_line_prefix", LOG_LINE_PREFIX.into()),
        ("restart_after_crash", "off".into()),
        ("hot_standby", "on".into()),
        ("wal_log_hints", "on".into()),
        ("cluster_name", v.cluster.clone()),
        ("recovery_target_timeline", "latest".into()),
    ];
    p.extend(tls::parameters(v, paths));
    if v.config.backup.is_some() {
        // `always`: standbys archive what they receive (a dead primary's last segments too).
        p.push(("archive_mode", "always".into()));
        p.push(("archive_command", manager_command(paths, "wal-archive %p")));
        p.push(("restore_command", manager_command(paths, "wal-restore %f %p")));
    }
    let conninfo = upstream.map(|u| primary_conninfo(v, paths, &u.host, u.port)).unwrap_or_default();
    p.push(("primary_conninfo", conninfo));
    p.push(("synchronous_standby_names", synchronous_standby_names.to_string()));
    p
}

/// A shell command running this manager's binary as a client of its WAL socket, for
/// Postgres to run (`archive_command`, `restore_command`).
pub fn manager_command(paths: &Paths, args: &str) -> String {
    let exe = std::env::current_exe().unwrap_or_else(|_| "instance-manager".into());
    format!(
        "{} --api {} {args}",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&format!("unix://{}", paths.wal_socket().display()))
    )
}

/// Quotes a word for `sh`.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:+=@".contains(&b)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The upstream the static configuration names (`role: replica` with `primary`).
pub fn configured_upstream(v: &Validated) -> Option<Upstream> {
    match (v.config.role, &v.config.primary) {
        (Role::Replica, Some(p)) => Some(Upstream {
            name: p.host.clone(),
            host: p.host.clone(),
            port: u16::try_from(p.port).unwrap_or(crate::api::DEFAULT_PG_PORT),
        }),
        _ => None,
    }
}

/// The text of `pgwarden.conf`.
pub fn render_conf(v: &Validated, paths: &Paths, upstream: Option<&Upstream>, sync: &str) -> String {
    let mut s = String::from(
        "# Managed by pgwarden: rewritten at every start and configuration change. Do not edit;\n\
         # set postgres.parameters in the instance configuration instead.\n\
         include_if_exists 'postgresql.conf'\n\n# pgwarden defaults\n",
    );
    let user = &v.config.postgres.parameters;
    for (name, value) in DEFAULTS.iter().filter(|(n, _)| !user.contains_key(*n)) {
        let _ = writeln!(s, "{name} = {}", quote(value));
    }
    if v.config.backup.is_some() && !user.contains_key("archive_timeout") {
        // A quiet primary still archives a segment every 5 minutes: a bounded recovery point.
        let _ = writeln!(s, "archive_timeout = '5min'");
    }
    if v.config.postgres.tls.is_some() && !user.contains_key("ssl_min_protocol_version") {
        let _ = writeln!(s, "ssl_min_protocol_version = 'TLSv1.2'");
    }
    s.push_str("\n# postgres.parameters\n");
    for (name, value) in user {
        let _ = writeln!(s, "{name} = {}", quote(value));
    }
    s.push_str("\n# managed by pgwarden\n");
    for (name, value) in managed_parameters(v, paths, upstream, sync) {
        let _ = writeln!(s, "{name} = {}", quote(&value));
    }
    // Present only while a recovery bootstrap replays to its target.
    let _ = writeln!(s, "include_if_exists '{RECOVERY_CONF}'");
    s
}

/// The file holding a recovery bootstrap's target, beside `pgwarden.conf`.
pub const RECOVERY_CONF: &str = "pgwarden-recovery.conf";

/// The `.pgpass` lines for the replication user and, when known, the superuser (pg_rewind
/// connects to the new primary as the superuser).
pub fn render_pgpass(replication: &Secret, superuser: Option<&Secret>) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    let mut s = format!("*:*:*:{REPLICATION_USER}:{}\n", esc(replication.expose()));
    if let Some(su) = superuser {
        s.push_str(&format!("*:*:*:{SUPERUSER}:{}\n", esc(su.expose())));
    }
    s
}

/// Writes `pgwarden.conf`, the hba and ident files into the data directory (which must exist),
/// the replication pgpass into the run directory when a replication password is configured,
/// and Postgres' copies of the TLS files.
pub fn write_all(v: &Validated, paths: &Paths, upstream: Option<&Upstream>, sync: &str) -> std::io::Result<()> {
    let dir = &paths.data_dir;
    tls::install(v, paths)?;
    write_atomic(&dir.join("pgwarden.conf"), render_conf(v, paths, upstream, sync).as_bytes(), 0o600)?;
    let hba = render_hba(&v.config.postgres.pg_hba, v.config.postgres.require_tls);
    write_atomic(&dir.join("pgwarden_hba.conf"), hba.as_bytes(), 0o600)?;
    write_atomic(&dir.join("pgwarden_ident.conf"), render_ident(&manager_user(), &v.os_user.name).as_bytes(), 0o600)?;
    for f in ["pgwarden.conf", "pgwarden_hba.conf", "pgwarden_ident.conf"] {
        v.os_user.chown(&dir.join(f)).map_err(std::io::Error::other)?;
    }
    write_pgpass(v, paths)
}

/// Writes the replication password file used by `primary_conninfo` and `pg_basebackup`.
pub fn write_pgpass(v: &Validated, paths: &Paths) -> std::io::Result<()> {
    let Some(file) = &v.config.credentials.replication_password_file else { return Ok(()) };
    let secret = crate::osuser::read_secret(file).map_err(std::io::Error::other)?;
    let superuser = match &v.config.credentials.superuser_password_file {
        Some(f) => Some(crate::osuser::read_secret(f).map_err(std::io::Error::other)?),
        None => None,
    };
    write_atomic(&paths.pgpass(), render_pgpass(&secret, superuser.as_ref()).as_bytes(), 0o600)?;
    v.os_user.chown(&paths.pgpass()).map_err(std::io::Error::other)
}

fn manager_user() -> String {
    let uid = nix::unistd::Uid::effective();
    nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name).unwrap_or_else(|| uid.to_string())
}
