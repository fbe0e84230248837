//! `instance-manager diagnose`: checks of the local instance, each ok / warn / fail with a hint.
//!
//! Pure core, thin shell: [`diagnose_command`] gathers [`Facts`] (the `/status` document,
//! `/readyz`, the data directory's metadata, the free space of its filesystem and, with
//! `walDir`, of the WAL volume `pg_wal` links to, the certificate files `/status` lists) and [`evaluate_checks`] turns them into [`Check`]s
//! without any I/O, so every verdict is unit-tested. The certificate checks are in
//! [`certificates`], the refused Postgres parameters in [`parameters`], the archive's in [`archive`].

mod archive;
mod certificates;
mod parameters;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::client::ApiClient;
use super::status::{state_name, wal_receiver_text, write_stdout};
use crate::api::{InstanceRole, InstanceStatus, PostgresProcessState, Role, WalReceiverStatus};

pub use certificates::{CertificateFacts, EXPIRY_WARN, Validity};

/// Replay lag above which a standby is reported (seconds).
const REPLAY_LAG_WARN_SECONDS: f64 = 60.0;
/// Percentages of the data directory's filesystem in use that warn, then fail.
const DISK_WARN_PERCENT: u64 = 80;
const DISK_FAIL_PERCENT: u64 = 95;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to do.
    Ok,
    /// Works now, but deserves a look.
    Warn,
    /// Broken: the instance does not work as it should.
    Fail,
}

/// One check: what was looked at, the verdict, what was seen and what to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What was checked (`data directory`, `disk space`).
    pub name: &'static str,
    /// The verdict.
    pub outcome: Outcome,
    /// What was seen.
    pub detail: String,
    /// What to do about a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, outcome: Outcome::Ok, detail: detail.into(), hint: None }
    }
    fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { name, outcome: Outcome::Warn, detail: detail.into(), hint: Some(hint.into()) }
    }
    fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { name, outcome: Outcome::Fail, detail: detail.into(), hint: Some(hint.into()) }
    }
}

/// All checks of one run, in order; serialises as a JSON array.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct CheckResult {
    /// The checks.
    pub checks: Vec<Check>,
}

impl From<Vec<Check>> for CheckResult {
    fn from(checks: Vec<Check>) -> Self {
        Self { checks }
    }
}

impl CheckResult {
    fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    /// 0 when nothing failed, 1 otherwise (warnings do not fail).
    pub fn exit_code(&self) -> i32 {
        i32::from(self.count(Outcome::Fail) > 0)
    }

    /// `CHECK  RESULT  DETAIL` lines, hints indented under their check, then a summary.
    pub fn render_table(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).chain(["CHECK".len()]).max().unwrap_or(0);
        let mut out = format!("{:<width$}  RESULT  DETAIL\n", "CHECK");
        for check in &self.checks {
            let result = match check.outcome {
                Outcome::Ok => "ok",
                Outcome::Warn => "warn",
                Outcome::Fail => "fail",
            };
            out.push_str(&format!("{:<width$}  {result:<6}  {}\n", check.name, check.detail));
            if let Some(hint) = &check.hint {
                out.push_str(&format!("{:indent$}hint: {hint}\n", "", indent = width + 10));
            }
        }
        let (fails, warns, oks) = (self.count(Outcome::Fail), self.count(Outcome::Warn), self.count(Outcome::Ok));
        let plural = if warns == 1 { "" } else { "s" };
        out.push_str(&format!("\n{fails} failed, {warns} warning{plural}, {oks} ok\n"));
        out
    }
}

/// Everything the checks look at, gathered by [`diagnose_command`].
#[derive(Debug, Clone)]
pub struct Facts {
    /// Where the manager was asked (`unix:///run/pgwarden/manager.sock`).
    pub api_target: String,
    /// `GET /status`, or why it failed: the reason a check shows, not an error to match on.
    pub status: Result<InstanceStatus, String>,
    /// Status code of `GET /readyz`; `None` when it was not asked or not answered.
    pub readyz: Option<u16>,
    /// The data directory, when its path is known (`--data-dir` or the status).
    pub data_dir: Option<DataDirFacts>,
    /// Space on the data directory's filesystem, when the directory exists, or why it could
    /// not be measured (the reason the disk check shows).
    pub disk: Option<Result<DiskFacts, String>>,
    /// With `pg_wal` a link to another filesystem (`walDir`, a volume of its own): where it
    /// points and the space there, or why it could not be measured. Postgres stops when
    /// either volume fills up.
    pub wal_disk: Option<(PathBuf, Result<DiskFacts, String>)>,
    /// The certificate files of the certificates `/status` lists as in use, read now.
    pub certificates: Vec<CertificateFacts>,
    /// When the facts were gathered: certificates' validity is judged at this time.
    pub now: jiff::Timestamp,
}

