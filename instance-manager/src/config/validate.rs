//! Validation of an [`InstanceConfig`]: pure checks plus read-only looks at the machine
//! (does the bin dir hold Postgres, does the OS user exist, who owns the data dir, is `walDir`
//! this data directory's: `validate_wal_dir.rs`).

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::api::{InstanceConfig, Role};
use crate::osuser::OsUser;

/// Binaries the manager runs from the bin dir.
pub const REQUIRED_BINARIES: [&str; 5] = ["postgres", "initdb", "pg_basebackup", "pg_controldata", "pg_rewind"];

/// Postgres parameters pgwarden sets itself, each with where to configure it instead.
pub const RESERVED_PARAMETERS: &[(&str, &str)] = &[
    ("port", "set postgres.port instead"),
    ("listen_addresses", "set postgres.listenAddresses instead"),
    ("unix_socket_directories", "the socket lives in runDir; set runDir instead"),
    ("unix_socket_permissions", "the socket is reachable by Postgres' OS user only (0700)"),
    ("data_directory", "set dataDir instead"),
    ("config_file", "pgwarden renders the configuration file itself"),
    ("hba_file", "add lines with postgres.pgHba instead"),
    ("ident_file", "pgwarden renders pg_ident.conf itself"),
    ("external_pid_file", "the manager supervises the postmaster directly"),
    ("logging_collector", "Postgres logs go to stderr, which the manager turns into JSON"),
    ("log_destination", "Postgres logs go to stderr, which the manager turns into JSON"),
    ("log_line_prefix", "the manager parses Postgres' log lines with its own prefix"),
    ("restart_after_crash", "the manager restarts Postgres after a crash"),
    ("hot_standby", "replicas always serve reads"),
    ("cluster_name", "set cluster (or CLUSTER_NAME) instead"),
    ("wal_log_hints", "always on so that a former primary can be rewound"),
    ("archive_mode", "WAL archiving is managed by pgwarden"),
    ("archive_command", "WAL archiving is managed by pgwarden"),
    ("archive_library", "WAL archiving is managed by pgwarden"),
    ("restore_command", "WAL restore is managed by pgwarden"),
    ("archive_cleanup_command", "WAL restore is managed by pgwarden"),
    ("primary_conninfo", "set role: replica and primary.host/port instead"),
    ("primary_slot_name", "replication slots are managed by pgwarden"),
    ("promote_trigger_file", "promotion is done by the manager"),
    ("synchronous_standby_names", "synchronous replication is managed by pgwarden"),
    ("recovery_target", "recovery targets belong to a recovery bootstrap"),
    ("recovery_target_lsn", "recovery targets belong to a recovery bootstrap"),
    ("recovery_target_name", "recovery targets belong to a recovery bootstrap"),
    ("recovery_target_time", "recovery targets belong to a recovery bootstrap"),
    ("recovery_target_xid", "recovery targets belong to a recovery bootstrap"),
    ("recovery_target_timeline", "replicas always follow the latest timeline"),
    ("recovery_target_action", "recovery targets belong to a recovery bootstrap"),
    ("recovery_target_inclusive", "recovery targets belong to a recovery bootstrap"),
    ("ssl", "set postgres.tls instead"),
    ("ssl_cert_file", "set postgres.tls.certFile instead"),
    ("ssl_key_file", "set postgres.tls.keyFile instead"),
    ("ssl_ca_file", "set postgres.tls.caFile instead"),
];

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, as written in the file (`postgres.port`).
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// Every problem found, printed one per line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.hint.is_empty() {
                write!(f, "  {}: {}", p.field, p.message)?;
            } else {
                write!(f, "  {}: {} (fix: {})", p.field, p.message, p.hint)?;
            }
        }
        Ok(())
    }
}

/// A configuration that passed validation, with what validation resolved.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The configuration as given (with overrides applied).
    pub config: InstanceConfig,
    /// Instance name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// Directory of the Postgres binaries.
    pub bin_dir: PathBuf,
    /// The OS user Postgres runs as.
    pub os_user: OsUser,
    /// Where the HTTP API listens.
    pub api_listen: SocketAddr,
    /// Postgres' port.
    pub port: u16,
    /// The metrics endpoint and its custom queries.
    pub metrics: super::validate_metrics::MetricsSettings,
}

