//! Noticing edits of the configuration file.
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

/// Watches the directory of `file` and sends `()` on `tx` whenever `file` (or a Kubernetes
/// `..data` swap) may have changed.
pub fn watch_config(file: &Path, tx: mpsc::Sender<()>) -> notify::Result<ConfigWatch> {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let name = file.file_name().map(|n| n.to_os_string());
    let mut debouncer = new_debouncer(Duration::from_millis(200), None, move |res: DebounceEventResult| {
        let Ok(events) = res else { return };
        // Reads (our own reload opens the file) are access events: only changes count.
        let changes = events.iter().filter(|e| e.kind.is_create() || e.kind.is_modify() || e.kind.is_remove());
        let relevant = changes.flat_map(|e| e.paths.iter()).any(|p| {
            let n = p.file_name();
            n == name.as_deref() || n == Some(std::ffi::OsStr::new("..data"))
        });
        if relevant {
            // A full channel already holds a pending reload: dropping this one loses nothing.
            let _ = tx.try_send(());
        }
    })?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}
