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
