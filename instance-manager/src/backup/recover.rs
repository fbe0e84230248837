//! The recovery bootstrap: a new cluster's first primary built from a base backup and the
//! archived WAL, replayed to a target (point-in-time recovery), promoted on a new timeline.
//!
//! Everything happens in the staging directory beside the data directory; only a recovered,
//! promoted and cleanly stopped data directory is moved into place. A crash at any point
//! leaves no data directory, and the next start begins again from the backup — never a
//! half-recovered primary, never one promoted before its target by a confused manager.
//!
//! ```text
//! choose backup ─▶ unpack into staging ─▶ recovery.signal + pgwarden-recovery.conf
//!   ─▶ postgres (no TCP clients, restore_command strict) replays and promotes at the target
//!   ─▶ fast shutdown ─▶ remove pgwarden-recovery.conf ─▶ staging becomes the data directory
//! ```
//!
//! A replica bootstrapped from a backup (`bootstrap.replicaSource: backup`) uses the same
//! unpacking, then starts as a standby that restores from the archive and streams.
//!
//! With `walDir`, the restored `pg_wal` (an empty directory in the backup) becomes a link to
//! the staging WAL directory beside `walDir` before Postgres runs, so recovery writes its WAL
//! on the WAL volume, and both move into place together (`pgdata::wal_dir`).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::catalog::{self, BackupInfo};
use crate::api::{RecoverySpec, RecoveryTarget};
use crate::archive::{Restorer, Store};
use crate::config::Validated;
use crate::paths::Paths;
use crate::pgconf::{RECOVERY_CONF, manager_command, quote};
use crate::pgdata::Staging;
use crate::postgres::{Db, Postmaster, ShutdownMode};
use crate::supervisor::Supervisor;

/// Why a recovery bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The store, the catalog or the backup.
    #[error("{0}")]
    Backup(String),
    /// The backup's data could not be restored into the staging directory.
    #[error(transparent)]
    Restore(#[from] super::restore::RestoreError),
    /// The data directory could not be prepared.
    #[error(transparent)]
    PgData(#[from] crate::pgdata::Error),
    /// The archive lacks WAL the recovery needs, before WAL it has: recovery stopped rather
    /// than promote without it.
    #[error(
        "recovery stopped at a gap in the WAL archive: {0} (the WAL after it cannot be replayed; restore the missing segment into the archive, or choose a target before it)"
    )]
    Gap(String),
    /// Postgres could not be run.
    #[error("cannot run postgres for recovery: {0}")]
    Postgres(String),
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> RecoverError {
    let text = format!("{what} {}", path.display());
    move |e| RecoverError::Backup(format!("{text}: {e}"))
}

/// The text of `pgwarden-recovery.conf` for `target`: strict restores, no archiving until the
/// data directory is in place (segments stay `.ready`), no TCP clients, promote at the target.
pub fn recovery_conf(paths: &Paths, target: Option<&RecoveryTarget>) -> String {
    let mut s = String::from("# Written by pgwarden for a recovery bootstrap; removed when it ends.\n");
    let _ = writeln!(s, "restore_command = {}", quote(&manager_command(paths, "wal-restore --strict %f %p")));
    let _ = writeln!(s, "archive_command = ''");
    let _ = writeln!(s, "listen_addresses = ''");
    let _ = writeln!(s, "recovery_target_timeline = 'latest'");
    if let Some(t) = target {
        let set = |s: &mut String, k: &str, v: &str| {
            let _ = writeln!(s, "{k} = {}", quote(v));
        };
        if let Some(v) = &t.time {
            set(&mut s, "recovery_target_time", &postgres_time(v));
        }
        if let Some(v) = &t.lsn {
            set(&mut s, "recovery_target_lsn", v);
        }
        if let Some(v) = &t.xid {
            set(&mut s, "recovery_target_xid", v);
        }
        if let Some(v) = &t.name {
            set(&mut s, "recovery_target_name", v);
        }
        if t.immediate {
            set(&mut s, "recovery_target", "immediate");
        }
        set(&mut s, "recovery_target_inclusive", if t.inclusive { "on" } else { "off" });
        set(&mut s, "recovery_target_action", "promote");
    }
    s
}