impl Validated {
    /// The lease timing the configuration asks for (the defaults without a lease; validation
    /// refused any timing that breaks its rules).
    pub fn lease_timing(&self) -> crate::lease::LeaseTiming {
        self.config
            .lease
            .as_ref()
            .and_then(|l| {
                crate::lease::LeaseTiming::from_seconds(
                    l.lease_duration_seconds,
                    l.renew_deadline_seconds,
                    l.retry_period_seconds,
                    l.fence_budget_seconds,
                )
                .ok()
            })
            .unwrap_or_default()
    }

    /// The fence budget: the lease's, or the default when no lease is configured.
    pub fn fence_budget(&self) -> std::time::Duration {
        self.lease_timing().fence_budget
    }

    /// Path of a Postgres binary.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

pub(super) struct Collector(Vec<Problem>);

impl Collector {
    pub(super) fn add(&mut self, field: &str, message: impl Into<String>, hint: impl Into<String>) {
        self.0.push(Problem { field: field.into(), message: message.into(), hint: hint.into() });
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// What a configuration is validated for: the rules differ in one place, `members`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Starting an instance (and `config check`): with a lease, `members` must list it.
    Start,
    /// An edit of the file of a running instance: `members` may leave it out. That is how an
    /// instance learns that it is being removed (the operator rewrites one file for every
    /// member): it then never takes the lease again (docs/architecture.md §4.8).
    Edit,
}

/// Validates `cfg` for a start, returning every problem found. Reads the machine, never
/// writes to it.
pub fn validate(cfg: InstanceConfig) -> Result<Validated, Problems> {
    validate_for(cfg, Purpose::Start)
}

/// Validates `cfg` for `purpose`, returning every problem found. Reads the machine, never
/// writes to it.
pub fn validate_for(cfg: InstanceConfig, purpose: Purpose) -> Result<Validated, Problems> {
    let mut c = Collector(Vec::new());
    let name = required_label(&mut c, "name", cfg.name.as_deref(), "POD_NAME");
    let cluster = required_label(&mut c, "cluster", cfg.cluster.as_deref().or(Some("pgwarden")), "CLUSTER_NAME");
    let os_user = check_os_user(&mut c, &cfg.os_user);
    check_absolute(&mut c, "runDir", &cfg.run_dir);
    if check_absolute(&mut c, "dataDir", &cfg.data_dir)
        && let Some(user) = &os_user
    {
        check_data_dir(&mut c, &cfg.data_dir, user);
    }
    super::validate_wal_dir::check_wal_dir(&mut c, &cfg, os_user.as_ref());
    let bin_dir = resolve_bin_dir(&mut c, cfg.bin_dir.as_deref());
    let port = check_port(&mut c, "postgres.port", cfg.postgres.port);
    let api_listen = check_api_listen(&mut c, &cfg.api.listen);
    if let (Some(a), Some(p)) = (api_listen, port)
        && a.port() == p
    {
        c.add("api.listen", format!("port {p} is also postgres.port"), "give the API and Postgres different ports");
    }
    check_role(&mut c, &cfg);
    check_parameters(&mut c, &cfg);
    check_bootstrap(&mut c, &cfg);
    check_credentials(&mut c, &cfg);
    check_shutdown(&mut c, &cfg);
    check_lease(&mut c, &cfg, name.as_deref(), purpose);
    super::validate_tls::check_tls(&mut c, &cfg);
    if let Some(cluster) = &cluster {
        super::validate_backup::check_backup(&mut c, &cfg, cluster);
    }
    let metrics = super::validate_metrics::check_metrics(&mut c, &cfg, api_listen, port);
    match (c.0.is_empty(), name, cluster, bin_dir, os_user, api_listen, port, metrics) {
        (
            true,
            Some(name),
            Some(cluster),
            Some(bin_dir),
            Some(os_user),
            Some(api_listen),
            Some(port),
            Some(metrics),
        ) => Ok(Validated { config: cfg, name, cluster, bin_dir, os_user, api_listen, port, metrics }),
        _ => Err(Problems(c.0)),
    }
}

/// A DNS label: lower-case letters, digits and `-`, 1 to 63 characters, alphanumeric ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn required_label(c: &mut Collector, field: &str, v: Option<&str>, env: &str) -> Option<String> {
    match v {
        None => {
            c.add(field, "is missing", format!("set {field} in the file or the {env} environment variable"));
            None
        }
        Some(v) if !is_dns_label(v) => {
            c.add(
                field,
                format!("{v:?} is not a DNS label"),
                "use lower-case letters, digits and '-', at most 63 characters",
            );
            None
        }
        Some(v) => Some(v.to_string()),
    }
}

fn check_absolute(c: &mut Collector, field: &str, p: &Path) -> bool {
    if p.is_absolute() {
        return true;
    }
    c.add(
        field,
        format!("{} is not an absolute path", p.display()),
        "use an absolute path such as /var/lib/postgresql/data/pgdata",
    );
    false
}

fn check_os_user(c: &mut Collector, user: &str) -> Option<OsUser> {
    match OsUser::for_postgres(user) {
        Ok(u) => Some(u),
        Err(e) => {
            c.add(
                "osUser",
                e.to_string(),
                "create the user (useradd --system postgres) or set osUser to an existing non-root user",
            );
            None
        }
    }
}

fn check_data_dir(c: &mut Collector, dir: &Path, user: &OsUser) {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.exists()) {
                c.add(
                    "dataDir",
                    format!("parent directory {} does not exist", parent.display()),
                    "create it, or mount the volume there",
                );
            }
            return;
        }
        Err(e) => {
            c.add("dataDir", format!("cannot inspect {}: {e}", dir.display()), "check the path and its permissions");
            return;
        }
    };
    if !meta.is_dir() {
        c.add("dataDir", format!("{} exists and is not a directory", dir.display()), "point dataDir at a directory");
        return;
    }
    if is_mount_point(dir, &meta) {
        c.add(
            "dataDir",
            format!("{} is a mount point", dir.display()),
            "use a subdirectory of the volume, e.g. <mount>/pgdata",
        );
    }
    let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
    if !empty && meta.uid() != user.uid {
        c.add(
            "dataDir",
            format!("{} is owned by uid {}, not by {} (uid {})", dir.display(), meta.uid(), user.name, user.uid),
            format!("chown -R {} {}", user.name, dir.display()),
        );
    }
    if !empty && !dir.join("PG_VERSION").exists() {
        c.add(
            "dataDir",
            format!("{} is not empty and holds no Postgres data directory (no PG_VERSION)", dir.display()),
            "point dataDir at an empty directory or at an existing data directory",
        );
    }
}

