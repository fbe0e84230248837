//! Validation of `walDir`, the directory of `pg_wal` on a volume of its own: where it may be,
//! and whether what is on disk there fits the data directory (`pgdata::wal_dir` has the rule).
//!
//! Like `dataDir` it must be a directory the manager creates and renames into place on its
//! volume: absolute, its parent existing, not itself a mount point (a mount point cannot be
//! renamed onto). Neither it nor `dataDir` may be inside the other: a data directory inside its
//! own WAL directory would be renamed away with it, WAL inside the data directory would be
//! copied by every backup and rewind as data.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::validate::{Collector, is_mount_point};
use crate::api::InstanceConfig;
use crate::osuser::OsUser;

const FIELD: &str = "walDir";

/// Checks `walDir` when it is set; `user` is Postgres' OS user when it could be resolved.
pub(super) fn check_wal_dir(c: &mut Collector, cfg: &InstanceConfig, user: Option<&OsUser>) {
    let Some(wal_dir) = &cfg.wal_dir else { return };
    if !wal_dir.is_absolute() {
        c.add(
            FIELD,
            format!("{} is not an absolute path", wal_dir.display()),
            "use an absolute path on the WAL volume, such as /var/lib/postgresql/wal/pg_wal",
        );
        return;
    }
    if !cfg.data_dir.is_absolute() {
        // dataDir's own problem is reported; nothing to compare with.
        return;
    }
    if let Some(message) = overlap(&cfg.data_dir, wal_dir) {
        c.add(
            FIELD,
            message,
            "give the WAL a directory of its own, outside dataDir, e.g. /var/lib/postgresql/wal/pg_wal",
        );
        return;
    }
    let before = c.len();
    check_place(c, wal_dir, user);
    if c.len() > before {
        return;
    }
    if let Err(e) = crate::pgdata::wal_dir::inspect(&crate::paths::Paths::of(cfg)) {
        c.add(FIELD, e.to_string(), e.hint());
    }
}

/// Why `wal_dir` and `data_dir` overlap, if they do: lexically, and once the symbolic links of
/// their existing ancestors are resolved.
pub(super) fn overlap(data_dir: &Path, wal_dir: &Path) -> Option<String> {
    let pairs = [(lexical(data_dir), lexical(wal_dir)), (resolved(data_dir), resolved(wal_dir))];
    for (data, wal) in pairs {
        let (w, d) = (wal_dir.display(), data_dir.display());
        if wal == data {
            return Some(format!("{w} is dataDir itself"));
        }
        if wal.starts_with(&data) {
            return Some(format!("{w} is inside dataDir {d}"));
        }
        if data.starts_with(&wal) {
            return Some(format!("{w} contains dataDir {d}"));
        }
    }
    None
}

/// `path` without `.` and with `..` applied, without looking at the disk.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` with its longest existing ancestor's symbolic links resolved.
fn resolved(path: &Path) -> PathBuf {
    let path = lexical(path);
    for ancestor in path.ancestors() {
        if let Ok(real) = std::fs::canonicalize(ancestor) {
            let rest = path.strip_prefix(ancestor).unwrap_or(Path::new(""));
            return if rest.as_os_str().is_empty() { real } else { real.join(rest) };
        }
    }
    path
}

fn check_place(c: &mut Collector, wal_dir: &Path, user: Option<&OsUser>) {
    let meta = match std::fs::symlink_metadata(wal_dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = wal_dir.parent().filter(|p| !p.is_dir()) {
                c.add(
                    FIELD,
                    format!("parent directory {} does not exist", parent.display()),
                    "mount the WAL volume there, or create it",
                );
            }
            return;
        }
        Err(e) => {
            c.add(FIELD, format!("cannot inspect {}: {e}", wal_dir.display()), "check the path and its permissions");
            return;
        }
    };
    if meta.is_symlink() {
        c.add(
            FIELD,
            format!("{} is a symbolic link", wal_dir.display()),
            "point walDir at the directory itself, on the WAL volume",
        );
        return;
    }
    if !meta.is_dir() {
        c.add(FIELD, format!("{} exists and is not a directory", wal_dir.display()), "point walDir at a directory");
        return;
    }
    if is_mount_point(wal_dir, &meta) {
        c.add(
            FIELD,
            format!("{} is a mount point", wal_dir.display()),
            "use a subdirectory of the WAL volume, e.g. <mount>/pg_wal: the manager creates walDir and renames it into place",
        );
    }
    let empty = std::fs::read_dir(wal_dir).map(|mut d| d.next().is_none()).unwrap_or(false);
    if let Some(user) = user.filter(|u| !empty && meta.uid() != u.uid) {
        c.add(
            FIELD,
            format!("{} is owned by uid {}, not by {} (uid {})", wal_dir.display(), meta.uid(), user.name, user.uid),
            format!("chown -R {} {}", user.name, wal_dir.display()),
        );
    }
}

#[cfg(test)]
#[path = "validate_wal_dir_tests.rs"]
mod tests;
