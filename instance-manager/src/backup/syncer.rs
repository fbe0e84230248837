//! Making restored files durable while the restore goes on.
//!
//! A restored data directory must be on disk before Postgres uses it: Postgres itself fsyncs
//! every file of a directory that has a `backup_label` before it replays (one file after the
//! other, after the whole restore). Flushing each file as soon as it is unpacked, on threads
//! of their own, overlaps the disk's writeback with the download and decompression of the next
//! files; when Postgres starts, nothing is left dirty.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

/// Why a restored tree could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A file or directory could not be opened or flushed.
    #[error("cannot flush {path}: {source}")]
    Flush {
        /// The file or directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A directory could not be listed.
    #[error("cannot read {dir}: {source}")]
    ReadDir {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// A flushing thread panicked: what it had to flush is unknown.
    #[error("a file-flushing thread panicked")]
    Panicked,
}

/// Threads flushing files: writeback is the disk's work, two keep it busy.
const THREADS: usize = 2;

/// Flushes the files it is given on background threads.
pub struct Syncer {
    tx: Option<mpsc::Sender<PathBuf>>,
    threads: Vec<std::thread::JoinHandle<Result<(), SyncError>>>,
}

impl Syncer {
    /// Starts the flushing threads.
    pub fn start() -> Self {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..THREADS)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || -> Result<(), SyncError> {
                    loop {
                        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(path) = next else { return Ok(()) };
                        sync_file(&path)?;
                    }
                })
            })
            .collect();
        Self { tx: Some(tx), threads }
    }

    /// Queues `path` (a regular file, fully written) to be flushed.
    pub fn push(&self, path: PathBuf) {
        if let Some(tx) = &self.tx {
            // The threads only stop early after a failure, which finish() reports.
            let _ = tx.send(path);
        }
    }

    /// Waits until every queued file is flushed, then flushes every directory under `root`.
    pub fn finish(mut self, root: &Path) -> Result<(), SyncError> {
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            t.join().map_err(|_| SyncError::Panicked)??;
        }
        sync_dirs(root)
    }
}

fn sync_file(path: &Path) -> Result<(), SyncError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| SyncError::Flush { path: path.display().to_string(), source })
}

/// Flushes `root` and every directory below it (their entries: the files' names).
fn sync_dirs(root: &Path) -> Result<(), SyncError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|source| SyncError::ReadDir { dir: dir.display().to_string(), source })?;
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
        sync_file(&dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn flushes_every_pushed_file_and_the_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("base/1")).unwrap();
        let syncer = Syncer::start();
        for i in 0..50 {
            let p = dir.path().join(format!("base/1/{i}"));
            std::fs::write(&p, vec![i as u8; 8192]).unwrap();
            syncer.push(p);
        }
        syncer.finish(dir.path()).unwrap();
    }

    #[test]
    fn a_file_that_vanished_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::start();
        syncer.push(dir.path().join("missing"));
        let e = syncer.finish(dir.path()).unwrap_err();
        assert!(matches!(&e, SyncError::Flush { path, .. } if path.ends_with("missing")), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("cannot flush") && e.contains("missing"), "{e}");
    }
}
