//! The manager's side of `archive_command`: uploads WAL files in parallel, and ahead of
//! Postgres' calls.
//!
//! Postgres calls `archive_command` for one segment at a time and waits for it. When asked
//! for segment N, the archiver starts N's upload and also the uploads of the next segments
//! Postgres has marked ready (`pg_wal/archive_status/*.ready`), up to `maxParallel` at
//! once; when Postgres asks for those a moment later they are done or in flight, and the
//! call returns at once. A call for a file already uploaded by this manager answers at once.
//!
//! Safety:
//! - Uploads are create-only ([`Store::create`]): archived WAL is never overwritten. When an
//!   object of that name exists, its content is compared with the local file: the same bytes
//!   are success (Postgres retrying after a crash), different bytes a loud failure.
//! - Before its first upload the archiver checks that the destination belongs to this cluster
//!   (`cluster.json`, the system identifier), and refuses an archive holding another
//!   cluster's WAL or WAL of unknown origin.
//! - Success is reported only after the store acknowledged the object: Postgres then may
//!   recycle the segment.
//! - Standbys archive too (`archive_mode = always`): every segment and history file a member
//!   received reaches the archive even when the primary that wrote it dies before archiving
//!   it (a failover must leave no gap). The primary and its standbys upload the same
//!   segments; create-only plus the comparison makes the second upload a no-op. A standby's
//!   copy that differs from the archived one is stored beside it, never over it
//!   ([`Archiver::keep_aside`]); so is a primary's copy of a segment of an earlier timeline
//!   (WAL it received as a standby). A primary's own timeline differing is refused loudly.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;

use super::cipher::Cipher;
use super::error::ArchiveError;
use super::identity::{self, IdentityError};
use super::layout::{self, Layout, parse_wal_name};
use super::pack;
use super::store::{Created, Store};
use crate::api::{ArchiveStatus, Compression};

/// How many archived names are remembered to answer repeated calls at once.
const REMEMBERED: usize = 4096;

type Upload = Shared<BoxFuture<'static, Result<(), Arc<ArchiveError>>>>;

/// The WAL archiver of one instance.
pub struct Archiver {
    store: Store,
    pg_wal: PathBuf,
    data_dir: PathBuf,
    compression: Compression,
    max_parallel: usize,
    permits: Arc<Semaphore>,
    state: Mutex<State>,
    /// This cluster's system identifier, once the store's identity was checked or claimed.
    identity_checked: tokio::sync::Mutex<Option<String>>,
}

#[derive(Default)]
struct State {
    inflight: HashMap<String, Upload>,
    done: BTreeSet<String>,
    done_order: VecDeque<String>,
    status: ArchiveStatus,
    /// Refusals since the manager started, and the last one.
    refusals: u64,
    refusal: Option<String>,
}

