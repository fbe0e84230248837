//! `pgwarden_…`: the manager's own figures — role, lease, changes of primary, fencing,
//! Postgres restarts, the WAL archive, base backups, certificates, build — read from
//! snapshots the manager already keeps for `/status` ([`ManagerView`]); nothing here asks
//! the HA loop or Postgres anything.

use std::collections::BTreeMap;

use crate::api::{
    ArchiveStatus, BackupStatus, CertificateStatus, InstanceRole, LeaseStatus, PostgresProcessState, TransitionKind,
};
use crate::instance::{Instance, ProcessState};
use crate::postgres::observe::Observed;

use crate::metrics::family::{Sheet, labels};

/// Every family [`render`] may produce (custom queries may not take these names).
pub use crate::metrics::family::MANAGER_FAMILIES as FAMILIES;

/// Every role [`render`] reports (one sample each, 1 for the current one).
pub const ROLES: [InstanceRole; 7] = InstanceRole::ALL;

/// What the manager knows, copied out of the [`Instance`] at the start of a scrape.
#[derive(Debug, Clone)]
pub struct ManagerView {
    /// Instance name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// The supervised postmaster.
    pub process: ProcessState,
    /// Fenced by an operator.
    pub fenced: bool,
    /// Automatic failover paused.
    pub paused: bool,
    /// The HA loop's view of the lease (`None` without a lease).
    pub lease: Option<LeaseStatus>,
    /// The WAL archive (`None` without a backup store).
    pub archive: Option<ArchiveStatus>,
    /// Base backups (`None` without a backup store).
    pub backup: Option<BackupStatus>,
    /// The certificates in use by purpose (empty without TLS).
    pub tls: BTreeMap<String, CertificateStatus>,
    /// `synchronous.number` of the configuration.
    pub sync_expected: Option<u32>,
    /// Seconds since the manager started.
    pub uptime_seconds: f64,
}

impl ManagerView {
    /// The snapshot of `instance` (locks held for a copy each; no I/O but what `/status`
    /// does too: the count of `.ready` files, and reading Postgres' certificate copies).
    pub fn of(instance: &Instance, uptime_seconds: f64) -> Self {
        let v = instance.config();
        Self {
            name: v.name.clone(),
            cluster: v.cluster.clone(),
            process: instance.process(),
            fenced: instance.is_fenced(),
            paused: instance.is_paused(),
            lease: instance.lease_status(),
            archive: instance.archiver.as_ref().map(|a| a.status()),
            backup: instance.archiver.as_ref().map(|_| instance.backups.status()),
            tls: instance.tls_status(),
            sync_expected: v.config.synchronous.as_ref().map(|s| s.number),
            uptime_seconds,
        }
    }