pub(super) fn is_mount_point(dir: &Path, meta: &std::fs::Metadata) -> bool {
    match dir.parent().map(std::fs::metadata) {
        Some(Ok(parent)) => parent.dev() != meta.dev(),
        _ => false,
    }
}

fn resolve_bin_dir(c: &mut Collector, configured: Option<&Path>) -> Option<PathBuf> {
    let (dir, field_hint) = match configured {
        Some(d) => (d.to_path_buf(), "set binDir to the directory holding postgres and initdb"),
        None => match find_postgres_on_path() {
            Some(d) => (d, "set binDir explicitly"),
            None => {
                c.add(
                    "binDir",
                    "is not set and no postgres binary was found on PATH",
                    "set binDir, e.g. /usr/lib/postgresql/15/bin",
                );
                return None;
            }
        },
    };
    let missing: Vec<&str> = REQUIRED_BINARIES.iter().copied().filter(|b| !is_executable(&dir.join(b))).collect();
    if missing.is_empty() {
        Some(dir)
    } else {
        c.add("binDir", format!("{} lacks {}", dir.display(), missing.join(", ")), field_hint);
        None
    }
}

fn find_postgres_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("postgres"))
        .find(|p| is_executable(p))
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file() && m.mode() & 0o111 != 0).unwrap_or(false)
}

fn check_port(c: &mut Collector, field: &str, port: u32) -> Option<u16> {
    match u16::try_from(port) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            c.add(field, format!("{port} is not a valid port"), "use a number between 1 and 65535");
            None
        }
    }
}

