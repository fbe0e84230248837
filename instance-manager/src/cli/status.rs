//! `instance-manager status`: the `/status` document as a kubectl-like table, or as JSON.

use std::io::Write as _;

use anyhow::Context as _;

use super::client::ApiClient;
use crate::api::{
    BackupStatus, CertificateStatus, InstanceRole, InstanceStatus, LeaseStatus, PostgresProcess, PostgresProcessState,
    ReplicationPeer, Role, WalReceiver,
};

/// Shown for a value the manager could not know.
const MISSING: &str = "-";

/// Prints the instance's status: a table, or with `json` the document as received (pretty
/// printed, fields this CLI does not know included). Returns the process exit code.
pub async fn status_command(client: &ApiClient, json: bool) -> anyhow::Result<i32> {
    let text = if json {
        let document: serde_json::Value = client.get_json("/status").await?;
        serde_json::to_string_pretty(&document)?
    } else {
        render_status_table(&client.get_json("/status").await?)
    };
    write_stdout(&text)?;
    Ok(0)
}

/// The status as `Label:  value` lines, then the connected standbys as a table if any.
pub fn render_status_table(s: &InstanceStatus) -> String {
    let fields = status_fields(s);
    let width = fields.iter().map(|(label, _)| label.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in fields {
        let label = format!("{label}:");
        out.push_str(format!("{label:<width$}  {value}").trim_end());
        out.push('\n');
    }
    if !s.replication.is_empty() {
        out.push('\n');
        out.push_str(&align_columns(&replication_rows(&s.replication)));
    }
    out
}

fn status_fields(s: &InstanceStatus) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("Name", s.name.clone()),
        ("Cluster", s.cluster.clone()),
        ("Role", role_text(s)),
        ("Postgres", postgres_text(&s.postgres)),
        ("Postgres version", or_missing(s.postgres.version.as_ref())),
        ("Timeline", or_missing(s.timeline)),
    ];
    if is_standby(s) {
        fields.extend([
            ("Received LSN", or_missing(s.received_lsn.as_ref())),
            ("Replayed LSN", or_missing(s.replayed_lsn.as_ref())),
            ("Replay lag", s.replay_lag_seconds.map_or_else(|| MISSING.into(), |lag| format!("{lag:.1}s"))),
            ("WAL receiver", s.wal_receiver.as_ref().map_or_else(|| MISSING.into(), wal_receiver_text)),
        ]);
    } else {
        fields.push(("Current LSN", or_missing(s.current_lsn.as_ref())));
    }
    let pending = if s.pending_restart.is_empty() { MISSING.into() } else { s.pending_restart.join(", ") };
    fields.push(("Pending restart", pending));
    if let Some(error) = &s.config_error {
        fields.push(("Config error", error.clone()));
    }
    if let Some(lease) = &s.lease {
        fields.push(("Lease", lease_text(lease)));
        if let Some(m) = &lease.membership {
            fields.push(("Members", membership_text(m)));
        }
    }
    if let Some(b) = &s.backup {
        fields.push(("Last backup", backup_text(b)));
    }
    if !s.tls.is_empty() {
        fields.push(("Certificates", certificates_text(&s.tls, jiff::Timestamp::now())));
    }
    if s.fenced || s.paused {
        let flags = [(s.fenced, "fenced"), (s.paused, "failover paused")];
        fields.push(("Flags", flags.iter().filter(|(on, _)| *on).map(|(_, f)| *f).collect::<Vec<_>>().join(", ")));
    }
    fields.extend([
        ("Data directory", s.data_dir.clone()),
        ("Manager", format!("pid {}, version {}", s.manager_pid, s.manager_version)),
        ("Uptime", format_uptime(s.uptime_seconds)),
    ]);
    fields
}

/// Whether the standby fields apply: as Postgres says, else as the roles say.
fn is_standby(s: &InstanceStatus) -> bool {
    s.in_recovery.unwrap_or(
        s.role == InstanceRole::Replica || (s.role != InstanceRole::Primary && s.configured_role == Role::Replica),
    )
}

fn role_text(s: &InstanceStatus) -> String {
    // With a lease the configured role is ignored: the election decides.
    if s.lease.is_some() {
        format!("{} (elected through the lease)", s.role)
    } else if s.role == s.configured_role {
        s.role.to_string()
    } else {
        format!("{} (configured: {})", s.role, s.configured_role)
    }
}

