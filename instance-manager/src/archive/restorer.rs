//! The manager's side of `restore_command`: fetches a WAL file from the archive and, for a
//! segment, starts fetching the next ones into a spool directory, so that recovery does not
//! wait for one round trip per segment.
//!
//! A file missing from the archive is [`Restored::Missing`] (exit code 1: "not available",
//! which Postgres expects at the end of the archive and for timeline probes) — except in a
//! strict recovery (a recovery bootstrap) when the archive shows it is a gap, not the end
//! ([`super::gaps`]: a later segment of its timeline is archived, or a newer timeline
//! branches off after it): then the restore fails fatally, naming the segment and why, and
//! Postgres stops recovery instead of promoting without the WAL after the gap. A store that
//! fails is an [`RestoreFailure`]: during a recovery bootstrap it is fatal (Postgres must not
//! mistake an unreachable store for the end of the archive and end recovery early); on a
//! streaming standby it is reported as "not available" and the standby streams instead.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::layout::{DEFAULT_SEGMENT_SIZE, WalName, compressions_from, parse_wal_name};
use super::pack;
use super::store::{Store, StoreError};
use crate::api::Compression;
use crate::osuser::OsUser;

/// What a restore found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// The file is at the destination.
    Found,
    /// The archive does not have it.
    Missing,
}

/// A restore that failed for another reason than a missing file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFailure {
    /// What went wrong.
    pub message: String,
    /// Whether recovery must stop rather than treat the file as missing.
    pub fatal: bool,
}

/// Why a WAL file could not be fetched into the spool or delivered to `pg_wal`.
#[derive(Debug, thiserror::Error)]
pub enum RestorerError {
    /// The destination Postgres gave is not a file in `pg_wal` (a bad `restore_command`).
    #[error("{dest} is not a file in {pg_wal}")]
    NotInPgWal {
        /// The destination as given.
        dest: String,
        /// This instance's `pg_wal`.
        pg_wal: String,
    },
    /// The store failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An encrypted object and no key configured.
    #[error("{object} cannot be read: {source}")]
    NoKey {
        /// The object.
        object: String,
        /// The store's refusal.
        source: StoreError,
    },
    /// The spool directory cannot be created.
    #[error("cannot create {spool}: {source}")]
    Spool {
        /// The spool directory.
        spool: String,
        /// Why.
        source: std::io::Error,
    },
    /// The object cannot be decrypted, decompressed or written into the spool.
    #[error("{object} cannot be read into the spool {spool}: {source}")]
    Unpack {
        /// The object.
        object: String,
        /// The spool directory.
        spool: String,
        /// Why.
        source: std::io::Error,
    },
    /// A task of the restorer ended without an answer.
    #[error("{what} task: {source}")]
    Task {
        /// Which task.
        what: &'static str,
        /// Why.
        source: tokio::task::JoinError,
    },
    /// The spooled file cannot be moved to its destination.
    #[error("cannot {what} {dest}: {source}")]
    Deliver {
        /// `copy to` or `move into`.
        what: &'static str,
        /// The destination.
        dest: String,
        /// Why.
        source: std::io::Error,
    },
    /// The delivered file cannot be given to Postgres' user.
    #[error("cannot give {path} to Postgres: {source}")]
    Chown {
        /// The file.
        path: String,
        /// Why.
        source: crate::osuser::Error,
    },
}

type Fetch = Shared<BoxFuture<'static, Result<bool, Arc<RestorerError>>>>;

/// The WAL restorer of one instance.
pub struct Restorer {
    store: Store,
    data_dir: PathBuf,
    spool: PathBuf,
    compression: Compression,
    prefetch: u32,
    os_user: Option<OsUser>,
    inflight: Mutex<HashMap<String, Fetch>>,
    strict: std::sync::atomic::AtomicBool,
    gap: Mutex<Option<String>>,
    last_missing: Mutex<Option<String>>,
}