    /// The role `/status` would report, given what SQL said about recovery (`None`: Postgres
    /// did not answer).
    pub fn role(&self, in_recovery: Option<bool>) -> InstanceRole {
        if self.fenced && self.process.state != PostgresProcessState::Running {
            return InstanceRole::Fenced;
        }
        let observed = in_recovery.map(|in_recovery| Observed { in_recovery, ..Observed::default() });
        crate::instance::role_name(self.process.state, observed.as_ref())
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn seconds(t: jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// Adds the manager's families for `view` at `now`.
pub fn render(sheet: &mut Sheet, view: &ManagerView, in_recovery: Option<bool>, now: jiff::Timestamp) {
    let version = env!("CARGO_PKG_VERSION");
    sheet.gauge(
        "pgwarden_build_info",
        "The instance manager's version, instance and cluster (always 1)",
        labels([("version", version), ("instance", &view.name), ("cluster", &view.cluster)]),
        1.0,
    );
    let role = view.role(in_recovery);
    for r in ROLES {
        let help = "The instance's role: 1 for the current one (primary, replica, starting, stopping, stopped, crashed, fenced)";
        sheet.gauge("pgwarden_instance_role", help, labels([("role", r.as_str())]), flag(r == role));
    }
    sheet.gauge0("pgwarden_fenced", "1 while an operator keeps Postgres stopped (fence)", flag(view.fenced));
    sheet.gauge0("pgwarden_paused", "1 while automatic failover is paused", flag(view.paused));
    sheet.counter0(
        "pgwarden_postgres_restarts_total",
        "Unplanned restarts of Postgres (after a crash) since the manager started",
        f64::from(view.process.restarts),
    );
    sheet.gauge0("pgwarden_manager_uptime_seconds", "Seconds since the instance manager started", view.uptime_seconds);
    if let Some(lease) = &view.lease {
        render_lease(sheet, lease);
    }
    if let Some(archive) = &view.archive {
        render_archive(sheet, archive, now);
    }
    if let Some(backup) = &view.backup {
        render_backup(sheet, backup);
    }
    render_tls(sheet, &view.tls);
}

fn render_tls(sheet: &mut Sheet, certificates: &BTreeMap<String, CertificateStatus>) {
    for (purpose, c) in certificates {
        sheet.gauge(
            "pgwarden_tls_certificate_expiration_timestamp_seconds",
            "notAfter of the certificate in use (Unix time), by purpose (api, api_ca, postgres, postgres_ca)",
            labels([("purpose", purpose)]),
            seconds(c.not_after),
        );
        if let Some(n) = c.reloads_total {
            sheet.counter(
                "pgwarden_tls_certificate_reloads_total",
                "Rotated certificate files taken into use without a restart",
                labels([("purpose", purpose)]),
                n as f64,
            );
        }
        if let Some(n) = c.reload_failures_total {
            sheet.counter(
                "pgwarden_tls_certificate_reload_failures_total",
                "Rotated certificate files refused (unreadable, key not matching); the previous ones stay in use",
                labels([("purpose", purpose)]),
                n as f64,
            );
        }
    }
}

fn render_lease(sheet: &mut Sheet, l: &LeaseStatus) {
    sheet.gauge0("pgwarden_lease_held", "1 while this instance holds the lease with a fresh renew", flag(l.held_by_me));
    if let Some(holder) = &l.holder {
        sheet.gauge(
            "pgwarden_lease_holder",
            "The lease's holder as this instance sees it (always 1)",
            labels([("holder", holder)]),
            1.0,
        );
    }
    sheet.gauge0("pgwarden_lease_term", "The lease's term (leaseTransitions), the fencing token", l.term as f64);
    if let Some(age) = l.renew_age_seconds {
        sheet.gauge0(
            "pgwarden_lease_renew_age_seconds",
            "Holder: seconds since the send of the last successful renew",
            age,
        );
    }
    if let Some(left) = l.expires_in_seconds {
        sheet.gauge0("pgwarden_lease_expires_in_seconds", "Seconds until the lease expires as seen from here", left);
    }
    sheet.counter0(
        "pgwarden_lease_renewals_total",
        "Successful renews of the lease by this instance",
        l.renewals_total as f64,
    );
    sheet.counter0(
        "pgwarden_lease_renew_failures_total",
        "Renews of the lease that failed (store error, deadline, lost race)",
        l.renew_failures_total as f64,
    );
    sheet.gauge0(
        "pgwarden_lease_store_error",
        "1 when the last read of the lease store failed",
        flag(l.last_error.is_some()),
    );
    sheet.gauge0(
        "pgwarden_lease_store_failing_seconds",
        "Seconds since the lease store stopped answering (0 while it answers)",
        l.store_failing_seconds.unwrap_or(0.0),
    );
    sheet.gauge0(
        "pgwarden_routing_error",
        "1 while the last write of routing (the -rw EndpointSlice or a role label) failed",
        flag(l.routing_error.is_some()),
    );
    sheet.gauge0("pgwarden_lease_eligible", "1 when this instance could be promoted now", flag(l.eligible));
    for kind in TransitionKind::ALL {
        let count = l.transitions.get(&kind).cloned().unwrap_or_default();
        sheet.counter(
            "pgwarden_primary_transitions_total",
            "Changes of primary that made this instance the primary, by kind",
            labels([("kind", kind.as_str())]),
            count.total as f64,
        );
        if count.total > 0 {
            sheet.gauge(
                "pgwarden_primary_transition_last_duration_seconds",
                "From the decision to the promoted primary accepting writes, for the last change of that kind",
                labels([("kind", kind.as_str())]),
                count.last_duration_ms as f64 / 1000.0,
            );
        }
    }
}

fn render_archive(sheet: &mut Sheet, a: &ArchiveStatus, now: jiff::Timestamp) {
    sheet.counter0(
        "pgwarden_wal_archive_archived_total",
        "WAL files archived by this manager since it started",
        a.archived_total as f64,
    );
    sheet.counter0(
        "pgwarden_wal_archive_failures_total",
        "Failed attempts to archive a WAL file since the manager started",
        a.failures_total as f64,
    );
    if let Some(t) = a.last_archived_at {
        sheet.gauge0(
            "pgwarden_wal_archive_last_archived_timestamp_seconds",
            "When a WAL file was last archived (Unix time)",
            seconds(t),
        );
        let age = now.duration_since(t).as_secs_f64().max(0.0);
        sheet.gauge0(
            "pgwarden_wal_archive_last_archived_age_seconds",
            "Seconds since a WAL file was last archived",
            age,
        );
    }
    if let Some(t) = a.last_failed_at {
        sheet.gauge0(
            "pgwarden_wal_archive_last_failed_timestamp_seconds",
            "When archiving last failed (Unix time)",
            seconds(t),
        );
    }
    if let Some(backlog) = a.backlog {
        sheet.gauge0(
            "pgwarden_wal_archive_backlog_files",
            "WAL files Postgres marked ready and not yet archived (archive_status/*.ready)",
            backlog as f64,
        );
    }
    sheet.gauge0(
        "pgwarden_archive_store_lost",
        "1 while archiving is refused because the store lost its identity (cluster.json: moved or deleted)",
        flag(a.store_problem.is_some()),
    );
    if let Some(audit) = &a.audit {
        sheet.gauge0(
            "pgwarden_archive_gap_segments",
            "WAL segments a recovery to the end needs and the archive lacks, at the last audit (lease holder)",
            audit.missing_segments as f64,
        );
        if let Some(t) = audit.checked_at {
            sheet.gauge0(
                "pgwarden_archive_audit_timestamp_seconds",
                "When the archive was last audited (Unix time)",
                seconds(t),
            );
        }
    }
}

fn render_backup(sheet: &mut Sheet, b: &BackupStatus) {
    if let Some(last) = &b.last_backup {
        sheet.gauge0(
            "pgwarden_backup_last_completed_timestamp_seconds",
            "When the newest base backup of the catalog ended (Unix time)",
            seconds(last.stopped_at),
        );
        sheet.gauge0(
            "pgwarden_backup_last_age_seconds",
            "Seconds since the newest base backup ended",
            last.age_seconds as f64,
        );
        sheet.gauge0(
            "pgwarden_backup_last_size_bytes",
            "Bytes of the data directory in the newest base backup",
            last.data_bytes as f64,
        );
        sheet.gauge0(
            "pgwarden_backup_last_stored_bytes",
            "Bytes the newest base backup takes in the store",
            last.stored_bytes as f64,
        );
        if let Some(failures) = last.checksum_failures {
            sheet.gauge0(
                "pgwarden_backup_last_checksum_failures",
                "Data pages the newest base backup found failing checksum verification",
                failures as f64,
            );
        }
    }
    sheet.gauge0("pgwarden_backup_running", "1 while this instance takes a base backup", flag(b.running.is_some()));
    sheet.counter0(
        "pgwarden_backup_failures_total",
        "Base backups of this instance that failed",
        b.failures_total as f64,
    );
    if let Some(t) = b.last_failed_at {
        sheet.gauge0(
            "pgwarden_backup_last_failed_timestamp_seconds",
            "When a base backup of this instance last failed (Unix time)",
            seconds(t),
        );
    }
    sheet.gauge0(
        "pgwarden_backup_retention_failing",
        "1 when the last retention run failed",
        flag(b.retention_error.is_some()),
    );
    if let Some(t) = b.next_scheduled_at {
        sheet.gauge0(
            "pgwarden_backup_next_scheduled_timestamp_seconds",
            "When the schedule fires next (lease holder only; Unix time)",
            seconds(t),
        );
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