fn check_api_listen(c: &mut Collector, listen: &str) -> Option<SocketAddr> {
    match listen.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Some(a),
        Ok(_) => {
            c.add("api.listen", "port 0 is not a fixed port", "use a fixed port such as 0.0.0.0:8000");
            None
        }
        Err(_) => {
            c.add("api.listen", format!("{listen:?} is not an address:port"), "use e.g. 0.0.0.0:8000 or [::]:8000");
            None
        }
    }
}

fn check_role(c: &mut Collector, cfg: &InstanceConfig) {
    match (cfg.role, &cfg.primary) {
        (Role::Replica, None) => c.add(
            "primary",
            "is missing for role replica",
            "set primary.host (and primary.port) of the instance to stream from",
        ),
        (Role::Replica, Some(p)) => {
            if p.host.trim().is_empty() || p.host.contains([' ', '\'', '\\', '\n']) {
                c.add(
                    "primary.host",
                    format!("{:?} is not a host name or address", p.host),
                    "use a host name or an IP address",
                );
            }
            check_port(c, "primary.port", p.port);
        }
        (Role::Primary, Some(_)) => {
            c.add("primary", "is set but role is primary", "remove primary, or set role: replica")
        }
        (Role::Primary, None) => {}
    }
}

fn check_parameters(c: &mut Collector, cfg: &InstanceConfig) {
    for (name, value) in &cfg.postgres.parameters {
        let field = format!("postgres.parameters.{name}");
        if let Some((_, hint)) = RESERVED_PARAMETERS.iter().find(|(r, _)| r == name) {
            c.add(&field, "is managed by pgwarden and cannot be set", *hint);
        } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
            || name.is_empty()
        {
            c.add(
                &field,
                "is not a valid parameter name",
                "use Postgres' lower-case parameter names, e.g. shared_buffers",
            );
        } else if value.contains(['\n', '\r', '\0']) {
            c.add(&field, "contains a line break", "put the value on one line");
        } else if name == "wal_level" && !matches!(value.as_str(), "replica" | "logical") {
            c.add(&field, format!("{value:?} would break replication"), "use replica (the default) or logical");
        }
    }
    for (i, line) in cfg.postgres.pg_hba.iter().enumerate() {
        if line.contains(['\n', '\r', '\0']) {
            c.add(&format!("postgres.pgHba[{i}]"), "contains a line break", "give one rule per list item");
        }
    }
    if cfg.postgres.listen_addresses.contains(['\'', '\n']) {
        c.add(
            "postgres.listenAddresses",
            "contains a quote or line break",
            "use a comma-separated list of addresses, or *",
        );
    }
}

fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && s.len() <= 63
}

fn check_bootstrap(c: &mut Collector, cfg: &InstanceConfig) {
    let b = &cfg.bootstrap;
    for (field, v) in [("bootstrap.database", &b.database), ("bootstrap.owner", &b.owner)] {
        if !is_identifier(v) {
            c.add(
                field,
                format!("{v:?} is not a plain identifier"),
                "use lower-case letters, digits and '_', starting with a letter",
            );
        }
    }
    if ["postgres", "template0", "template1"].contains(&b.database.as_str()) {
        c.add("bootstrap.database", format!("{:?} is a system database", b.database), "choose another name, e.g. app");
    }
    if ["postgres", crate::pgconf::REPLICATION_USER].contains(&b.owner.as_str()) || b.owner.starts_with("pg_") {
        c.add("bootstrap.owner", format!("{:?} is reserved", b.owner), "choose another name, e.g. app");
    }
}

fn check_credentials(c: &mut Collector, cfg: &InstanceConfig) {
    let creds = &cfg.credentials;
    let files = [
        ("credentials.superuserPasswordFile", &creds.superuser_password_file),
        ("credentials.appPasswordFile", &creds.app_password_file),
        ("credentials.replicationPasswordFile", &creds.replication_password_file),
    ];
    for (field, file) in files {
        let Some(file) = file else { continue };
        match crate::osuser::read_secret(file) {
            Ok(_) => {}
            Err(e) => c.add(field, e.to_string(), "mount the Secret there, or fix the path"),
        }
    }
    if cfg.role == Role::Replica && creds.replication_password_file.is_none() {
        c.add(
            "credentials.replicationPasswordFile",
            "is missing for role replica",
            "mount the replication Secret and set its path",
        );
    }
}

