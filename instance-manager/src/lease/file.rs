//! The lease as a JSON file shared by the instance managers of one host (docs/architecture.md §4.1).
//!
//! The file holds `{ "version": <u64>, "record": <LeaseRecord> }`. Every operation takes an
//! exclusive `flock` on `<path>.lock` (a separate, never-replaced file: the lease file itself is
//! replaced by `rename`, so a lock on it would lock a file that is no longer *the* file), then
//! reads, compares the version, and writes a temporary file that is fsynced, renamed over the
//! lease file, and made durable by an fsync of the directory. Readers therefore see either the
//! old or the new document, never a torn one, and two processes cannot both pass the version
//! check: the same compare-and-swap semantics as a Kubernetes `resourceVersion`.
//!
//! Versions count up from 1 at creation, prefixed by the file's *generation*, a random word
//! chosen when the file is created (`"<generation>.<n>"`): a lease file deleted and created
//! again never accepts a version read from its predecessor, as a Kubernetes `resourceVersion`
//! never repeats. (Files written before generations existed have none; their versions are the
//! bare counter.) A deleted file is not a released lease: the HA loop waits `leaseDuration`
//! before anyone but the last holder creates it again, and the new term starts above the
//! highest any member has seen.
//!
//! I/O is blocking and runs on tokio's blocking pool. If the caller gives up (its future is
//! dropped, e.g. by [`super::with_deadline`]) while the operation still waits for the lock,
//! the operation is skipped once the lock is obtained; past that point it completes, like a
//! network write whose answer is lost.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{LeaseError, LeaseFuture, LeaseRecord, LeaseStore, Result, Version};

/// A [`LeaseStore`] on a local JSON file, safe across processes.
#[derive(Clone, Debug)]
pub struct FileLeaseStore {
    paths: Arc<Paths>,
}

#[derive(Debug)]
struct Paths {
    lease: PathBuf,
    lock: PathBuf,
    tmp: PathBuf,
}

/// The document on disk.
#[derive(Serialize, Deserialize)]
struct LeaseFile {
    /// Chosen at creation, so that versions of a re-created file never repeat.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    generation: String,
    version: u64,
    record: LeaseRecord,
}

impl LeaseFile {
    fn version(&self) -> Version {
        if self.generation.is_empty() {
            Version(self.version.to_string())
        } else {
            Version(format!("{}.{}", self.generation, self.version))
        }
    }
}

/// A word that differs between creations of the lease file (time and process).
fn new_generation() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id())
}

impl FileLeaseStore {
    /// A store on the lease file `path`; `<path>.lock` and `<path>.tmp` live beside it. Nothing
    /// is touched until the first operation; the directory must exist.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let lease = path.into();
        let sibling = |suffix: &str| {
            let mut name = lease.clone().into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        };
        let paths = Paths { lock: sibling(".lock"), tmp: sibling(".tmp"), lease };
        Self { paths: Arc::new(paths) }
    }

    /// The lease file.
    pub fn path(&self) -> &Path {
        &self.paths.lease
    }

    /// Runs `op` under the lock on the blocking pool.
    fn locked<T, F>(&self, op: F) -> LeaseFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Paths) -> Result<T> + Send + 'static,
    {
        let paths = Arc::clone(&self.paths);
        let abandoned = Arc::new(AtomicBool::new(false));
        let guard = AbandonOnDrop(Arc::clone(&abandoned));
        Box::pin(async move {
            let task = tokio::task::spawn_blocking(move || {
                let _lock = lock(&paths.lock)?;
                if abandoned.load(Ordering::SeqCst) {
                    return Err(unavailable("operation abandoned by its caller", &paths.lease, None));
                }
                op(&paths)
            });
            let result = task.await.unwrap_or_else(|e| {
                Err(LeaseError::Unavailable { message: format!("lease file operation failed to run: {e}") })
            });
            drop(guard);
            result
        })
    }
}

