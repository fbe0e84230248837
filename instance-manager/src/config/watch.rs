//! Noticing edits of the configuration file and of the password files it names.
//!
//! The *directory* is watched, not the file: editors replace files by renaming, and
//! Kubernetes updates a mounted ConfigMap by swapping the `..data` symlink, so a watch on
//! the file itself would go quiet after the first change. Events are debounced; what to do
//! about a change (reload, validate, apply) is the receiver's business.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// Keeps the watch alive; dropping it stops watching.
pub type ConfigWatch = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// Watches the directories of `files` (the configuration file, mounted password Secrets)
/// and sends `()` on `tx` whenever one of them (or a Kubernetes `..data` swap next to one)
/// may have changed.
pub fn watch_files(files: &[PathBuf], tx: mpsc::Sender<()>) -> notify::Result<ConfigWatch> {
    let files: Vec<PathBuf> = files.iter().map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone())).collect();
    let mut dirs: Vec<PathBuf> =
        files.iter().map(|f| f.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"))).collect();
    dirs.sort();
    dirs.dedup();
    let watched = files.clone();
    let mut debouncer = new_debouncer(Duration::from_millis(200), None, move |res: DebounceEventResult| {
        let Ok(events) = res else { return };
        // Reads (our own reload opens the file) are access events: only changes count.
        let changes = events.iter().filter(|e| e.kind.is_create() || e.kind.is_modify() || e.kind.is_remove());
        let relevant = changes.flat_map(|e| e.paths.iter()).any(|p| {
            let data_swap = p.file_name() == Some(std::ffi::OsStr::new("..data"));
            let ours = watched.iter().any(|f| f.file_name() == p.file_name() && f.parent() == p.parent());
            ours || data_swap
        });
        if relevant {
            // A full channel already holds a pending reload: dropping this one loses nothing.
            let _ = tx.try_send(());
        }
    })?;
    for dir in &dirs {
        debouncer.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(debouncer)
}
