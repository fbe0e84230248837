//! Applying an edited configuration file to a running instance.
//!
//! Postgres-level settings (parameters, `pgHba`, the primary to stream from, passwords) are
//! re-rendered and applied with a reload (SIGHUP); a changed password file changes the role's
//! password on the primary (`ALTER ROLE`) and the password file replicas connect with; Postgres itself reports parameters that
//! need a restart, and `/status` shows them as pending. Settings of the manager itself (name,
//! directories, OS user, role, API address, `api.tls`, metrics address, `lease`) keep their
//! running values and are listed as pending a restart of the instance. An invalid file changes
//! nothing and is reported in `/status` as `config_error`.
//!
//! `members` applies at once: the HA loop reads it at every tick and is woken when it changed,
//! and it applies the change in the order that keeps the safety rules (`ha::membership`,
//! docs/architecture.md §4.8). An edit may leave this instance out of `members`
//! ([`Purpose::Edit`]): that is how it learns it is being removed. While Postgres is stopped an
//! edit is checked and applied the same way, without the reload signal.
//!
//! Parameter values are checked by Postgres itself before anything is written
//! ([`crate::pgconf::check`]): a value it refuses (`work_mem: bogus`) is logged at ERROR with
//! the parameter's name, listed in `/status` as `refused_parameters` (and `config_error`), and
//! the whole edit is refused: the previous configuration keeps running and stays on disk, so
//! the next start does not fail either.
//!
//! `api.tls` is bound with the listener at start: turning HTTPS on or off, or pointing it at
//! other files or another client-certificate mode, needs a restart. New contents of the same
//! files (a rotated certificate or CA) are picked up live by `tls::reload`, and
//! `api.tokenFile` is read at every request, so a new path applies at once.

use super::state::{Desired, Instance};
use crate::config::{self, Purpose, Validated};
use crate::postgres::Postmaster;
use crate::supervisor::Supervisor;

/// Reloads the configuration file and applies what can be applied live: to the running
/// postmaster `pm`, or with `pm` `None` to the files the next start reads.
pub async fn apply(instance: &Instance, sup: &Supervisor, pm: Option<&Postmaster>, running: &Desired) {
    let new = match config::load_for(&instance.config_path, &instance.overrides, Purpose::Edit) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "configuration change refused; keeping the running configuration");
            instance.set_config_error(Some(e.to_string()));
            return;
        }
    };
    let old = instance.config();
    let (merged, manager_fields) = merge(&old, new);
    let upstream = match running {
        Desired::Replica(up) => up.clone(),
        _ => None,
    };
    if let Err(e) =
        crate::pgconf::check::check(sup, &merged, &instance.paths, upstream.as_ref(), &instance.sync_names()).await
    {
        let parameters: Vec<&str> = e.refused().iter().filter_map(|r| r.parameter.as_deref()).collect();
        tracing::error!(error = %e, ?parameters, "configuration change refused; keeping the running configuration");
        instance.set_refused_parameters(e.refused().to_vec());
        instance.set_config_error(Some(e.to_string()));
        return;
    }
    if let Err(e) = crate::pgconf::write_all(&merged, &instance.paths, upstream.as_ref(), &instance.sync_names()) {
        tracing::error!(error = %e, "cannot write the new Postgres configuration");
        instance.set_config_error(Some(format!("cannot write the new Postgres configuration: {e}")));
        return;
    }
    let members_changed = merged.config.members != old.config.members;
    instance.set_config(merged);
    instance.set_config_error(None);
    if members_changed {
        // The HA loop logs the change and applies it; woken so that it does so now, not at
        // its next period.
        instance.ha_notify(super::HaCommand::Tick);
    }
    instance.set_refused_parameters(Vec::new());
    if !manager_fields.is_empty() {
        tracing::warn!(fields = ?manager_fields, "these settings take effect at the next start of the instance");
    }
    instance.set_manager_pending(manager_fields);
    if let Some(pm) = pm {
        match pm.reload() {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::warn!(error = %e, "cannot signal postgres to reload"),
        }
        if *running == Desired::Primary {
            super::roles::apply_changed_passwords(instance).await;
        }
    }
}

/// `new` with every manager-level setting kept at its running value, and the names of the
/// settings that differ (they need a restart of the instance).
pub fn merge(old: &Validated, mut new: Validated) -> (Validated, Vec<String>) {
    let mut fields = Vec::new();
    macro_rules! keep {
        ($label:literal, $($path:tt)+) => {
            if new.$($path)+ != old.$($path)+ {
                fields.push($label.to_string());
                new.$($path)+ = old.$($path)+.clone();
            }
        };
    }
    keep!("name", name);
    keep!("cluster", cluster);
    keep!("dataDir", config.data_dir);
    keep!("walDir", config.wal_dir);
    keep!("runDir", config.run_dir);
    keep!("binDir", bin_dir);
    keep!("osUser", os_user);
    keep!("role", config.role);
    keep!("api.listen", api_listen);
    keep!("api.tls", config.api.tls);
    // The lease store and its timing are opened and fixed when the HA loop starts.
    keep!("lease", config.lease);
    // The metrics endpoint binds once, at start.
    keep!("metrics.listen", metrics.listen);
    new.config.name = old.config.name.clone();
    new.config.cluster = old.config.cluster.clone();
    new.config.bin_dir = old.config.bin_dir.clone();
    new.config.os_user = old.config.os_user.clone();
    new.config.api.listen = old.config.api.listen.clone();
    new.config.metrics.listen = old.config.metrics.listen.clone();
    (new, fields)
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