fn postgres_text(p: &PostgresProcess) -> String {
    let mut parts = vec![state_name(p.state).to_owned()];
    if let Some(pid) = p.pid {
        parts.push(format!("pid {pid}"));
    }
    parts.push(if p.accepting_connections { "accepting connections" } else { "not accepting connections" }.into());
    if p.restarts > 0 {
        parts.push(format!("{} restarts", p.restarts));
    }
    if let Some(exit) = &p.last_exit {
        parts.push(format!("last exit: {exit}"));
    }
    parts.join(", ")
}

/// `held by pg-0 (this instance), term 4, expires in 12.0s`.
fn lease_text(l: &LeaseStatus) -> String {
    let holder = match (&l.holder, l.held_by_me) {
        (Some(holder), true) => format!("held by {holder} (this instance)"),
        (Some(holder), false) => format!("held by {holder}"),
        (None, _) => "not held".to_owned(),
    };
    let expiry = l.expires_in_seconds.map(|s| format!(", expires in {s:.1}s")).unwrap_or_default();
    let error = l.last_error.as_deref().map(|e| format!(", last error: {e}")).unwrap_or_default();
    format!("{holder}, term {}{expiry}{error}", l.term)
}

/// `pg-1, pg-2, pg-3`, with what is not listed or still pending:
/// `pg-2, pg-3 (this instance is not listed); pending: pg-1: …`.
fn membership_text(m: &crate::api::MembershipStatus) -> String {
    let mut text = m.members.join(", ");
    if !m.listed {
        text.push_str(" (this instance is not listed)");
    }
    if !m.pending.is_empty() {
        text.push_str(&format!("; pending: {}", m.pending.join("; ")));
    }
    text
}

/// `20261130T030000Z (pg-1), 5h12m ago; running: 20261130T081200Z; last failure: ...`.
fn backup_text(b: &BackupStatus) -> String {
    let mut parts = vec![match &b.last_backup {
        Some(l) => format!("{} ({}), {} ago", l.id, l.instance, format_uptime(l.age_seconds)),
        None => "none".to_owned(),
    }];
    if let Some(id) = &b.running {
        parts.push(format!("running: {id}"));
    }
    if let Some(e) = &b.last_failure {
        parts.push(format!("last failure: {e}"));
    }
    if let Some(e) = &b.retention_error {
        parts.push(format!("retention failing: {e}"));
    }
    if let Some(t) = b.next_scheduled_at {
        parts.push(format!("next: {t}"));
    }
    parts.join("; ")
}

/// `api expires in 89d23h; postgres EXPIRED 2d1h ago; api_ca expires in 3649d2h`, with a refused
/// rotation's reason.
fn certificates_text(tls: &std::collections::BTreeMap<String, CertificateStatus>, now: jiff::Timestamp) -> String {
    let one = |(purpose, c): (&String, &CertificateStatus)| {
        let left = c.not_after.as_second() - now.as_second();
        let when = if left > 0 {
            format!("expires in {}", format_uptime(left.unsigned_abs()))
        } else {
            format!("EXPIRED {} ago", format_uptime(left.unsigned_abs()))
        };
        let refused =
            c.last_reload_error.as_deref().map(|e| format!(" (last rotation refused: {e})")).unwrap_or_default();
        format!("{purpose} {when}{refused}")
    };
    tls.iter().map(one).collect::<Vec<_>>().join("; ")
}

/// The state as the API spells it.
pub(super) fn state_name(state: PostgresProcessState) -> &'static str {
    state.as_str()
}

/// `streaming from pg-0.pg:5432`.
pub(super) fn wal_receiver_text(w: &WalReceiver) -> String {
    match (&w.sender_host, w.sender_port) {
        (Some(host), Some(port)) => format!("{} from {host}:{port}", w.status),
        (Some(host), None) => format!("{} from {host}", w.status),
        _ => w.status.to_string(),
    }
}

fn replication_rows(peers: &[ReplicationPeer]) -> Vec<Vec<String>> {
    let header = ["NAME", "STATE", "SYNC", "SENT", "FLUSH", "REPLAY", "LAG(bytes)", "LAG(s)"];
    let mut rows = vec![header.map(String::from).to_vec()];
    rows.extend(peers.iter().map(|p| {
        vec![
            p.name.clone(),
            p.state.to_string(),
            p.sync_state.clone(),
            or_missing(p.sent_lsn.as_ref()),
            or_missing(p.flush_lsn.as_ref()),
            or_missing(p.replay_lsn.as_ref()),
            or_missing(p.lag_bytes),
            p.replay_lag_seconds.map_or_else(|| MISSING.into(), |lag| format!("{lag:.1}")),
        ]
    }));
    rows
}

/// Left-aligned columns two spaces apart, no trailing blanks, one line per row.
pub(super) fn align_columns(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().filter_map(|r| r.get(c)).map(String::len).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, &w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn or_missing<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| MISSING.into(), |v| v.to_string())
}