/// A timestamp as Postgres' `recovery_target_time` accepts it: `Z` is a zone abbreviation
/// Postgres cannot resolve while it reads its configuration, so UTC is written as `+00:00`.
pub fn postgres_time(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

/// The store and backup a recovery bootstrap restores.
pub async fn choose(v: &Validated, spec: &RecoverySpec) -> Result<(Store, BackupInfo), RecoverError> {
    let source = spec.source_cluster.clone().unwrap_or_else(|| v.cluster.clone());
    let store = crate::archive::store::open(&spec.store, &source, "bootstrap.recovery.store")
        .map_err(|e| RecoverError::Backup(e.to_string()))?;
    let backups = catalog::list(&store).await.map_err(|e| RecoverError::Backup(e.to_string()))?;
    let backup = catalog::choose(&backups, spec.backup_id.as_deref(), spec.target.as_ref())
        .map_err(|e| RecoverError::Backup(format!("{} (cluster {source}): {e}", store.describe())))?
        .clone();
    Ok((store, backup))
}

/// Unpacks `backup` into a fresh staging directory owned by Postgres' user (with `walDir`,
/// its `pg_wal` a link to the staging WAL directory); returns it.
pub async fn unpack_into_staging(
    sup: &Supervisor,
    v: &Validated,
    paths: &Paths,
    store: &Store,
    backup: &BackupInfo,
) -> Result<Staging, RecoverError> {
    check_version(sup, v, backup).await?;
    let staged = crate::pgdata::prepare_staging(v, paths)?;
    let staging = &staged.data;
    let started = std::time::Instant::now();
    tracing::info!(backup = %backup.id, from = %store.describe(), "restoring a base backup");
    let bytes = super::restore::unpack(store, backup, staging).await?;
    for dir in [
        "pg_wal/archive_status",
        "pg_replslot",
        "pg_stat_tmp",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_subtrans",
        "pg_dynshmem",
    ] {
        std::fs::create_dir_all(staging.join(dir)).map_err(io("cannot create", &staging.join(dir)))?;
    }
    crate::pgdata::link_restored_wal(v, &staged)?;
    chown_tree(v, staging)?;
    for file in backup.files.iter().filter(|f| f.name.starts_with("tablespace-")) {
        if let Some(location) = super::restore::tablespace_location(&file.name, staging)? {
            chown_tree(v, &location)?;
        }
    }
    tracing::info!(backup = %backup.id, bytes, seconds = started.elapsed().as_secs_f64(), "base backup restored");
    Ok(staged)
}

async fn check_version(sup: &Supervisor, v: &Validated, backup: &BackupInfo) -> Result<(), RecoverError> {
    let major = backup.postgres_version_num / 10000;
    let mut cmd = std::process::Command::new(v.bin("postgres"));
    cmd.arg("--version");
    let out = crate::supervisor::run_quiet(sup, "postgres --version", &mut cmd, Duration::from_secs(30))
        .await
        .map_err(|e| RecoverError::Postgres(e.to_string()))?;
    // "postgres (PostgreSQL) 15.18 (Debian ...)"
    let local = out.stdout.split_whitespace().nth(2).and_then(|w| w.split('.').next()?.parse::<u32>().ok());
    match local {
        Some(l) if l != major => Err(RecoverError::Backup(format!(
            "backup {} is of PostgreSQL {major}, these binaries are {l}: restore it with PostgreSQL {major} binaries",
            backup.id
        ))),
        _ => Ok(()),
    }
}

fn chown_tree(v: &Validated, dir: &Path) -> Result<(), RecoverError> {
    v.os_user.chown(dir).map_err(|e| RecoverError::Backup(e.to_string()))?;
    for entry in std::fs::read_dir(dir).map_err(io("cannot read", dir))? {
        let entry = entry.map_err(io("cannot read", dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io("cannot stat", &path))?.is_dir() {
            chown_tree(v, &path)?;
        } else {
            v.os_user.chown(&path).map_err(|e| RecoverError::Backup(e.to_string()))?;
        }
    }
    Ok(())
}

/// Where a recovery bootstrap runs: the instance's paths, its superuser connection, and the
/// slot the WAL socket's `restore_command` reads its restorer from (`swap_restorer` installs
/// one and returns the previous).
pub struct Target<'a> {
    /// The instance's paths.
    pub paths: &'a Paths,
    /// The superuser connection (to follow the replay).
    pub db: &'a Db,
    /// Installs a restorer for `restore_command`, returning the one it replaces.
    pub swap_restorer: &'a (dyn Fn(Option<Arc<Restorer>>) -> Option<Arc<Restorer>> + Sync),
}

/// The whole recovery bootstrap; leaves a promoted data directory in place.
pub async fn recovery_bootstrap(
    sup: &Supervisor,
    target: &Target<'_>,
    v: &Validated,
    spec: &RecoverySpec,
) -> Result<(), RecoverError> {
    let paths = target.paths;
    let (store, backup) = choose(v, spec).await?;
    let built = unpack_into_staging(sup, v, paths, &store, &backup).await?;
    let staging = &built.data;
    let staged = Paths::new(staging, &paths.run_dir);
    crate::pgconf::write_all(v, &staged, None, "").map_err(io("cannot write the configuration in", staging))?;
    let conf = staging.join(RECOVERY_CONF);
    crate::paths::write_atomic(&conf, recovery_conf(paths, spec.target.as_ref()).as_bytes(), 0o600)
        .map_err(io("cannot write", &conf))?;
    let signal = staging.join("recovery.signal");
    crate::paths::write_atomic(&signal, b"", 0o600).map_err(io("cannot write", &signal))?;
    for f in [&conf, &signal] {
        v.os_user.chown(f).map_err(|e| RecoverError::Backup(e.to_string()))?;
    }

    // restore_command reaches this restorer through the WAL socket; store failures stop
    // recovery instead of ending it early.
    let wal = v.config.backup.as_ref().map(|b| b.wal.clone()).unwrap_or_default();
    let restorer = Restorer::new(store, staging, wal.compression, wal.restore_prefetch, Some(v.os_user.clone()));
    restorer.set_strict(true);
    let previous = (target.swap_restorer)(Some(Arc::clone(&restorer)));
    let result = replay(sup, target.db, v, &staged, &restorer).await;
    (target.swap_restorer)(previous);
    result?;

    std::fs::remove_file(&conf).map_err(io("cannot remove", &conf))?;
    crate::pgdata::install_staging(&v.os_user, paths, &built)?;
    tracing::info!(backup = %backup.id, "recovery bootstrap done: this is a new primary on a new timeline");
    Ok(())
}

/// Runs Postgres on the staging directory until it has promoted, then stops it cleanly.
async fn replay(
    sup: &Supervisor,
    db: &Db,
    v: &Validated,
    staged: &Paths,
    restorer: &Restorer,
) -> Result<(), RecoverError> {
    let pm = Postmaster::start(sup, v, staged).map_err(|e| RecoverError::Postgres(e.to_string()))?;
    let started = std::time::Instant::now();
    // Polled often: every moment between the promotion and noticing it is added to the
    // restore's time. Progress is logged every few seconds.
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut logged = std::time::Instant::now();
    loop {
        tokio::select! {
            status = pm.wait() => return Err(replay_failed(&status.to_string(), restorer)),
            _ = ticker.tick() => {}
        }
        let Ok(client) = db.client(Duration::from_secs(2)).await else { continue };
        match client.query_one("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text", &[]).await {
            Ok(row) if !row.get::<_, bool>(0) => break,
            Ok(_) if logged.elapsed() < Duration::from_secs(5) => {}
            Ok(row) => {
                logged = std::time::Instant::now();
                let at: Option<String> = row.get(1);
                tracing::info!(
                    replayed = at.as_deref().unwrap_or("-"),
                    seconds = started.elapsed().as_secs(),
                    "recovering"
                );
            }
            Err(e) => tracing::debug!(error = %e, "recovery progress unknown"),
        }
    }
    db.reset().await;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "recovery reached its end and promoted; stopping to install the data directory"
    );
    let (status, mode) = pm.stop(ShutdownMode::Fast, Duration::from_secs(60), Duration::from_secs(300)).await;
    if mode > ShutdownMode::Fast {
        return Err(RecoverError::Postgres(format!("postgres did not stop cleanly after recovery ({status})")));
    }
    Ok(())
}

