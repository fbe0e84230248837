//! The OS user Postgres runs as, directory ownership, and secrets read from files.
//!
//! Postgres refuses to run as root. When the manager is root (a developer's machine, or an
//! image without `runAsUser`) every Postgres process is started as [`OsUser`] and the
//! directories Postgres writes are handed to that user. When the manager is not root,
//! Postgres simply runs as the manager's own user.

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use nix::unistd::{Gid, Uid, User};

/// Errors about users, ownership and secret files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named user does not exist.
    #[error("OS user {0:?} does not exist")]
    NoSuchUser(String),
    /// Postgres cannot run as root.
    #[error("OS user {0:?} is root, and Postgres refuses to run as root")]
    Root(String),
    /// Looking the user up failed.
    #[error("cannot look up OS user {name:?}: {source}")]
    Lookup {
        /// The user.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// A file or directory operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A secret file is empty.
    #[error("secret file {0} is empty")]
    EmptySecret(String),
    /// A directory the manager neither owns nor can write in.
    #[error(
        "{path} belongs to uid {owner} (mode {mode:o}) and uid {uid} cannot write in it \
         (fix: mount it writable for the pod's fsGroup, or give it to uid {uid})"
    )]
    NotWritable {
        /// The directory.
        path: String,
        /// Its owner.
        owner: u32,
        /// Its mode bits.
        mode: u32,
        /// The manager's uid.
        uid: u32,
    },
}

/// The user Postgres runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    /// User name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Whether the manager must switch to this user when it starts Postgres (it is root).
    pub switch: bool,
}

impl OsUser {
    /// The user Postgres runs as: `configured` when the manager is root, else the manager's.
    pub fn for_postgres(configured: &str) -> Result<Self, Error> {
        let euid = Uid::effective();
        if !euid.is_root() {
            let name = User::from_uid(euid).ok().flatten().map(|u| u.name).unwrap_or_else(|| euid.to_string());
            return Ok(Self { name, uid: euid.as_raw(), gid: Gid::effective().as_raw(), switch: false });
        }
        let user = User::from_name(configured)
            .map_err(|source| Error::Lookup { name: configured.into(), source })?
            .ok_or_else(|| Error::NoSuchUser(configured.into()))?;
        if user.uid.is_root() {
            return Err(Error::Root(configured.into()));
        }
        Ok(Self { name: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw(), switch: true })
    }

    /// Sets up `cmd` to run as this user (only when the manager is root).
    pub fn apply(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        if self.switch {
            cmd.uid(self.uid).gid(self.gid);
        }
    }

    /// Creates `dir` (and missing parents) with `mode`, owned by this user.
    /// An existing directory gets the mode and owner too.
    pub fn ensure_dir(&self, dir: &Path, mode: u32) -> Result<(), Error> {
        let io = |what, source| Error::Io { what, path: dir.display().to_string(), source };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .map_err(|e| io("cannot create directory", e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| io("cannot chmod", e))?;
        self.chown(dir)
    }

    /// Prepares the run directory, which in a pod is a volume's root (an `emptyDir`, owned by
    /// root and group `fsGroup`, mode 2777): created `mode` and this user's where it can be, as
    /// [`ensure_dir`](Self::ensure_dir). An existing directory that belongs to someone else,
    /// when the manager is not root, is not the manager's to chmod: it is used as it is,
    /// provided the manager can create files in it. What the manager and Postgres create there
    /// carries a private mode of its own (sockets 0600/0700, `pgpass` 0600, `tls/` 0700), and a
    /// volume of a pod is reachable from that pod only. Answers whether it was used as it is.
    pub fn ensure_run_dir(&self, dir: &Path, mode: u32) -> Result<bool, Error> {
        use std::os::unix::fs::MetadataExt;
        let euid = Uid::effective();
        let foreign = match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() && !euid.is_root() && meta.uid() != euid.as_raw() => Some(meta),
            _ => None,
        };
        let Some(meta) = foreign else {
            self.ensure_dir(dir, mode)?;
            return Ok(false);
        };
        let access = nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK;
        if nix::unistd::access(dir, access).is_err() {
            return Err(Error::NotWritable {
                path: dir.display().to_string(),
                owner: meta.uid(),
                mode: meta.mode() & 0o7777,
                uid: euid.as_raw(),
            });
        }
        Ok(true)
    }

    /// Gives `path` to this user (only when the manager is root).
    pub fn chown(&self, path: &Path) -> Result<(), Error> {
        if !self.switch {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(|source| Error::Io {
            what: "cannot chown",
            path: path.display().to_string(),
            source,
        })
    }

    /// Gives a symbolic link itself (not what it points to) to this user (only when the
    /// manager is root), like the links Postgres' tools create.
    pub fn lchown(&self, path: &Path) -> Result<(), Error> {
        if !self.switch {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid)).map_err(|source| Error::Io {
            what: "cannot chown",
            path: path.display().to_string(),
            source,
        })
    }
}

/// A password read from a file. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret value; handle with care.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Reads a secret file: the whole content less one trailing newline. An empty secret is an error.
pub fn read_secret(path: &Path) -> Result<Secret, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: "cannot read secret file",
        path: path.display().to_string(),
        source,
    })?;
    let value = text.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&text);
    if value.is_empty() {
        return Err(Error::EmptySecret(path.display().to_string()));
    }
    Ok(Secret(value.to_string()))
}
