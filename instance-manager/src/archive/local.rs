//! A `file://` store's directory on this machine: as private as the data directory (the
//! archive holds the whole database), and without the staged files an interrupted upload
//! left.
//!
//! - **Privacy**: the cluster's directory (`<dir>/<cluster>`) is created 0700 before anything
//!   is written in it, so nothing below it is reachable by another local user even while an
//!   object is being written; each object is then made 0600 and every directory below `<dir>`
//!   on its way 0700. `<dir>` itself is the operator's and keeps its mode.
//! - **Staged files**: the local store writes a multipart upload (a base backup's data) to
//!   `<object>#<n>` and renames it when complete; a manager killed midway leaves that file,
//!   which listings skip, so nothing else would ever remove it. [`sweep_staged`] removes
//!   those not written to for a while.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Mode of objects.
const FILE_MODE: u32 = 0o600;
/// Mode of directories.
const DIR_MODE: u32 = 0o700;

fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Creates `<dir>/<root>` (the cluster's objects) with private directories. Existing ones are
/// made private when this user may (a read-only source archive is only read).
pub fn prepare(dir: &Path, root: &str) -> std::io::Result<()> {
    let mut path = dir.to_path_buf();
    for part in root.split('/').filter(|p| !p.is_empty()) {
        path.push(part);
        match std::fs::create_dir(&path) {
            Ok(()) => chmod(&path, DIR_MODE)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Err(e) = chmod(&path, DIR_MODE) {
                    tracing::debug!(dir = %path.display(), error = %e, "cannot make an archive directory private");
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes the object `object` (a store path below `dir`) 0600 and its directories below `dir`
/// 0700.
pub fn seal(dir: &Path, object: &str) -> std::io::Result<()> {
    let file = dir.join(object);
    chmod(&file, FILE_MODE)?;
    let mut parent = file.parent();
    while let Some(p) = parent.filter(|p| p.starts_with(dir) && *p != dir) {
        chmod(p, DIR_MODE)?;
        parent = p.parent();
    }
    Ok(())
}

/// Whether `name` is a staged upload file: `<object>#<digits>`.
fn is_staged(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the staged upload files under `dir` last written more than `idle` ago; returns
/// what it removed.
pub fn sweep_staged(dir: &Path, idle: Duration) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    let now = SystemTime::now();
    while let Some(d) = pending.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if is_staged(&entry.file_name().to_string_lossy())
                && meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_some_and(|age| age > idle)
            {
                std::fs::remove_file(entry.path())?;
                removed.push(entry.path());
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn objects_and_their_directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path(), "backups/main").unwrap();
        assert_eq!(mode(&dir.path().join("backups")), 0o700);
        assert_eq!(mode(&dir.path().join("backups/main")), 0o700);
        let obj = dir.path().join("backups/main/wal/0000000100000000/x.zst");
        std::fs::create_dir_all(obj.parent().unwrap()).unwrap();
        chmod(obj.parent().unwrap(), 0o755).unwrap();
        std::fs::write(&obj, b"wal").unwrap();
        chmod(&obj, 0o644).unwrap();
        let before = mode(dir.path());
        seal(dir.path(), "backups/main/wal/0000000100000000/x.zst").unwrap();
        assert_eq!(mode(&obj), 0o600);
        assert_eq!(mode(obj.parent().unwrap()), 0o700);
        assert_eq!(mode(dir.path()), before, "the operator's directory keeps its mode");
    }

    #[test]
    fn stale_staged_uploads_are_swept_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("main/base/20260101T000000Z");
        std::fs::create_dir_all(&base).unwrap();
        for name in ["data.tar.zst#1", "data.tar.zst#12", "backup.json", "odd#name"] {
            std::fs::write(base.join(name), b"x").unwrap();
        }
        let old = nix::sys::time::TimeVal::new(1_000_000, 0);
        nix::sys::stat::utimes(&base.join("data.tar.zst#1"), &old, &old).unwrap();
        let removed = sweep_staged(dir.path(), Duration::from_secs(600)).unwrap();
        assert_eq!(removed, [base.join("data.tar.zst#1")]);
        for kept in ["data.tar.zst#12", "backup.json", "odd#name"] {
            assert!(base.join(kept).exists(), "{kept}");
        }
        assert!(sweep_staged(&dir.path().join("absent"), Duration::ZERO).unwrap().is_empty());
    }
}