/// How often, and how long apart, a gap is looked at again before a strict recovery stops.
const GAP_RECHECKS: u32 = 3;
const GAP_RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Restorer {
    /// A restorer into `data_dir`'s `pg_wal`, spooling beside the data directory
    /// (`<dataDir>-wal-spool`: the same volume, outside what backups and rewinds copy).
    pub fn new(
        store: Store,
        data_dir: &Path,
        compression: Compression,
        prefetch: u32,
        os_user: Option<OsUser>,
    ) -> Arc<Self> {
        let mut spool = data_dir.as_os_str().to_owned();
        spool.push("-wal-spool");
        let spool = PathBuf::from(spool);
        // Files of an earlier life may belong to another timeline's history: start empty.
        let _ = std::fs::remove_dir_all(&spool);
        Arc::new(Self {
            store,
            data_dir: data_dir.to_path_buf(),
            spool,
            compression,
            prefetch: prefetch.min(64),
            os_user,
            inflight: Mutex::new(HashMap::new()),
            strict: false.into(),
            gap: Mutex::new(None),
            last_missing: Mutex::new(None),
        })
    }

    /// Store failures are fatal to recovery while set (a recovery bootstrap).
    pub fn set_strict(&self, strict: bool) {
        self.strict.store(strict, std::sync::atomic::Ordering::SeqCst);
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Restores the WAL file `name` to `dest` (absolute, or relative to the data directory,
    /// inside `pg_wal`).
    pub async fn restore(self: &Arc<Self>, name: &str, dest: &Path) -> Result<Restored, RestoreFailure> {
        let fatal = self.strict.load(std::sync::atomic::Ordering::SeqCst);
        let fail = |e: &dyn std::fmt::Display| RestoreFailure { message: e.to_string(), fatal };
        let dest = self.check_destination(dest).map_err(|e| RestoreFailure { message: e.to_string(), fatal: true })?;
        let Some(kind) = parse_wal_name(name) else {
            return Err(RestoreFailure { message: format!("{name:?} is not a WAL file name"), fatal: true });
        };
        let fetched = self.fetch(name).await.map_err(|e| fail(&e))?;
        if let WalName::Segment(id) = kind {
            self.prefetch_after(id);
            self.forget_before(name);
        }
        if !fetched && !self.missing(name, kind, fatal).await? {
            return Ok(Restored::Missing);
        }
        let spooled = self.spool.join(name);
        self.deliver(&spooled, &dest).map_err(|e| fail(&e))?;
        Ok(Restored::Found)
    }

    /// A file the archive lacks: the end of the archive, or in a strict recovery a gap that
    /// must stop it (see [`super::gaps`]). A gap is looked at again for a few seconds first:
    /// parallel uploads of a live cluster land out of order.
    /// True when the file appeared in the spool after all.
    async fn missing(self: &Arc<Self>, name: &str, kind: WalName, strict: bool) -> Result<bool, RestoreFailure> {
        let WalName::Segment(id) = kind else { return Ok(false) };
        if !strict {
            return Ok(false);
        }
        *self.last_missing.lock().unwrap_or_else(PoisonError::into_inner) = Some(name.to_string());
        for attempt in 0..=GAP_RECHECKS {
            let why = super::inventory::gap_reason(&self.store, id, DEFAULT_SEGMENT_SIZE).await.map_err(|e| {
                RestoreFailure { message: format!("cannot tell whether {name} ends the archive: {e}"), fatal: true }
            })?;
            let Some(why) = why else { return Ok(false) };
            if attempt == GAP_RECHECKS {
                tracing::error!(wal = name, "{why}");
                *self.gap.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.clone());
                return Err(RestoreFailure { message: why, fatal: true });
            }
            tokio::time::sleep(GAP_RECHECK_EVERY).await;
            if self.fetch(name).await.map_err(|e| RestoreFailure { message: e.to_string(), fatal: true })? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The gap that stopped a strict recovery, if one did.
    pub fn gap(&self) -> Option<String> {
        self.gap.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The last segment a strict recovery asked for and the archive did not have.
    pub fn last_missing(&self) -> Option<String> {
        self.last_missing.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn check_destination(&self, dest: &Path) -> Result<PathBuf, RestorerError> {
        let full = if dest.is_absolute() { dest.to_path_buf() } else { self.data_dir.join(dest) };
        let pg_wal = self.data_dir.join("pg_wal");
        let dir = full.parent().unwrap_or(Path::new(""));
        let ok = dir == pg_wal
            || std::fs::canonicalize(dir).ok().zip(std::fs::canonicalize(&pg_wal).ok()).is_some_and(|(a, b)| a == b);
        if !ok || full.file_name().is_none() {
            return Err(RestorerError::NotInPgWal {
                dest: dest.display().to_string(),
                pg_wal: pg_wal.display().to_string(),
            });
        }
        Ok(full)
    }

    /// The fetch of `name` into the spool: true when the file is there.
    fn fetch(self: &Arc<Self>, name: &str) -> Fetch {
        if self.spool.join(name).is_file() {
            return futures_util::future::ready(Ok(true)).boxed().shared();
        }
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = inflight.get(name) {
            return f.clone();
        }
        let me = Arc::clone(self);
        let owned = name.to_string();
        let task = tokio::spawn(async move {
            let result = me.download(&owned).await.map_err(Arc::new);
            me.inflight.lock().unwrap_or_else(PoisonError::into_inner).remove(&owned);
            result
        });
        let fetch: Fetch = async move {
            task.await.unwrap_or_else(|source| Err(Arc::new(RestorerError::Task { what: "fetch", source })))
        }
        .boxed()
        .shared();
        inflight.insert(name.to_string(), fetch.clone());
        fetch
    }

    fn prefetch_after(self: &Arc<Self>, id: super::layout::SegmentId) {
        let mut next = id;
        for _ in 0..self.prefetch {
            next = next.next(DEFAULT_SEGMENT_SIZE);
            // Dropping the handle does not cancel: the task runs on.
            drop(self.fetch(&next.file_name()));
        }
    }

    /// Removes spooled segments older than `name`: recovery has moved past them.
    fn forget_before(&self, name: &str) {
        let Ok(entries) = std::fs::read_dir(&self.spool) else { return };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if matches!(parse_wal_name(&file), Some(WalName::Segment(_)))
                && file.as_str() < name
                && file[..8] == name[..8]
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Downloads `name` into the spool, trying the configured compression first.
    async fn download(&self, name: &str) -> Result<bool, RestorerError> {
        let spool = || self.spool.display().to_string();
        for c in compressions_from(self.compression) {
            let Some(object) = self.store.layout.wal_object(name, c) else { return Ok(false) };
            let Some(packed) = self.store.get(&object).await? else { continue };
            let cipher = self
                .store
                .opener(&packed)
                .map_err(|source| RestorerError::NoKey { object: object.to_string(), source })?
                .cloned();
            std::fs::create_dir_all(&self.spool).map_err(|source| RestorerError::Spool { spool: spool(), source })?;
            let path = self.spool.join(name);
            // Unpacked as a stream straight into the spool file: only the packed object is in
            // memory. Not fsynced: the spool starts empty in every life of the manager, and
            // Postgres makes durable what it keeps of a restored file.
            tokio::task::spawn_blocking(move || {
                let tmp = path.with_extension("partial");
                let mut file =
                    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
                pack::unpack_to(&packed, c, cipher.as_ref(), &mut file)?;
                std::fs::rename(&tmp, &path)
            })
            .await
            .map_err(|source| RestorerError::Task { what: "unpacking", source })?
            .map_err(|source| RestorerError::Unpack {
                object: object.to_string(),
                spool: spool(),
                source,
            })?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Moves a spooled file to `dest`, owned by Postgres' user.
    fn deliver(&self, spooled: &Path, dest: &Path) -> Result<(), RestorerError> {
        let tmp = dest.with_extension("pgwarden-tmp");
        let err = |what: &'static str, source: std::io::Error| RestorerError::Deliver {
            what,
            dest: dest.display().to_string(),
            source,
        };
        if std::fs::rename(spooled, &tmp).is_err() {
            std::fs::copy(spooled, &tmp).map_err(|e| err("copy to", e))?;
            let _ = std::fs::remove_file(spooled);
        }
        if let Some(user) = &self.os_user {
            user.chown(&tmp).map_err(|source| RestorerError::Chown { path: tmp.display().to_string(), source })?;
        }
        std::fs::rename(&tmp, dest).map_err(|e| err("move into", e))
    }
}