/// Sets the flag when the caller drops the operation's future before it completed.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl LeaseStore for FileLeaseStore {
    fn get(&self) -> LeaseFuture<'_, Option<(LeaseRecord, Version)>> {
        self.locked(|paths| Ok(read(&paths.lease)?.map(|f| (f.version(), f.record)).map(|(v, r)| (r, v))))
    }

    fn create<'a>(&'a self, record: &'a LeaseRecord) -> LeaseFuture<'a, Version> {
        let record = record.normalized();
        self.locked(move |paths| {
            if read(&paths.lease)?.is_some() {
                return Err(LeaseError::Conflict);
            }
            let doc = LeaseFile { generation: new_generation(), version: 1, record };
            write(paths, &doc)?;
            Ok(doc.version())
        })
    }

    fn replace<'a>(&'a self, record: &'a LeaseRecord, expected: &'a Version) -> LeaseFuture<'a, Version> {
        let record = record.normalized();
        let expected = expected.clone();
        self.locked(move |paths| {
            // Gone, or moved on: both are "someone else wrote", the caller re-reads.
            let Some(current) = read(&paths.lease)? else { return Err(LeaseError::Conflict) };
            if current.version() != expected {
                return Err(LeaseError::Conflict);
            }
            let version = current.version.checked_add(1).ok_or_else(|| LeaseError::Fatal {
                message: format!("lease file {} has reached the largest version", paths.lease.display()),
            })?;
            let doc = LeaseFile { generation: current.generation, version, record };
            write(paths, &doc)?;
            Ok(doc.version())
        })
    }

    fn describe(&self) -> String {
        format!("file {}", self.paths.lease.display())
    }
}

/// Takes the exclusive lock, creating the lock file if needed. Released on drop.
fn lock(path: &Path) -> Result<Flock<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io_error("cannot open the lease lock file", path, &e))?;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(locked) => return Ok(locked),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, errno)) => {
                return Err(unavailable("cannot lock the lease lock file", path, Some(&io::Error::from(errno))));
            }
        }
    }
}

/// Reads the lease file: `None` if it does not exist.
fn read(path: &Path) -> Result<Option<LeaseFile>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot read the lease file", path, &e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| LeaseError::Fatal {
        message: format!(
            "lease file {} is corrupt: {e}; hint: stop every instance sharing it, then fix or remove \
             the file (removing it releases the lease)",
            path.display()
        ),
    })
}

/// Replaces the lease file atomically and durably.
fn write(paths: &Paths, doc: &LeaseFile) -> Result<()> {
    let json = serde_json::to_vec_pretty(doc)
        .map_err(|e| LeaseError::Fatal { message: format!("cannot serialise the lease record: {e}") })?;
    let tmp = &paths.tmp;
    let mut file = File::create(tmp).map_err(|e| io_error("cannot create", tmp, &e))?;
    file.write_all(&json).and_then(|()| file.sync_all()).map_err(|e| io_error("cannot write", tmp, &e))?;
    drop(file);
    fs::rename(tmp, &paths.lease).map_err(|e| io_error("cannot rename the new lease file to", &paths.lease, &e))?;
    // The rename is durable only once the directory is.
    let dir = match paths.lease.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("cannot fsync directory", dir, &e))
}

/// Classifies an I/O error: permissions and missing directories need a human, the rest may pass.
fn io_error(what: &str, path: &Path, e: &io::Error) -> LeaseError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => LeaseError::Fatal {
            message: format!(
                "{what} {}: {e}; hint: every instance sharing the lease file must be able to write its directory",
                path.display()
            ),
        },
        io::ErrorKind::NotFound => LeaseError::Fatal {
            message: format!("{what} {}: {e}; hint: create the lease file's directory", path.display()),
        },
        _ => unavailable(what, path, Some(e)),
    }
}

fn unavailable(what: &str, path: &Path, e: Option<&io::Error>) -> LeaseError {
    let cause = e.map(|e| format!(": {e}")).unwrap_or_default();
    LeaseError::Unavailable { message: format!("{what} {}{cause}", path.display()) }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