fn check_shutdown(c: &mut Collector, cfg: &InstanceConfig) {
    let s = &cfg.shutdown;
    if s.smart_timeout_seconds == 0 && s.stop_timeout_seconds == 0 {
        c.add("shutdown.stopTimeoutSeconds", "is 0", "allow Postgres at least a few seconds to stop, e.g. 30");
    }
    if s.stop_timeout_seconds < s.smart_timeout_seconds {
        c.add(
            "shutdown.stopTimeoutSeconds",
            format!("{} is less than smartTimeoutSeconds ({})", s.stop_timeout_seconds, s.smart_timeout_seconds),
            "the stop timeout counts from the start of the stop: make it at least smartTimeoutSeconds",
        );
    }
}

fn check_lease(c: &mut Collector, cfg: &InstanceConfig, name: Option<&str>, purpose: Purpose) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, m) in cfg.members.iter().enumerate() {
        let field = format!("members[{i}]");
        if !is_dns_label(&m.name) {
            c.add(&format!("{field}.name"), format!("{:?} is not a DNS label", m.name), "use the instance (pod) name");
        }
        if !seen.insert(m.name.as_str()) {
            c.add(&format!("{field}.name"), format!("{:?} is listed twice", m.name), "list every member once");
        }
        if m.host.trim().is_empty() || m.host.contains([' ', '\'', '\\', '\n']) {
            c.add(
                &format!("{field}.host"),
                format!("{:?} is not a host name or address", m.host),
                "use a host name or an IP address",
            );
        }
        check_port(c, &format!("{field}.port"), m.port);
        if crate::cli::ApiTarget::parse(&m.api).is_err() {
            c.add(
                &format!("{field}.api"),
                format!("{:?} is not an API address", m.api),
                "use http://HOST:PORT or https://HOST:PORT",
            );
        }
    }
    if let Some(sync) = &cfg.synchronous {
        if cfg.lease.is_none() {
            c.add(
                "synchronous",
                "needs a lease",
                "configure lease (synchronous replication is managed by the HA loop)",
            );
        }
        let others = cfg.members.iter().filter(|m| Some(m.name.as_str()) != name).count();
        if sync.number == 0 || sync.number as usize > others {
            c.add(
                "synchronous.number",
                format!("{} is not between 1 and the number of other members ({others})", sync.number),
                "use 1 for a three-member cluster",
            );
        }
    }
    let Some(lease) = &cfg.lease else { return };
    if let Err(errors) = crate::lease::LeaseTiming::from_seconds(
        lease.lease_duration_seconds,
        lease.renew_deadline_seconds,
        lease.retry_period_seconds,
        lease.fence_budget_seconds,
    ) {
        for e in errors {
            let (field, message) = e.split_once(' ').unwrap_or(("lease", e.as_str()));
            c.add(field, message.to_string(), "");
        }
    }
    match (lease.backend, &lease.path) {
        (crate::api::LeaseBackend::File, None) => {
            c.add("lease.path", "is missing for backend file", "set the path of the shared lease file")
        }
        (crate::api::LeaseBackend::File, Some(p)) if !p.is_absolute() => {
            c.add("lease.path", format!("{} is not an absolute path", p.display()), "use an absolute path");
        }
        _ => {}
    }
    if purpose == Purpose::Edit && cfg.members.is_empty() {
        c.add(
            "members",
            "is empty",
            "list every member of the cluster (an edit may leave out this instance, to remove it, not everyone)",
        );
    }
    if let Some(name) = name
        && purpose == Purpose::Start
        && !cfg.members.iter().any(|m| m.name == name)
    {
        c.add(
            "members",
            format!("does not list this instance ({name})"),
            "list every member of the cluster, this one included",
        );
    }
    if cfg.role == Role::Replica || cfg.primary.is_some() {
        c.add(
            "role",
            "is set together with lease",
            "remove role and primary: with a lease the instances elect their primary",
        );
    }
}