/// Metadata of the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDirFacts {
    /// Its path.
    pub path: PathBuf,
    /// Why it could not be inspected (other than not existing).
    pub inspect_error: Option<String>,
    /// Whether the path exists.
    pub exists: bool,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Permission bits (`0o700`).
    pub mode: u32,
    /// Owner of the directory.
    pub owner_uid: u32,
    /// Owner of `PG_VERSION` (the directory's own owner without it): Postgres refuses to
    /// start when the directory is not owned by the user that owns the cluster's files.
    pub expected_owner_uid: u32,
    /// Whether `PG_VERSION` is present, i.e. the directory was initialised.
    pub has_pg_version: bool,
}

/// Space on a filesystem, as seen by an unprivileged user (root's reserve counts as used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFacts {
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Bytes an unprivileged user can still write.
    pub available_bytes: u64,
}

/// Runs the checks and prints them as a table (or a JSON array with `json`). Returns the
/// exit code: 0 when no check failed, 1 otherwise. `data_dir_override` (`--data-dir`) is
/// checked even when the manager is unreachable.
pub async fn diagnose_command(
    client: &ApiClient,
    data_dir_override: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<i32> {
    let facts = gather_facts(client, data_dir_override).await;
    let result = CheckResult::from(evaluate_checks(&facts));
    let text = if json { serde_json::to_string_pretty(&result)? } else { result.render_table() };
    write_stdout(&text)?;
    Ok(result.exit_code())
}

async fn gather_facts(client: &ApiClient, data_dir_override: Option<PathBuf>) -> Facts {
    let status = client.get_json::<InstanceStatus>("/status").await.map_err(|e| e.message());
    let readyz = match &status {
        Ok(_) => client.get_raw("/readyz").await.ok().map(|(code, _)| code),
        Err(_) => None,
    };
    let path = data_dir_override.or_else(|| status.as_ref().ok().map(|s| PathBuf::from(&s.data_dir)));
    let data_dir = path.as_deref().map(inspect_data_dir);
    let disk = data_dir.as_ref().filter(|d| d.exists).map(|d| filesystem_space(&d.path));
    let wal_disk = data_dir.as_ref().filter(|d| d.exists).and_then(|d| wal_volume_space(&d.path));
    let now = jiff::Timestamp::now();
    let certificates = status.as_ref().map(|s| certificates::gather(&s.tls, now)).unwrap_or_default();
    Facts { api_target: client.target().to_string(), status, readyz, data_dir, disk, wal_disk, certificates, now }
}

/// The space where `<data_dir>/pg_wal` links to, when it is a link to another filesystem.
fn wal_volume_space(data_dir: &Path) -> Option<(PathBuf, Result<DiskFacts, String>)> {
    let pg_wal = data_dir.join("pg_wal");
    let target = std::fs::read_link(&pg_wal).ok()?;
    let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    // A dangling link (the volume is not mounted) is measured too: its error is the finding.
    if device(&pg_wal).is_some() && device(&pg_wal) == device(data_dir) {
        return None;
    }
    Some((data_dir.join(target), filesystem_space(&pg_wal)))
}

fn inspect_data_dir(path: &Path) -> DataDirFacts {
    let mut facts = DataDirFacts {
        path: path.to_owned(),
        inspect_error: None,
        exists: false,
        is_dir: false,
        mode: 0,
        owner_uid: 0,
        expected_owner_uid: 0,
        has_pg_version: false,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return facts,
        Err(e) => return DataDirFacts { inspect_error: Some(e.to_string()), ..facts },
    };
    (facts.exists, facts.is_dir, facts.mode, facts.owner_uid) = (true, meta.is_dir(), meta.mode() & 0o7777, meta.uid());
    facts.expected_owner_uid = meta.uid();
    match std::fs::metadata(path.join("PG_VERSION")) {
        Ok(pg_version) => (facts.has_pg_version, facts.expected_owner_uid) = (true, pg_version.uid()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {}
        Err(e) => facts.inspect_error = Some(format!("cannot read PG_VERSION: {e}")),
    }
    facts
}

/// Space on `path`'s filesystem; `Err` is the reason [`Facts::disk`] keeps for its check.
fn filesystem_space(path: &Path) -> Result<DiskFacts, String> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs {}: {e}", path.display()))?;
    let fragment = stat.fragment_size() as u64;
    Ok(DiskFacts {
        total_bytes: (stat.blocks() as u64).saturating_mul(fragment),
        available_bytes: (stat.blocks_available() as u64).saturating_mul(fragment),
    })
}

/// The checks, in the order a person would look: the manager, the files, Postgres, its role.
pub fn evaluate_checks(f: &Facts) -> Vec<Check> {
    let mut checks = vec![manager_check(f), data_dir_check(f.data_dir.as_ref())];
    if let (Some(disk), Some(dir)) = (&f.disk, &f.data_dir) {
        checks.push(disk_check("disk space", disk, &dir.path));
    }
    if let Some((path, disk)) = &f.wal_disk {
        checks.push(disk_check("WAL disk space", disk, path));
    }
    if let Ok(s) = &f.status {
        checks.extend([postgres_check(s), connections_check(s, f.readyz)]);
        checks.extend(replication_checks(s));
        checks.extend([pending_restart_check(s), config_error_check(s)]);
        checks.extend(parameters::parameters_check(s));
        checks.extend(lease_check(s));
        checks.extend(membership_check(s));
        checks.extend(routing_check(s));
        checks.extend(archive::archive_checks(s));
    }
    checks.extend(f.certificates.iter().map(|c| certificates::certificate_check(c, f.now)));
    checks
}

/// Membership: is this instance listed, and is a change of `members` still under way?
fn membership_check(s: &InstanceStatus) -> Option<Check> {
    let m = s.lease.as_ref()?.membership.as_ref()?;
    let members = m.members.join(", ");
    Some(if !m.listed {
        Check::warn(
            "membership",
            format!("this instance is not listed in members ({members}): it never takes the lease"),
            "it is being removed; if it holds the lease, switch over (instance-manager switchover) before stopping it",
        )
    } else if !m.pending.is_empty() {
        Check::warn(
            "membership",
            format!("a change is under way: {}", m.pending.join("; ")),
            "it completes by itself (see docs/architecture.md §4.8)",
        )
    } else {
        Check::ok("membership", members)
    })
}

/// Routing: did the last write of the `-rw` EndpointSlice or of a role label succeed?
fn routing_check(s: &InstanceStatus) -> Option<Check> {
    let e = s.lease.as_ref()?.routing_error.as_ref()?;
    Some(Check::fail(
        "routing",
        e.clone(),
        "clients of the -rw Service may not reach this primary; check POD_IP (status.podIP) and the RBAC for endpointslices and pods",
    ))
}

/// Leadership: can this instance read the lease, and does what it runs agree with it?
fn lease_check(s: &InstanceStatus) -> Option<Check> {
    let l = s.lease.as_ref()?;
    let holder = l.holder.as_deref().unwrap_or("nobody");
    Some(if let (Some(e), Some(age)) = (&l.last_error, l.failsafe_confirmed_age_seconds) {
        Check::warn(
            "lease",
            format!(
                "the lease store ({}) does not answer ({e}); failsafe: every member acknowledged this primary {age:.1} s ago",
                l.store
            ),
            "writes go on while every member acknowledges; check the API server",
        )
    } else if let Some(e) = &l.last_error {
        let failing = l.store_failing_seconds.map(|s| format!(" for {s:.0} s")).unwrap_or_default();
        let refusal = l.failsafe_refusal.as_deref().map(|r| format!("; failsafe refused by {r}")).unwrap_or_default();
        Check::fail(
            "lease",
            format!("the lease store ({}) failed{failing}: {e}{refusal}", l.store),
            "a primary fences itself when it cannot renew; check the API server / lease file and this pod's RBAC",
        )
    } else if s.role == InstanceRole::Primary && !l.held_by_me {
        Check::fail(
            "lease",
            format!("postgres runs as primary but the lease is held by {holder}"),
            "it is being fenced; see the log",
        )
    } else if s.role == InstanceRole::Replica && !l.eligible {
        Check::warn(
            "lease",
            format!(
                "held by {holder}, term {}; this replica cannot be promoted: {}",
                l.term,
                l.not_eligible_because.as_deref().unwrap_or("unknown")
            ),
            "failover needs at least one eligible replica",
        )
    } else {
        let expiry = l.expires_in_seconds.map(|e| format!(", expires in {e:.1} s unless renewed")).unwrap_or_default();
        Check::ok("lease", format!("held by {holder}, term {}{expiry}", l.term))
    })
}

fn manager_check(f: &Facts) -> Check {
    match &f.status {
        Ok(s) => Check::ok(
            "manager reachable",
            format!(
                "{} answered: manager {} (pid {}), {} {}",
                f.api_target, s.manager_version, s.manager_pid, s.role, s.name
            ),
        ),
        Err(e) => Check::fail(
            "manager reachable",
            e.clone(),
            format!(
                "is the instance manager running (its log: {})? pass --api URL if it listens elsewhere, \
                 --data-dir PATH to check the files anyway",
                crate::cli::logs_hint::manager_log()
            ),
        ),
    }
}

fn data_dir_check(dir: Option<&DataDirFacts>) -> Check {
    const NAME: &str = "data directory";
    let Some(d) = dir else {
        return Check::warn(NAME, "not checked: its path is unknown without /status", "pass --data-dir PATH");
    };
    let path = d.path.display();
    if let Some(e) = &d.inspect_error {
        return Check::fail(
            NAME,
            format!("cannot inspect {path}: {e}"),
            "run diagnose as root or as the postgres user",
        );
    }
    if !d.exists {
        let hint = "is the volume mounted (kubectl describe pod)? is the path right (--data-dir)?";
        return Check::fail(NAME, format!("{path} does not exist"), hint);
    }
    if !d.is_dir {
        return Check::fail(NAME, format!("{path} is not a directory"), "point --data-dir at the data directory");
    }
    if d.mode != 0o700 && d.mode != 0o750 {
        let detail = format!("{path} has mode {:04o}; Postgres requires 0700 or 0750", d.mode);
        return Check::fail(NAME, detail, format!("chmod 0700 {path}"));
    }
    if d.owner_uid != d.expected_owner_uid {
        let detail = format!("{path} is owned by uid {} but PG_VERSION by uid {}", d.owner_uid, d.expected_owner_uid);
        return Check::fail(NAME, detail, format!("chown -R {} {path}", d.expected_owner_uid));
    }
    if !d.has_pg_version {
        let hint = "the directory was never initialised (bootstrap still running or failed?) or the path is wrong";
        return Check::fail(NAME, format!("{path} has no PG_VERSION"), hint);
    }
    Check::ok(NAME, format!("{path}, mode {:04o}, owner uid {}", d.mode, d.owner_uid))
}

fn disk_check(name: &'static str, disk: &Result<DiskFacts, String>, path: &Path) -> Check {
    let d = match disk {
        Ok(d) if d.total_bytes > 0 => d,
        Ok(_) => return Check::warn(name, "the filesystem reports a size of 0", "check the volume"),
        Err(e) => return Check::warn(name, format!("cannot measure: {e}"), "check the volume (df -h)"),
    };
    let used = d.total_bytes.saturating_sub(d.available_bytes);
    let percent = u64::try_from(u128::from(used) * 100 / u128::from(d.total_bytes)).unwrap_or(100);
    let detail = format!(
        "{percent}% used, {} free of {} under {}",
        human_bytes(d.available_bytes),
        human_bytes(d.total_bytes),
        path.display()
    );
    if percent >= DISK_FAIL_PERCENT {
        Check::fail(name, detail, "grow the volume (PVC) now: Postgres stops when it cannot write WAL")
    } else if percent >= DISK_WARN_PERCENT {
        Check::warn(name, detail, "grow the volume (PVC) before it fills up")
    } else {
        Check::ok(name, detail)
    }
}

fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let (mut value, mut unit) = (bytes as f64, 0);
    while value >= 1024.0 && unit + 1 < units.len() {
        (value, unit) = (value / 1024.0, unit + 1);
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", units[unit]) }
}

fn postgres_check(s: &InstanceStatus) -> Check {
    const NAME: &str = "postgres running";
    let p = &s.postgres;
    let version = p.version.as_deref().unwrap_or("unknown version");
    match (p.state, p.pid) {
        (PostgresProcessState::Running, Some(pid)) => Check::ok(NAME, format!("pid {pid}, {version}")),
        (PostgresProcessState::Running, None) => Check::fail(
            NAME,
            "running but without a known pid",
            format!("check the manager's log ({})", crate::cli::logs_hint::manager_log()),
        ),
        (PostgresProcessState::Stopped, _) if s.fenced || s.role == InstanceRole::Fenced => {
            Check::warn(NAME, "stopped: the instance is fenced", "instance-manager unfence")
        }
        (state @ (PostgresProcessState::Starting | PostgresProcessState::Bootstrapping), _) => Check::warn(
            NAME,
            state_name(state),
            format!("wait a little; if it stays so, read the log ({})", crate::cli::logs_hint::manager_log()),
        ),
        (state, _) => {
            let exit = p.last_exit.as_deref().map(|e| format!(", last exit: {e}")).unwrap_or_default();
            let detail = format!("{}{exit}, {} restarts", state_name(state), p.restarts);
            Check::fail(NAME, detail, format!("read the Postgres log ({})", crate::cli::logs_hint::manager_log()))
        }
    }
}

fn connections_check(s: &InstanceStatus, readyz: Option<u16>) -> Check {
    const NAME: &str = "accepting connections";
    let ready = match readyz {
        Some(200) => "ready".to_owned(),
        Some(code) => format!("not ready (/readyz answered {code})"),
        None => "readiness unknown (/readyz did not answer)".to_owned(),
    };
    match (s.postgres.accepting_connections, readyz) {
        (false, _) => Check::fail(
            NAME,
            format!("no; {ready}"),
            "Postgres is down or still recovering: see \"postgres running\" and the log",
        ),
        (true, Some(200)) => Check::ok(NAME, format!("yes; {ready}")),
        (true, _) => Check::warn(
            NAME,
            format!("yes; {ready}"),
            "the pod gets no Service traffic; the replication checks below say why",
        ),
    }
}

fn replication_checks(s: &InstanceStatus) -> Vec<Check> {
    match s.role.configured().unwrap_or(s.configured_role) {
        Role::Primary => vec![primary_replication_check(s)],
        Role::Replica => {
            let mut checks = vec![replica_streaming_check(s)];
            checks.extend(replay_lag_check(s));
            checks
        }
    }
}

fn primary_replication_check(s: &InstanceStatus) -> Check {
    if s.replication.is_empty() {
        let hint = "replicas may be down or unable to reach this primary; run diagnose in a replica pod";
        return Check::warn("replication", "no standby connected", hint);
    }
    let peers: Vec<String> = s.replication.iter().map(|p| format!("{} {}", p.name, p.state)).collect();
    Check::ok("replication", format!("{} standbys connected: {}", peers.len(), peers.join(", ")))
}

fn replica_streaming_check(s: &InstanceStatus) -> Check {
    match &s.wal_receiver {
        Some(w) if w.status == WalReceiverStatus::Streaming => Check::ok("replication", wal_receiver_text(w)),
        other => {
            let seen = other.as_ref().map_or_else(|| "no WAL receiver running".to_owned(), wal_receiver_text);
            Check::fail(
                "replication",
                format!("not streaming: {seen}"),
                "check primary_conninfo and that the primary accepts connections from this pod \
                 (the Postgres log says why the WAL receiver stopped)",
            )
        }
    }
}

fn replay_lag_check(s: &InstanceStatus) -> Option<Check> {
    let lag = s.replay_lag_seconds?;
    let detail = format!("{lag:.1}s since the last replayed transaction committed on the primary");
    Some(if lag > REPLAY_LAG_WARN_SECONDS {
        let hint = "the standby replays slower than the primary writes, or the primary has been idle (then no harm)";
        Check::warn("replay lag", detail, hint)
    } else {
        Check::ok("replay lag", detail)
    })
}

fn pending_restart_check(s: &InstanceStatus) -> Check {
    if s.pending_restart.is_empty() {
        return Check::ok("pending restart", "none");
    }
    Check::warn(
        "pending restart",
        format!("changed, applied only after a restart: {}", s.pending_restart.join(", ")),
        "`instance-manager restart` is not available yet: restart the pod (kubectl delete pod POD)",
    )
}

fn config_error_check(s: &InstanceStatus) -> Check {
    match &s.config_error {
        None => Check::ok("configuration", "the last reload was applied"),
        Some(e) => Check::fail(
            "configuration",
            e.clone(),
            "fix the configuration (the cluster spec or config file); the previous settings stay in effect",
        ),
    }
}

#[cfg(test)]
mod tests;