/// kubectl's age style: `45s`, `12m3s`, `5h12m`, `3d4h`.
pub(super) fn format_uptime(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60, seconds % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Writes `text` and a final newline to stdout; a closed pipe is an error, not a panic.
pub(super) fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).context("cannot write to standard output")?;
    if !text.ends_with('\n') {
        out.write_all(b"\n").context("cannot write to standard output")?;
    }
    out.flush().context("cannot write to standard output")
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn peer(name: &str, lag: Option<i64>) -> ReplicationPeer {
        ReplicationPeer {
            name: name.into(),
            client_addr: Some("10.0.0.2".into()),
            state: "streaming".into(),
            sync_state: "async".into(),
            sent_lsn: Some("0/3000060".parse().unwrap()),
            flush_lsn: Some("0/3000060".parse().unwrap()),
            replay_lsn: lag.map(|_| "0/3000000".parse().unwrap()),
            lag_bytes: lag,
            replay_lag_seconds: lag.map(|_| 0.3),
        }
    }

    /// A healthy primary with two streaming standbys.
    pub(in crate::cli) fn primary_status() -> InstanceStatus {
        InstanceStatus {
            name: "pg-0".into(),
            cluster: "main".into(),
            role: InstanceRole::Primary,
            configured_role: Role::Primary,
            postgres: PostgresProcess {
                state: PostgresProcessState::Running,
                pid: Some(4242),
                accepting_connections: true,
                version: Some("15.6".into()),
                restarts: 0,
                last_exit: None,
            },
            in_recovery: Some(false),
            timeline: Some(3),
            system_identifier: Some("7300000000000000001".into()),
            current_lsn: Some("0/3000060".parse().unwrap()),
            received_lsn: None,
            replayed_lsn: None,
            replay_lag_seconds: None,
            wal_receiver: None,
            replication: vec![peer("pg-1", Some(96)), peer("pg-2-long-name", None)],
            pending_restart: vec![],
            config_error: None,
            refused_parameters: vec![],
            lease: None,
            fenced: false,
            priority: 1,
            paused: false,
            archive: None,
            backup: None,
            tls: Default::default(),
            data_dir: "/var/lib/postgresql/data".into(),
            manager_pid: 1,
            manager_version: "0.1.0".into(),
            uptime_seconds: 3_725,
        }
    }

    /// A healthy standby streaming from `pg-0`.
    pub(in crate::cli) fn replica_status() -> InstanceStatus {
        InstanceStatus {
            name: "pg-1".into(),
            role: InstanceRole::Replica,
            configured_role: Role::Replica,
            in_recovery: Some(true),
            current_lsn: None,
            received_lsn: Some("0/3000060".parse().unwrap()),
            replayed_lsn: Some("0/3000000".parse().unwrap()),
            replay_lag_seconds: Some(1.5),
            wal_receiver: Some(WalReceiver {
                status: "streaming".into(),
                sender_host: Some("pg-0.pg".into()),
                sender_port: Some(5432),
            }),
            replication: vec![],
            ..primary_status()
        }
    }

    fn line<'a>(table: &'a str, label: &str) -> &'a str {
        table.lines().find(|l| l.starts_with(&format!("{label}:"))).unwrap_or_else(|| panic!("no {label}:\n{table}"))
    }

    #[test]
    fn members_are_shown_with_what_a_change_still_waits_for() {
        let mut s = primary_status();
        s.lease = Some(
            serde_json::from_value(serde_json::json!({
                "store": "file /l", "holder": "pg-0", "term": 2, "held_by_me": true, "sync_standbys": [],
                "eligible": false, "last_decision": "renew",
                "membership": {"members": ["pg-1", "pg-2"], "listed": false,
                               "pending": ["pg-0: not listed in members but holds the lease"]}
            }))
            .unwrap(),
        );
        let table = render_status_table(&s);
        assert!(
            line(&table, "Members").ends_with(
                "pg-1, pg-2 (this instance is not listed); pending: pg-0: not listed in members but holds the lease"
            ),
            "{table}"
        );
    }

    #[test]
    fn primary_shows_current_lsn_and_standbys() {
        let table = render_status_table(&primary_status());
        assert!(line(&table, "Role").ends_with("  primary"), "{table}");
        assert!(line(&table, "Postgres").ends_with("running, pid 4242, accepting connections"), "{table}");
        assert!(line(&table, "Current LSN").ends_with("0/3000060"), "{table}");
        assert!(line(&table, "Pending restart").ends_with("  -"), "{table}");
        assert!(line(&table, "Uptime").ends_with("1h2m"), "{table}");
        assert!(!table.contains("Received LSN") && !table.contains("Config error"), "{table}");
        let rows: Vec<&str> = table.lines().skip_while(|l| !l.starts_with("NAME")).collect();
        assert_eq!(rows.len(), 3, "{table}");
        let header: Vec<&str> = rows[0].split_whitespace().collect();
        assert_eq!(header, ["NAME", "STATE", "SYNC", "SENT", "FLUSH", "REPLAY", "LAG(bytes)", "LAG(s)"]);
        let pg1: Vec<&str> = rows[1].split_whitespace().collect();
        assert_eq!(pg1, ["pg-1", "streaming", "async", "0/3000060", "0/3000060", "0/3000000", "96", "0.3"]);
        let pg2: Vec<&str> = rows[2].split_whitespace().collect();
        assert_eq!(pg2[5..], ["-", "-", "-"], "{table}");
        assert_eq!(rows[0].find("STATE"), rows[1].find("streaming"), "columns aligned:\n{table}");
    }

    #[test]
    fn replica_shows_receiver_and_lag() {
        let mut status = replica_status();
        status.role = InstanceRole::Starting;
        status.pending_restart = vec!["shared_buffers".into(), "max_connections".into()];
        status.config_error = Some("invalid value for parameter \"work_mem\"".into());
        let table = render_status_table(&status);
        assert!(line(&table, "Role").ends_with("starting (configured: replica)"), "{table}");
        assert!(line(&table, "Received LSN").ends_with("0/3000060"), "{table}");
        assert!(line(&table, "Replayed LSN").ends_with("0/3000000"), "{table}");
        assert!(line(&table, "Replay lag").ends_with("1.5s"), "{table}");
        assert!(line(&table, "WAL receiver").ends_with("streaming from pg-0.pg:5432"), "{table}");
        assert!(line(&table, "Pending restart").ends_with("shared_buffers, max_connections"), "{table}");
        assert!(line(&table, "Config error").contains("work_mem"), "{table}");
        assert!(!table.contains("Current LSN") && !table.contains("NAME"), "{table}");
        let value_column = |l: &str| {
            let after_label = l.find(':').unwrap() + 1;
            l.len() - l[after_label..].trim_start().len()
        };
        let columns: Vec<usize> = table.lines().map(value_column).collect();
        assert!(columns.iter().all(|&c| c == columns[0]), "values aligned {columns:?}:\n{table}");
    }

    #[test]
    fn unknown_values_show_a_dash() {
        let mut status = replica_status();
        (status.in_recovery, status.timeline, status.wal_receiver, status.replay_lag_seconds) =
            (None, None, None, None);
        status.postgres = PostgresProcess {
            state: PostgresProcessState::Crashed,
            pid: None,
            version: None,
            accepting_connections: false,
            ..status.postgres
        };
        let table = render_status_table(&status);
        for label in ["Timeline", "WAL receiver", "Replay lag", "Postgres version"] {
            assert!(line(&table, label).ends_with("  -"), "{label}:\n{table}");
        }
        assert!(line(&table, "Postgres").ends_with("crashed, not accepting connections"), "{table}");
    }

    #[test]
    fn certificates_show_their_expiry_and_refused_rotations() {
        let now: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let cert = |not_after: &str, error: Option<&str>| CertificateStatus {
            file: "/tls/tls.crt".into(),
            key_file: None,
            serial: "01".into(),
            not_before: "2026-01-01T00:00:00Z".parse().unwrap(),
            not_after: not_after.parse().unwrap(),
            reloads_total: None,
            reload_failures_total: None,
            last_reload_error: error.map(str::to_string),
        };
        let mut status = primary_status();
        status.tls.insert("api".into(), cert("2027-03-01T05:00:00Z", Some("the key does not match")));
        status.tls.insert("postgres".into(), cert("2026-11-29T00:00:00Z", None));
        let table = render_status_table(&status);
        assert!(line(&table, "Certificates").contains("api expires in "), "{table}");
        assert!(line(&table, "Certificates").contains("(last rotation refused: the key does not match)"), "{table}");
        assert_eq!(
            certificates_text(&status.tls, now),
            "api expires in 90d5h (last rotation refused: the key does not match); postgres EXPIRED 2d0h ago"
        );
        assert!(!render_status_table(&primary_status()).contains("Certificates"));
    }

    #[test]
    fn uptime_reads_like_kubectl() {
        assert_eq!(format_uptime(45), "45s");
        assert_eq!(format_uptime(723), "12m3s");
        assert_eq!(format_uptime(2 * 86_400 + 5 * 3_600 + 7), "2d5h");
    }
}