/// Why Postgres stopped before recovery ended: a gap in the archive when the restorer found
/// one, else the last missing segment (a target after the end of the archive) or its log.
fn replay_failed(status: &str, restorer: &Restorer) -> RecoverError {
    if let Some(gap) = restorer.gap() {
        return RecoverError::Gap(gap);
    }
    let missing = restorer
        .last_missing()
        .map(|m| format!(" (the archive ends before {m}: a target after its end?)"))
        .unwrap_or_default();
    RecoverError::Postgres(format!(
        "postgres exited ({status}) before recovery ended{missing}; its log says why \
         (a target after the end of the archive, a missing WAL file, a damaged backup)"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_are_written_with_a_numeric_zone() {
        assert_eq!(postgres_time("2026-11-30T12:00:00Z"), "2026-11-30 12:00:00.000000+00:00");
        assert_eq!(postgres_time("2026-11-30T13:00:00.25+01:00"), "2026-11-30 12:00:00.250000+00:00");
    }

    #[test]
    fn recovery_conf_promotes_at_the_target_and_keeps_clients_out() {
        let paths = Paths::new(Path::new("/data/pgdata"), Path::new("/run/pgwarden"));
        let t = RecoveryTarget {
            time: None,
            lsn: Some("0/3000060".into()),
            xid: None,
            name: None,
            immediate: false,
            inclusive: false,
        };
        let conf = recovery_conf(&paths, Some(&t));
        for line in [
            "recovery_target_lsn = '0/3000060'",
            "recovery_target_inclusive = 'off'",
            "recovery_target_action = 'promote'",
            "listen_addresses = ''",
            "archive_command = ''",
        ] {
            assert!(conf.contains(line), "{line} missing from:\n{conf}");
        }
        assert!(
            conf.contains("wal-restore --strict %f %p") && conf.contains("unix:///run/pgwarden/wal.sock"),
            "{conf}"
        );
    }
}
