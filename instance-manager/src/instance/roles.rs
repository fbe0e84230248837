//! Giving a running Postgres the role it should have: promotion, following another primary,
//! and what a new primary must find in place (roles, application database).

use std::time::Duration;

use super::state::{Desired, Instance};
use crate::api::PostgresProcessState;
use crate::postgres::{Postmaster, roles};

/// Why a live promotion failed (the run loop then restarts Postgres as a primary instead).
#[derive(Debug, thiserror::Error)]
pub(super) enum PromoteError {
    /// No connection to the local Postgres.
    #[error(transparent)]
    Connect(#[from] crate::postgres::sql::Error),
    /// `synchronous_standby_names` could not be read back.
    #[error("cannot read synchronous_standby_names: {0}")]
    ReadSyncNames(#[source] tokio_postgres::Error),
    /// The reloaded configuration did not take effect in time: promoting now could let the
    /// first commits go unreplicated.
    #[error("synchronous_standby_names did not become {want:?} in time")]
    SyncNamesNotApplied {
        /// What was rendered.
        want: String,
    },
    /// `pg_promote` itself failed.
    #[error("pg_promote: {0}")]
    Promote(#[source] tokio_postgres::Error),
    /// `pg_promote` gave up waiting.
    #[error("pg_promote returned false (not promoted within 60 s)")]
    NotPromoted,
}

/// What a role change needed.
pub(super) enum Change {
    /// Applied live.
    Done,
    /// Nothing to do.
    Ignored,
    /// Postgres must be stopped and started again in the new role.
    NeedsRestart,
}

/// Postgres accepts connections: publish it, and make sure a primary has its roles.
pub(super) async fn on_ready(instance: &Instance, running: &Desired) {
    instance.update_process(|p| p.state = PostgresProcessState::Running);
    tracing::info!(role = %running, "postgres accepts connections");
    if *running == Desired::Primary {
        // Routing follows writability at once, not at the HA loop's next period.
        instance.ha_notify(super::HaCommand::Tick);
        ensure_roles(instance).await;
    }
}

async fn ensure_roles(instance: &Instance) {
    let v = instance.config();
    match instance.db.dedicated(Duration::from_secs(5)).await {
        Ok(client) => match roles::ensure_roles(&client, &v).await {
            Ok(()) => {
                for (role, file) in roles::password_files(&v) {
                    if let Ok(fp) = roles::fingerprint(&file) {
                        instance.note_password_applied(&role, fp);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot create or update roles and the application database"),
        },
        Err(e) => tracing::error!(error = %e, "cannot connect to create roles"),
    }
}

/// On the primary: sets the password of every role whose password file changed since it was
/// last applied (a rotated Secret). The secrets themselves are never logged.
pub(super) async fn apply_changed_passwords(instance: &Instance) {
    let v = instance.config();
    let changed: Vec<(String, std::path::PathBuf, [u8; 32])> = roles::password_files(&v)
        .into_iter()
        .filter_map(|(role, file)| {
            let fp = roles::fingerprint(&file).ok()?;
            (instance.applied_password(&role) != Some(fp)).then_some((role, file, fp))
        })
        .collect();
    if changed.is_empty() {
        return;
    }
    let client = match instance.db.dedicated(Duration::from_secs(5)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot connect to change passwords; retried at the next change");
            return;
        }
    };
    for (role, file, fp) in changed {
        match roles::set_password(&client, &role, &file).await {
            Ok(()) => {
                instance.note_password_applied(&role, fp);
                tracing::info!(role = %role, "password changed from its rotated file");
            }
            Err(e) => tracing::error!(role = %role, error = %e, "cannot change the password"),
        }
    }
}

/// Moves a running Postgres from `running` to `want`.
pub(super) async fn change_role(
    instance: &Instance,
    pm: &Postmaster,
    running: &Desired,
    want: &Desired,
    is_ready: bool,
) -> Change {
    match (running, want) {
        (_, Desired::Unknown) => Change::Ignored,
        (a, b) if a == b => Change::Ignored,
        (Desired::Replica(_), Desired::Primary) if is_ready => match promote(instance, pm).await {
            Ok(()) => {
                instance.note_promoted();
                // The HA loop publishes the new role (the -rw EndpointSlice) now.
                instance.ha_notify(super::HaCommand::Tick);
                ensure_roles(instance).await;
                Change::Done
            }
            Err(e) => {
                tracing::error!(error = %e, "promotion failed; restarting postgres as primary");
                Change::NeedsRestart
            }
        },
        (Desired::Replica(_), Desired::Replica(up)) => {
            tracing::info!(upstream = %super::state::upstream_text(up.as_ref()), "following a new primary");
            rerender(instance, pm, up.as_ref());
            Change::Done
        }
        _ => Change::NeedsRestart,
    }
}

/// Promotes, with `synchronous_standby_names` in force first: the new primary's very first
/// commit already waits for a standby.
async fn promote(instance: &Instance, pm: &Postmaster) -> Result<(), PromoteError> {
    let client = instance.db.dedicated(Duration::from_secs(5)).await?;
    rerender(instance, pm, None);
    let want = instance.sync_names();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let row = client
            .query_one("SELECT current_setting('synchronous_standby_names')", &[])
            .await
            .map_err(PromoteError::ReadSyncNames)?;
        if row.get::<_, String>(0) == want {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(PromoteError::SyncNamesNotApplied { want });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(synchronous_standby_names = %want, "promoting postgres");
    let row = client.query_one("SELECT pg_promote(true, 60)", &[]).await.map_err(PromoteError::Promote)?;
    if row.get::<_, bool>(0) { Ok(()) } else { Err(PromoteError::NotPromoted) }
}

/// Rewrites the configuration for `upstream` and reloads Postgres.
pub(super) fn rerender(instance: &Instance, pm: &Postmaster, upstream: Option<&crate::pgconf::Upstream>) {
    let v = instance.config();
    if let Err(e) = crate::pgconf::write_all(&v, &instance.paths, upstream, &instance.sync_names()) {
        tracing::error!(error = %e, "cannot write the Postgres configuration");
        return;
    }
    if let Err(e) = pm.reload() {
        tracing::warn!(error = %e, "cannot signal postgres to reload");
    }
}
