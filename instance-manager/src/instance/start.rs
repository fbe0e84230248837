//! Getting a data directory ready for a start in the desired role: bootstrap when it is
//! empty, configuration and signal files, and a rewind when a former primary must follow.

use std::time::Duration;

use tokio::sync::watch;

use super::run::{Error, StartAs};
use super::state::{Desired, Instance};
use crate::api::ReplicaSource;
use crate::config::Validated;
use crate::pgconf::Upstream;
use crate::pgdata;
use crate::supervisor::Supervisor;

/// Creates the data directory when it is empty: initdb when this instance is to be the
/// primary, a base backup of the primary when it is to be a replica (retried until the
/// primary answers). Waits while the role is undecided.
pub(super) async fn bootstrap(
    sup: &Supervisor,
    instance: &Instance,
    desired: &mut watch::Receiver<Desired>,
) -> Result<(), Error> {
    if pgdata::is_initialized(&instance.paths.data_dir) {
        return Ok(());
    }
    let mut delay = Duration::from_secs(1);
    loop {
        let want = desired.borrow_and_update().clone();
        let v = instance.config();
        match want {
            Desired::Primary => {
                if let Some(spec) = &v.config.bootstrap.recovery {
                    let swap = |r| instance.swap_restorer(r);
                    let target = crate::backup::recover::Target {
                        paths: &instance.paths,
                        db: &instance.db,
                        swap_restorer: &swap,
                    };
                    crate::backup::recover::recovery_bootstrap(sup, &target, &v, spec).await?;
                } else {
                    tracing::info!(data_dir = %instance.paths.data_dir.display(), "initialising a new data directory");
                    pgdata::initdb(sup, &v, &instance.paths).await?;
                }
                break;
            }
            Desired::Replica(Some(_))
                if v.config.bootstrap.replica_source == ReplicaSource::Backup
                    && replica_from_backup(sup, instance, &v).await =>
            {
                break;
            }
            Desired::Replica(Some(up)) => {
                tracing::info!(upstream = %up.name, host = %up.host, port = up.port, "cloning the primary with pg_basebackup");
                match pgdata::clone_from(sup, &v, &instance.paths, &up.host, up.port).await {
                    Ok(()) => break,
                    Err(e) if e.needs_person() => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "cannot clone the primary yet");
                        let _ = tokio::time::timeout(delay, desired.changed()).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
            Desired::Replica(None) | Desired::Unknown | Desired::Halted => {
                tracing::info!("empty data directory: waiting for a primary to clone");
                if desired.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    tracing::info!("data directory ready");
    Ok(())
}

/// A new replica from the latest base backup of this cluster: it then restores the rest
/// from the archive and streams. False (and a log line) when there is no usable backup: the
/// caller clones the primary instead.
async fn replica_from_backup(sup: &Supervisor, instance: &Instance, v: &Validated) -> bool {
    let Some(store) = instance.archiver.as_ref().map(|a| a.store().clone()) else { return false };
    let attempt = async {
        let backups = crate::backup::catalog::list(&store).await.map_err(|e| e.to_string())?;
        if backups.is_empty() {
            return Ok(None);
        }
        let backup = crate::backup::catalog::choose(&backups, None, None).map_err(|e| e.to_string())?;
        let staging = crate::backup::recover::unpack_into_staging(sup, v, &instance.paths, &store, backup)
            .await
            .map_err(|e| e.to_string())?;
        pgdata::install_staging(&v.os_user, &instance.paths, &staging).map_err(|e| e.to_string())?;
        Ok::<_, String>(Some(backup.id.clone()))
    };
    match attempt.await {
        Ok(Some(id)) => {
            tracing::info!(backup = %id, "replica data restored from a base backup; the archive and streaming bring it up to date");
            true
        }
        Ok(None) => {
            // A new cluster: normal, not a warning.
            tracing::info!("no base backup in the store yet: cloning the primary");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the replica from a backup; cloning the primary instead");
            false
        }
    }
}

/// Renders configuration and signal files for a start as `desired`. A replica whose data
/// directory was last a primary (or, with `rewind`, one that diverged) is rewound onto its
/// upstream first, and re-cloned when the rewind fails: it must never start writable, and
/// never on a diverged timeline.
pub(super) async fn prepare_start(
    sup: &Supervisor,
    instance: &Instance,
    v: &Validated,
    start: &StartAs,
    rewind: bool,
) -> Result<(), Error> {
    let paths = &instance.paths;
    let upstream = match start {
        StartAs::Replica(up) => up.clone(),
        StartAs::Primary => None,
    };
    if let Some(up) = &upstream {
        rewind_if_needed(sup, instance, v, up, rewind).await?;
    }
    // A value Postgres refuses stops the start here, with its name, not in a crash loop.
    crate::pgconf::check::check(sup, v, paths, upstream.as_ref(), &instance.sync_names()).await?;
    crate::pgconf::write_all(v, paths, upstream.as_ref(), &instance.sync_names())
        .map_err(|source| Error::Render { path: paths.data_dir.display().to_string(), source })?;
    pgdata::set_standby_signal(v, paths, matches!(start, StartAs::Replica(_)))?;
    Ok(())
}

async fn rewind_if_needed(
    sup: &Supervisor,
    instance: &Instance,
    v: &Validated,
    up: &Upstream,
    forced: bool,
) -> Result<(), Error> {
    let paths = &instance.paths;
    if paths.data_dir.join("backup_label").exists() {
        // A fresh base backup: pg_control is the primary's copy, the data is a standby's.
        return Ok(());
    }
    let state = pgdata::cluster_state(sup, v, paths).await?;
    if !state.was_primary() && !forced {
        return Ok(());
    }
    if forced {
        // pg_rewind may first finish crash recovery in single-user mode, which refuses to run
        // with standby.signal present; prepare_start puts it back afterwards.
        pgdata::set_standby_signal(v, paths, false)?;
    }
    tracing::info!(?state, forced, upstream = %up.name, "rewinding this data directory onto the primary");
    crate::pgconf::write_pgpass(v, paths)
        .map_err(|source| Error::Render { path: paths.pgpass().display().to_string(), source })?;
    match pgdata::rewind(sup, v, paths, &up.host, up.port).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::error!(error = %e, "pg_rewind failed; re-cloning from the primary");
            pgdata::remove_data_dir(paths)?;
            pgdata::clone_from(sup, v, paths, &up.host, up.port).await?;
            Ok(())
        }
    }
}
