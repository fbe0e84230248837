//! Where everything an instance writes lives. One place, so no module guesses a path.
//!
//! ```text
//! <dataDir>/                     the Postgres data directory (owned by the OS user, 0700)
//!   pgwarden.conf                rendered config: includes postgresql.conf, then ours
//!   pgwarden_hba.conf            rendered pg_hba.conf
//!   pgwarden_ident.conf          rendered pg_ident.conf
//!   standby.signal               present on replicas
//!   pg_wal                       with walDir: a symbolic link to it
//! <dataDir's parent>/.<name>.bootstrap   staging dir while initdb / pg_basebackup run
//! <walDir>/                      with walDir: the WAL, on a volume of its own (0700)
//! <walDir's parent>/.<name>.bootstrap    its staging dir while a data directory is built
//! <runDir>/                      sockets and runtime files (owned by the OS user, 0700)
//!   .s.PGSQL.<port>              Postgres' socket (0700: unix_socket_permissions)
//!   manager.sock                 the manager's HTTP API for the local CLI (0600, the manager's user)
//!   wal.sock                     archive/restore routes only, for Postgres' commands (0600, Postgres' user)
//!   pgpass                       replication password for primary_conninfo (0600)
//!   tls/                         Postgres' copies of the postgres.tls files (0700)
//!     server.crt server.key ca.crt   the key 0600: Postgres refuses a key others can read
//! ```
//!
//! Nothing else is written: the manager works with a read-only root filesystem as long as the
//! data directory's parent (in a pod, the volume it lives on: the bootstrap staging directory
//! and the WAL restore spool are siblings of the data directory), with `walDir` its parent
//! (the WAL volume), and the run directory are writable, and `/dev/shm` for Postgres' shared
//! memory (`tests/hardening.rs`).
//!
//! Only the OS user reaches the sockets: the run directory is [`RUN_DIR_MODE`] and each socket
//! is its owner's alone. In a pod the run directory may be a volume's root the manager cannot
//! chmod (an `emptyDir` owned by root and the pod's `fsGroup`): it is used as it is
//! ([`OsUser::ensure_run_dir`](crate::osuser::OsUser::ensure_run_dir)), and every socket and
//! file in it keeps its own private mode. Where the manager runs as root (outside a pod) root reaches them too,
//! and `manager.sock` stays root's, so Postgres' commands cannot call the control routes.

use std::path::{Path, PathBuf};

/// The mode of the run directory: its owner, Postgres' OS user, only.
pub const RUN_DIR_MODE: u32 = 0o700;

/// The paths of one instance.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The runtime directory.
    pub run_dir: PathBuf,
    /// `walDir`: where `pg_wal` lives when it has a volume of its own (`<dataDir>/pg_wal` is
    /// then a link to it, see [`crate::pgdata::wal_dir`]).
    pub wal_dir: Option<PathBuf>,
}

impl Paths {
    /// Paths for the given data and run directories, `pg_wal` inside the data directory.
    pub fn new(data_dir: &Path, run_dir: &Path) -> Self {
        Self { data_dir: data_dir.to_path_buf(), run_dir: run_dir.to_path_buf(), wal_dir: None }
    }

    /// The same paths with `pg_wal` in `wal_dir` (`None`: inside the data directory).
    pub fn with_wal_dir(mut self, wal_dir: Option<&Path>) -> Self {
        self.wal_dir = wal_dir.map(Path::to_path_buf);
        self
    }

    /// The paths of an instance configured by `config`.
    pub fn of(config: &crate::api::InstanceConfig) -> Self {
        Self::new(&config.data_dir, &config.run_dir).with_wal_dir(config.wal_dir.as_deref())
    }
    /// The rendered main configuration file, passed as `config_file`.
    pub fn conf_file(&self) -> PathBuf {
        self.data_dir.join("pgwarden.conf")
    }
    /// The rendered `pg_hba.conf`.
    pub fn hba_file(&self) -> PathBuf {
        self.data_dir.join("pgwarden_hba.conf")
    }
    /// The rendered `pg_ident.conf`.
    pub fn ident_file(&self) -> PathBuf {
        self.data_dir.join("pgwarden_ident.conf")
    }
    /// `standby.signal`.
    pub fn standby_signal(&self) -> PathBuf {
        self.data_dir.join("standby.signal")
    }
    /// The replication password file used by `primary_conninfo` and `pg_basebackup`.
    pub fn pgpass(&self) -> PathBuf {
        self.run_dir.join("pgpass")
    }
    /// Postgres' copies of the `postgres.tls` files (outside the data directory, so that no
    /// base backup carries the key).
    pub fn tls_dir(&self) -> PathBuf {
        self.run_dir.join("tls")
    }
    /// Postgres' `ssl_cert_file`.
    pub fn ssl_cert_file(&self) -> PathBuf {
        self.tls_dir().join("server.crt")
    }
    /// Postgres' `ssl_key_file`.
    pub fn ssl_key_file(&self) -> PathBuf {
        self.tls_dir().join("server.key")
    }
    /// Postgres' `ssl_ca_file`, and the `sslrootcert` of replication connections.
    pub fn ssl_ca_file(&self) -> PathBuf {
        self.tls_dir().join("ca.crt")
    }
    /// The manager's API socket.
    pub fn manager_socket(&self) -> PathBuf {
        self.run_dir.join("manager.sock")
    }

    /// The socket Postgres' archive and restore commands use: the WAL routes only, owned by
    /// Postgres' OS user.
    pub fn wal_socket(&self) -> PathBuf {
        self.run_dir.join("wal.sock")
    }
    /// Where bootstrap builds a data directory before renaming it into place.
    pub fn staging_dir(&self) -> PathBuf {
        staging_beside(&self.data_dir)
    }

    /// With `walDir`: where bootstrap builds the WAL directory before renaming it into place
    /// (beside it, on the WAL volume, so the rename stays on one filesystem).
    pub fn wal_staging_dir(&self) -> Option<PathBuf> {
        self.wal_dir.as_deref().map(staging_beside)
    }
}

/// `<parent>/.<name>.bootstrap` for `<parent>/<name>`.
fn staging_beside(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parent = dir.parent().unwrap_or(Path::new("/"));
    parent.join(format!(".{name}.bootstrap"))
}

/// Writes `contents` to `path` atomically: a temporary file beside it, fsync, rename.
/// Readers see the old file or the new one, never half of either.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
