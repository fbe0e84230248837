//! The data directory: creating one (initdb, or a base backup of the primary) and the signal
//! files that tell Postgres its role.
//!
//! A data directory is created whole or not at all: the tool writes into a staging directory
//! beside it (`.<name>.bootstrap`), which is renamed into place only once complete. A crash
//! halfway leaves a staging directory that the next attempt deletes, never a data directory
//! that looks usable and is not. No tool is still writing into it by then: tools die with the
//! manager, and a start first kills what a killed predecessor left ([`crate::supervisor::guard`]).
//! Removing one is the same in reverse: it is renamed to the staging name first, so a crash
//! while its files are deleted leaves no half of it under the data directory's name.
//!
//! With `walDir`, `pg_wal` is a link to a directory on another volume, built beside it the
//! same way; [`wal_dir`] has the rule that keeps a crash from leaving WAL nobody owns or
//! mixing two data directories' WAL.

mod control;
pub mod wal_dir;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use control::{ClusterState, cluster_state, latest_checkpoint, rewind};
use std::time::Duration;

use crate::config::Validated;
use crate::osuser::OsUser;
use crate::paths::Paths;
use crate::supervisor::{self, Supervisor};

/// Errors creating or preparing a data directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool failed.
    #[error("{tool} failed ({status}): {last_line}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// How it exited.
        status: supervisor::ExitStatus,
        /// What it said last.
        last_line: String,
    },
    /// The supervisor could not start it.
    #[error(transparent)]
    Spawn(#[from] supervisor::Error),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Ownership or user problems.
    #[error(transparent)]
    OsUser(#[from] crate::osuser::Error),
    /// `walDir` cannot be used as it is (nothing was changed on disk).
    #[error("walDir: {0} (fix: {hint})", hint = .0.hint())]
    WalDir(#[from] wal_dir::WalDirError),
}

impl Error {
    /// Whether trying again cannot help: a person must act (a `walDir` that is not this data
    /// directory's). Tools failing and files that cannot be written may be transient.
    pub fn needs_person(&self) -> bool {
        matches!(self, Self::WalDir(_))
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { what, path: path.display().to_string(), source }
}

/// Whether `dir` holds a data directory (as opposed to missing or empty).
pub fn is_initialized(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file() && dir.join("global").join("pg_control").is_file()
}

/// `initdb` for a new primary: checksums on, UTF-8, superuser password from the file if set.
pub async fn initdb(sup: &Supervisor, v: &Validated, paths: &Paths) -> Result<(), Error> {
    let staging = prepare_staging(v, paths)?;
    let mut cmd = Command::new(v.bin("initdb"));
    cmd.arg("--pgdata").arg(&staging.data);
    staging.waldir_arg(&mut cmd);
    cmd.args(["--data-checksums", "--encoding=UTF8", "--no-locale", "--auth-local=peer", "--auth-host=scram-sha-256"])
        .arg(format!("--username={}", crate::pgconf::SUPERUSER));
    // initdb reads the password from a file it can open as the OS user: copy it to a 0600
    // file in the run dir owned by that user, and remove it afterwards.
    let pwfile = match &v.config.credentials.superuser_password_file {
        Some(f) => Some(private_copy(v, paths, f)?),
        None => None,
    };
    if let Some(p) = &pwfile {
        cmd.arg(format!("--pwfile={}", p.display()));
    }
    postgres_env(v, &mut cmd);
    let out = supervisor::run_logged(sup, "initdb", &mut cmd, Duration::from_secs(600)).await;
    if let Some(p) = &pwfile {
        let _ = std::fs::remove_file(p);
    }
    let out = out?;
    if !out.status.success() {
        return Err(Error::Tool { tool: "initdb", status: out.status, last_line: out.last_line().into() });
    }
    install_staging(&v.os_user, paths, &staging)
}

/// `pg_basebackup -X stream` from the primary for a new replica.
pub async fn clone_from(sup: &Supervisor, v: &Validated, paths: &Paths, host: &str, port: u16) -> Result<(), Error> {
    let staging = prepare_staging(v, paths)?;
    crate::pgconf::write_pgpass(v, paths).map_err(io("cannot write", &paths.pgpass()))?;
    // The CA copy is the connection's sslrootcert.
    crate::pgconf::tls::install(v, paths).map_err(io("cannot write", &paths.tls_dir()))?;
    let conninfo = crate::pgconf::primary_conninfo(v, paths, host, port);
    let mut cmd = Command::new(v.bin("pg_basebackup"));
    cmd.arg("--pgdata").arg(&staging.data);
    staging.waldir_arg(&mut cmd);
    cmd.args(["--wal-method=stream", "--checkpoint=fast", "--no-password", "--progress"])
        .arg(format!("--dbname={conninfo}"));
    postgres_env(v, &mut cmd);
    let out = supervisor::run_logged(sup, "pg_basebackup", &mut cmd, Duration::from_secs(24 * 3600)).await?;
    if !out.status.success() {
        staging.discard();
        return Err(Error::Tool { tool: "pg_basebackup", status: out.status, last_line: out.last_line().into() });
    }
    install_staging(&v.os_user, paths, &staging)
}

/// Clears the environment of a Postgres tool to a known minimum and sets the OS user.
pub fn postgres_env(v: &Validated, cmd: &mut Command) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", std::env::var_os("TZ").unwrap_or_else(|| "UTC".into()));
    v.os_user.apply(cmd);
}

fn private_copy(v: &Validated, paths: &Paths, file: &Path) -> Result<std::path::PathBuf, Error> {
    let secret = crate::osuser::read_secret(file)?;
    let dest = paths.run_dir.join(".initdb-pwfile");
    crate::paths::write_atomic(&dest, format!("{}\n", secret.expose()).as_bytes(), 0o600)
        .map_err(io("cannot write", &dest))?;
    v.os_user.chown(&dest)?;
    Ok(dest)
}

/// A data directory being built, before it is moved into place.
#[derive(Debug, Clone)]
pub struct Staging {
    /// The staging data directory (`.<name>.bootstrap` beside the data directory).
    pub data: PathBuf,
    /// With `walDir`: the staging WAL directory beside it, where the tools put `pg_wal`.
    pub wal: Option<PathBuf>,
}

impl Staging {
    /// Adds `--waldir <staging WAL directory>` (initdb's and pg_basebackup's option) with
    /// `walDir`. Two arguments, so the tools' guard sees the path (`supervisor::guard`).
    pub fn waldir_arg(&self, cmd: &mut Command) {
        if let Some(wal) = &self.wal {
            cmd.arg("--waldir").arg(wal);
        }
    }

    /// Deletes what a failed build left (the next attempt would too).
    pub fn discard(&self) {
        for dir in std::iter::once(&self.data).chain(&self.wal) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Empty staging directories beside the data directory and, with `walDir`, beside it
/// (interrupted ones are removed, and with them the WAL an interrupted install left in
/// `walDir`: [`wal_dir::clear_orphan`]).
pub fn prepare_staging(v: &Validated, paths: &Paths) -> Result<Staging, Error> {
    // Before the staging directory goes: its pg_wal link is what shows walDir's WAL is ours.
    wal_dir::clear_orphan(paths)?;
    let staging = Staging { data: paths.staging_dir(), wal: paths.wal_staging_dir() };
    for dir in std::iter::once(&staging.data).chain(&staging.wal) {
        if std::fs::symlink_metadata(dir).is_ok() {
            tracing::warn!(path = %dir.display(), "removing the staging directory of an interrupted bootstrap");
            std::fs::remove_dir_all(dir).map_err(io("cannot remove", dir))?;
        }
    }
    for dir in staging.wal.iter().chain(std::iter::once(&staging.data)) {
        v.os_user.ensure_dir(dir, 0o700)?;
    }
    Ok(staging)
}

/// Moves a complete staging directory into place as the data directory (with `walDir`, its
/// WAL first: [`wal_dir`]).
pub fn install_staging(user: &OsUser, paths: &Paths, staging: &Staging) -> Result<(), Error> {
    if let (Some(wal), Some(wal_dir)) = (&staging.wal, &paths.wal_dir) {
        wal_dir::install(&staging.data, wal, wal_dir, user)?;
    }
    let data_dir = &paths.data_dir;
    if data_dir.exists() {
        // Validation made sure it is empty; remove_dir refuses anything else.
        std::fs::remove_dir(data_dir).map_err(io("cannot replace the empty data directory", data_dir))?;
    }
    std::fs::rename(&staging.data, data_dir).map_err(io("cannot move the new data directory into", data_dir))?;
    if let Some(parent) = data_dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// A restored base backup's staging directory gets its `pg_wal` in the staging WAL directory
/// (with `walDir`; a no-op without).
pub fn link_restored_wal(v: &Validated, staging: &Staging) -> Result<(), Error> {
    match &staging.wal {
        Some(wal) => wal_dir::link_restored(&staging.data, wal, &v.os_user),
        None => Ok(()),
    }
}

/// fsync of a directory: a rename or removal in it is durable afterwards.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io("cannot sync", dir))
}

/// Makes the data directory say `replica` (a `standby.signal`) or `primary` (none).
pub fn set_standby_signal(v: &Validated, paths: &Paths, standby: bool) -> Result<(), Error> {
    let file = paths.standby_signal();
    if standby {
        crate::paths::write_atomic(&file, b"", 0o600).map_err(io("cannot write", &file))?;
        v.os_user.chown(&file)?;
    } else if file.exists() {
        std::fs::remove_file(&file).map_err(io("cannot remove", &file))?;
    }
    Ok(())
}

/// Removes the data directory (before a re-clone, when a rewind failed), and with `walDir`
/// its WAL. Loud on purpose. It is renamed to the staging name first: a crash while files are
/// deleted leaves a staging directory (deleted by the next bootstrap), never a data directory
/// with files missing, and with `walDir` the staging directory's link shows the WAL left in
/// `walDir` is an orphan ([`wal_dir`]).
pub fn remove_data_dir(paths: &Paths) -> Result<(), Error> {
    tracing::warn!(data_dir = %paths.data_dir.display(), "removing the data directory");
    let staging = paths.staging_dir();
    if std::fs::symlink_metadata(&staging).is_ok() {
        std::fs::remove_dir_all(&staging).map_err(io("cannot remove", &staging))?;
    }
    std::fs::rename(&paths.data_dir, &staging).map_err(io("cannot move aside the data directory", &paths.data_dir))?;
    if let Some(parent) = paths.data_dir.parent() {
        sync_dir(parent)?;
    }
    wal_dir::clear_orphan(paths)?;
    std::fs::remove_dir_all(&staging).map_err(io("cannot remove", &staging))
}
