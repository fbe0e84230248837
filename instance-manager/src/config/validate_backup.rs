//! Validation of `backup` and `bootstrap.recovery`: the stores (no network, nothing written),
//! the tuning knobs, retention, and the recovery target.

use super::validate::Collector;
use crate::api::{InstanceConfig, RecoveryTarget, ReplicaSource, StoreSpec};
use crate::archive::store::{StoreError, check};

fn check_store(c: &mut Collector, spec: &StoreSpec, field: &str) -> Option<crate::archive::Destination> {
    match check(spec, field) {
        Ok(d) => Some(d),
        Err(StoreError::Config { field, message, hint }) => {
            c.add(&field, message, hint);
            None
        }
        Err(e) => {
            c.add(field, e.to_string(), "check the store settings");
            None
        }
    }
}

fn check_range(c: &mut Collector, field: &str, value: u32, range: std::ops::RangeInclusive<u32>, hint: &str) {
    if !range.contains(&value) {
        c.add(field, format!("{value} is outside {}..={}", range.start(), range.end()), hint);
    }
}

/// Checks the backup settings of `cfg` for cluster `cluster`.
pub(super) fn check_backup(c: &mut Collector, cfg: &InstanceConfig, cluster: &str) {
    let ours = cfg.backup.as_ref().and_then(|b| {
        check_range(c, "backup.wal.maxParallel", b.wal.max_parallel, 1..=64, "4 suits most stores");
        check_range(c, "backup.wal.restorePrefetch", b.wal.restore_prefetch, 0..=64, "8 suits most stores");
        check_range(
            c,
            "backup.base.partSizeMiB",
            b.base.part_size_mib,
            5..=5120,
            "S3 parts are 5 MiB to 5 GiB; 16 is a good size",
        );
        check_range(c, "backup.base.maxParallel", b.base.max_parallel, 1..=64, "4 suits most stores");
        if let Some(r) = &b.retention {
            match (r.recovery_window_days, r.count) {
                (Some(_), Some(_)) | (None, None) => c.add(
                    "backup.retention",
                    "needs exactly one of recoveryWindowDays and count",
                    "e.g. recoveryWindowDays: 7",
                ),
                (Some(0), None) => c.add("backup.retention.recoveryWindowDays", "is 0", "keep at least 1 day"),
                (None, Some(0)) => c.add("backup.retention.count", "is 0", "keep at least 1 backup"),
                _ => {}
            }
        }
        if let Some(s) = &b.schedule
            && let Err(e) = crate::backup::schedule::parse(s)
        {
            c.add("backup.schedule", e.to_string(), "use five fields, e.g. '0 3 * * *' for 03:00 UTC every day");
        }
        check_store(c, &b.store, "backup.store")
    });
    if cfg.bootstrap.replica_source == ReplicaSource::Backup && cfg.backup.is_none() {
        c.add(
            "bootstrap.replicaSource",
            "is backup but no backup store is configured",
            "set backup.store, or use primary",
        );
    }
    let Some(rec) = &cfg.bootstrap.recovery else { return };
    let theirs = check_store(c, &rec.store, "bootstrap.recovery.store");
    let source = rec.source_cluster.as_deref().unwrap_or(cluster);
    if !super::validate::is_dns_label(source) {
        c.add(
            "bootstrap.recovery.sourceCluster",
            format!("{source:?} is not a cluster name"),
            "use the name of the cluster that took the backups",
        );
    }
    if let (Some(ours), Some(theirs)) = (ours, theirs)
        && ours == theirs
        && source == cluster
    {
        c.add(
            "bootstrap.recovery",
            "restores from the archive this cluster would archive into: the new timeline's WAL would mix with the old cluster's",
            "give the new cluster another name, or another backup.store destination",
        );
    }
    if let Some(id) = &rec.backup_id
        && (id.is_empty() || id.contains(['/', '\\', ' ']))
    {
        c.add(
            "bootstrap.recovery.backupId",
            format!("{id:?} is not a backup id"),
            "use an id from `instance-manager backup list`",
        );
    }
    if let Some(t) = &rec.target {
        check_target(c, t);
    }
}

fn check_target(c: &mut Collector, t: &RecoveryTarget) {
    let set = [t.time.is_some(), t.lsn.is_some(), t.xid.is_some(), t.name.is_some(), t.immediate];
    if set.iter().filter(|s| **s).count() > 1 {
        c.add("bootstrap.recovery.target", "sets more than one target", "keep one of time, lsn, xid, name, immediate");
    }
    if let Some(time) = &t.time
        && time.parse::<jiff::Timestamp>().is_err()
    {
        c.add(
            "bootstrap.recovery.target.time",
            format!("{time:?} is not a timestamp"),
            "use RFC 3339 with a zone, e.g. 2026-11-30T12:00:00Z",
        );
    }
    if let Some(lsn) = &t.lsn
        && lsn.parse::<crate::api::Lsn>().is_err()
    {
        c.add("bootstrap.recovery.target.lsn", format!("{lsn:?} is not an LSN"), "write it like 0/3000060");
    }
    if let Some(xid) = &t.xid
        && xid.parse::<u32>().is_err()
    {
        c.add("bootstrap.recovery.target.xid", format!("{xid:?} is not a transaction id"), "a number, e.g. 7412");
    }
    if let Some(name) = &t.name
        && (name.is_empty() || name.len() > 63)
    {
        c.add(
            "bootstrap.recovery.target.name",
            "must be 1 to 63 characters",
            "the name given to pg_create_restore_point",
        );
    }
}