impl Archiver {
    /// An archiver of `data_dir`'s WAL to `store`.
    pub fn new(store: Store, data_dir: &Path, compression: Compression, max_parallel: u32) -> Arc<Self> {
        let max_parallel = max_parallel.clamp(1, 64) as usize;
        let status = ArchiveStatus { destination: store.describe(), ..Default::default() };
        Arc::new(Self {
            store,
            pg_wal: data_dir.join("pg_wal"),
            data_dir: data_dir.to_path_buf(),
            compression,
            max_parallel,
            permits: Arc::new(Semaphore::new(max_parallel)),
            state: Mutex::new(State { status, ..Default::default() }),
            identity_checked: tokio::sync::Mutex::new(None),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The archive's state for `/status` (the backlog is counted now).
    pub fn status(&self) -> ArchiveStatus {
        let mut status = self.state().status.clone();
        status.backlog = ready_files(&self.pg_wal).map(|r| r.len() as u64).ok();
        status
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The `pg_wal` directory archived from.
    pub fn pg_wal(&self) -> &Path {
        &self.pg_wal
    }

    /// How many uploads the archive refused until a person acts (a conflict, an identity
    /// that is not this cluster's) since the manager started, and the last refusal. A wait
    /// for WAL to be archived that sees the count grow knows it waits in vain (Postgres
    /// archives in order: a refused file holds back every later one).
    pub fn refusal(&self) -> (u64, Option<String>) {
        let state = self.state();
        (state.refusals, state.refusal.clone())
    }

    /// Forgets that `name` was uploaded, so the next call uploads it again (the store lost it).
    pub fn forget(&self, name: &str) {
        let mut state = self.state();
        if state.done.remove(name) {
            state.done_order.retain(|n| n != name);
        }
    }

    /// Whether the archive holds `name` (in any compression).
    pub async fn is_archived(&self, name: &str) -> Result<bool, super::store::StoreError> {
        for c in layout::compressions_from(self.compression) {
            let Some(object) = self.store.layout.wal_object(name, c) else { return Ok(false) };
            if self.store.exists(&object).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Archives the WAL file at `path` (absolute, or relative to the data directory, inside
    /// `pg_wal`), returning when it is safely in the store.
    pub async fn archive(self: &Arc<Self>, path: &Path) -> Result<(), Arc<ArchiveError>> {
        let name = self.wal_file_name(path)?;
        if let Err(e) = self.check_identity().await {
            let e = Arc::new(ArchiveError::Identity(e));
            self.record_failure(&name, &e);
            return Err(e);
        }
        let upload = self.start(&name);
        self.look_ahead(&name);
        let result = upload.await;
        self.finish(&name, &result);
        result
    }

    /// The file name of `path`, after checking it is a WAL file inside `pg_wal`.
    fn wal_file_name(&self, path: &Path) -> Result<String, ArchiveError> {
        let full = if path.is_absolute() { path.to_path_buf() } else { self.data_dir.join(path) };
        let name = full.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if parse_wal_name(&name).is_none() {
            return Err(ArchiveError::NotWal { path: path.display().to_string() });
        }
        let dir = full.parent().unwrap_or(Path::new(""));
        let in_pg_wal = dir == self.pg_wal
            || std::fs::canonicalize(dir)
                .ok()
                .zip(std::fs::canonicalize(&self.pg_wal).ok())
                .is_some_and(|(a, b)| a == b);
        if !in_pg_wal {
            return Err(ArchiveError::OutsidePgWal {
                path: path.display().to_string(),
                pg_wal: self.pg_wal.display().to_string(),
            });
        }
        Ok(name)
    }

    /// Checks that the store is still this cluster's archive: claimed (or found) once per life
    /// of the manager, then read again before every upload and by the audit. A store whose
    /// identity vanished (moved away, deleted, an empty directory mounted in its place) is
    /// refused, not claimed again: WAL stays in `pg_wal`, where it is safe and visible, until
    /// the archive is back (or the manager restarts, which claims an empty store anew).
    pub async fn check_identity(&self) -> Result<(), IdentityError> {
        let known = self.identity_checked.lock().await.clone();
        let Some(ours) = known else {
            let mut checked = self.identity_checked.lock().await;
            if checked.is_none() {
                identity::ensure(&self.store, &self.data_dir).await?;
                *checked = Some(identity::system_identifier(&self.data_dir)?.to_string());
            }
            self.set_store_problem(None);
            return Ok(());
        };
        let problem = match identity::read(&self.store).await? {
            Some(theirs) if theirs.system_identifier == ours => None,
            Some(theirs) => {
                Some(IdentityError::Taken { store: self.store.describe(), theirs: theirs.system_identifier, ours })
            }
            None => Some(IdentityError::Vanished {
                store: self.store.describe(),
                path: self.store.layout.identity().to_string(),
            }),
        };
        self.set_store_problem(problem.as_ref().map(ToString::to_string));
        problem.map_or(Ok(()), Err)
    }

    /// Records whether the store is refused; logs once per change.
    fn set_store_problem(&self, problem: Option<String>) {
        let mut state = self.state();
        match (&state.status.store_problem, &problem) {
            (None, Some(p)) => tracing::error!(destination = %self.store.describe(), error = %p, "WAL archive lost"),
            (Some(_), None) => tracing::info!(destination = %self.store.describe(), "WAL archive is sound again"),
            _ => {}
        }
        state.status.store_problem = problem;
    }

    /// Records the last audit of the archive (see `backup::audit`).
    pub fn set_audit(&self, audit: crate::api::ArchiveAudit) {
        self.state().status.audit = Some(audit);
    }

    /// The upload of `name`: the one in flight, a finished one, or a new one.
    fn start(self: &Arc<Self>, name: &str) -> Upload {
        let mut state = self.state();
        if state.done.contains(name) {
            return futures_util::future::ready(Ok(())).boxed().shared();
        }
        if let Some(upload) = state.inflight.get(name) {
            return upload.clone();
        }
        let me = Arc::clone(self);
        let owned = name.to_string();
        // A task of its own: the upload goes on when the caller gives up (Postgres' call
        // times out), and the next call finds it done.
        let task = tokio::spawn(async move {
            let _permit = me.permits.acquire().await.map_err(|e| Arc::new(ArchiveError::Local(e.to_string())))?;
            me.upload(&owned).await.map_err(Arc::new)
        });
        let upload: Upload = async move {
            task.await.unwrap_or_else(|e| Err(Arc::new(ArchiveError::Local(format!("upload task: {e}")))))
        }
        .boxed()
        .shared();
        state.inflight.insert(name.to_string(), upload.clone());
        upload
    }

    /// Starts the uploads of the next ready files after `name`, up to `maxParallel` in flight.
    fn look_ahead(self: &Arc<Self>, name: &str) {
        let Ok(ready) = ready_files(&self.pg_wal) else { return };
        let mut started = 0;
        for next in ready.iter().filter(|n| n.as_str() != name) {
            let busy = {
                let state = self.state();
                if state.done.contains(next) || state.inflight.contains_key(next) {
                    continue;
                }
                state.inflight.len()
            };
            if busy >= self.max_parallel * 2 || started >= self.max_parallel {
                break;
            }
            let me = Arc::clone(self);
            let upload = self.start(next);
            let next = next.clone();
            tokio::spawn(async move {
                let result = upload.await;
                me.finish(&next, &result);
            });
            started += 1;
        }
    }

    fn finish(&self, name: &str, result: &Result<(), Arc<ArchiveError>>) {
        let mut state = self.state();
        state.inflight.remove(name);
        match result {
            Ok(()) => {
                if state.done.insert(name.to_string()) {
                    state.done_order.push_back(name.to_string());
                    state.status.archived_total += 1;
                    if state.status.last_archived_wal.as_deref().is_none_or(|last| name > last) {
                        state.status.last_archived_wal = Some(name.to_string());
                    }
                    state.status.last_archived_at = Some(jiff::Timestamp::now());
                }
                while state.done_order.len() > REMEMBERED {
                    if let Some(old) = state.done_order.pop_front() {
                        state.done.remove(&old);
                    }
                }
            }
            Err(e) => {
                drop(state);
                self.record_failure(name, e);
            }
        }
    }

    fn record_failure(&self, name: &str, error: &ArchiveError) {
        tracing::error!(wal = name, %error, "WAL archive failed");
        let mut state = self.state();
        if error.is_refusal() {
            state.refusals += 1;
            state.refusal = Some(format!("{name}: {error}"));
        }
        state.status.failures_total += 1;
        state.status.last_failed_wal = Some(name.to_string());
        state.status.last_failure = Some(error.to_string());
        state.status.last_failed_at = Some(jiff::Timestamp::now());
    }

    /// Packs and uploads one file; compares with what is there when the name is taken.
    async fn upload(&self, name: &str) -> Result<(), ArchiveError> {
        let local = self.pg_wal.join(name);
        let c = self.compression;
        let object = self.store.layout.wal_object(name, c).ok_or_else(|| ArchiveError::NotWal { path: name.into() })?;
        let cipher = self.store.cipher().map(|k| Cipher::clone(k));
        let path = local.clone();
        let packed = tokio::task::spawn_blocking(move || pack::pack(&path, c, cipher.as_ref()))
            .await
            .map_err(|e| ArchiveError::Local(e.to_string()))?
            .map_err(|e| ArchiveError::Local(format!("cannot read and compress {}: {e}", local.display())))?;
        let (size, started) = (packed.len(), std::time::Instant::now());
        match self.store.create(&object, packed.into_payload()).await? {
            Created::Written => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(wal = name, object = %object, bytes = size, ms, "WAL archived");
                Ok(())
            }
            Created::AlreadyExists => self.compare_existing(name, &object, c, &local).await,
        }
    }

    /// Succeeds when the object already at `object` holds exactly the local file's content.
    async fn compare_existing(
        &self,
        name: &str,
        object: &object_store::path::Path,
        c: Compression,
        local: &Path,
    ) -> Result<(), ArchiveError> {
        let existing = self.store.get(object).await?.unwrap_or_default();
        let cipher = self.store.opener(&existing).map_err(|e| ArchiveError::Local(e.to_string()))?.cloned();
        let local = local.to_path_buf();
        let same = tokio::task::spawn_blocking(move || pack::same_content(&existing, c, cipher.as_ref(), &local))
            .await
            .map_err(|e| ArchiveError::Local(e.to_string()))?
            .map_err(|e| ArchiveError::Local(format!("cannot compare with the archived {name}: {e}")))?;
        if same {
            tracing::info!(wal = name, "WAL already archived with the same content");
            return Ok(());
        }
        if self.data_dir.join("standby.signal").exists() || of_an_ancestor_timeline(&self.pg_wal, name) {
            return self.keep_aside(name, object, c).await;
        }
        Err(ArchiveError::Conflict { name: name.into(), object: object.to_string(), store: self.store.describe() })
    }

    /// A standby's copy of `name` that differs from the archived one: the archived object is
    /// kept as it is, and the standby's copy is stored beside it (`<object>.diverged-<ms>`,
    /// which no restore reads) so neither is lost and the standby can recycle its file. A
    /// standby can hold such a copy when it received WAL of a timeline past the point where
    /// another member branched off (an old primary's last writes).
    async fn keep_aside(
        &self,
        name: &str,
        object: &object_store::path::Path,
        c: Compression,
    ) -> Result<(), ArchiveError> {
        let aside =
            object_store::path::Path::from(format!("{object}.diverged-{}", jiff::Timestamp::now().as_millisecond()));
        let cipher = self.store.cipher().map(|k| Cipher::clone(k));
        let path = self.pg_wal.join(name);
        let packed = tokio::task::spawn_blocking(move || pack::pack(&path, c, cipher.as_ref()))
            .await
            .map_err(|e| ArchiveError::Local(e.to_string()))?
            .map_err(|e| ArchiveError::Local(format!("cannot read and compress {name}: {e}")))?;
        self.store.create(&aside, packed.into_payload()).await?;
        tracing::warn!(
            wal = name,
            archived = %object,
            kept_as = %aside,
            "this standby's copy of a WAL file differs from the archived one: the archived one is kept, \
             this copy is stored beside it (a timeline this standby followed past a branch point?)"
        );
        Ok(())
    }

    /// The layout (for tests and the restorer).
    pub fn layout(&self) -> &Layout {
        &self.store.layout
    }
}

/// Whether `name` is a segment of a timeline older than the newest one `pg_wal` has a history
/// file of: WAL this instance received as a standby before a promotion (its own or the one it
/// followed). A copy of it that differs from the archived one differs after the switch point
/// or in what a dying primary never finished streaming; it is kept aside, never a refusal that
/// would stop the archiving of the current timeline behind it.
fn of_an_ancestor_timeline(pg_wal: &Path, name: &str) -> bool {
    let timeline = match parse_wal_name(name) {
        Some(layout::WalName::Segment(id) | layout::WalName::Partial(id) | layout::WalName::BackupHistory(id)) => {
            id.timeline
        }
        _ => return false,
    };
    let newest = std::fs::read_dir(pg_wal).into_iter().flatten().flatten().filter_map(|e| {
        match parse_wal_name(e.file_name().to_str()?) {
            Some(layout::WalName::History(t)) => Some(t),
            _ => None,
        }
    });
    newest.max().is_some_and(|t| timeline < t)
}

/// WAL files Postgres has marked ready to archive, oldest first (history files first: a
/// promotion's history file must land before the new timeline's segments).
pub fn ready_files(pg_wal: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(pg_wal.join("archive_status"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".ready").map(str::to_string))
        .filter(|n| parse_wal_name(n).is_some())
        .collect();
    names.sort_by_key(|n| (!matches!(parse_wal_name(n), Some(layout::WalName::History(_))), n.clone()));
    Ok(names)
}

#[cfg(test)]
#[path = "archiver_tests.rs"]
mod tests;
