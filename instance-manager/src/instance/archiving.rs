//! The instance's WAL archiver and restorer, opened from `backup` at start (the restorer can
//! be swapped: a recovery bootstrap restores from its source cluster's archive, strictly),
//! and the fingerprints of the passwords last set from their files.

use std::sync::Arc;

use super::state::Instance;
use crate::config::Validated;

/// The archiver `backup` asks for; a store that cannot be opened is logged (validation has
/// checked the settings, so this is the disk or the environment).
pub(super) fn open_archiver(v: &Validated) -> Option<Arc<crate::archive::Archiver>> {
    let b = v.config.backup.as_ref()?;
    match crate::archive::store::open(&b.store, &v.cluster, "backup.store") {
        Ok(store) => {
            Some(crate::archive::Archiver::new(store, &v.config.data_dir, b.wal.compression, b.wal.max_parallel))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot open the backup store: WAL will not be archived");
            None
        }
    }
}

pub(super) fn open_restorer(v: &Validated, store: crate::archive::Store) -> Arc<crate::archive::Restorer> {
    let wal = v.config.backup.as_ref().map(|b| b.wal.clone()).unwrap_or_default();
    let user = nix::unistd::geteuid().is_root().then(|| v.os_user.clone());
    crate::archive::Restorer::new(store, &v.config.data_dir, wal.compression, wal.restore_prefetch, user)
}

impl Instance {
    /// The WAL restorer `restore_command` uses now, if any.
    pub fn restorer(&self) -> Option<Arc<crate::archive::Restorer>> {
        self.restorer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the restorer and returns the previous one (a recovery bootstrap restores from
    /// its source's archive meanwhile).
    pub fn swap_restorer(&self, r: Option<Arc<crate::archive::Restorer>>) -> Option<Arc<crate::archive::Restorer>> {
        std::mem::replace(&mut *self.restorer.lock().unwrap_or_else(std::sync::PoisonError::into_inner), r)
    }
}

impl Instance {
    /// The fingerprint of the password last set for `role`.
    pub fn applied_password(&self, role: &str) -> Option<[u8; 32]> {
        self.applied_passwords.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(role).copied()
    }

    /// Records that `role`'s password is the one with fingerprint `fp`.
    pub fn note_password_applied(&self, role: &str, fp: [u8; 32]) {
        self.applied_passwords.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(role.to_string(), fp);
    }
}
