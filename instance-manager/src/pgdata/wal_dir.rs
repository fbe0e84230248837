//! `pg_wal` on a volume of its own (`walDir`, CloudNativePG's `walStorage`).
//!
//! `<dataDir>/pg_wal` is a symbolic link to `walDir`. Postgres, `pg_rewind` (it follows a
//! `pg_wal` link on both sides), a `pg_basebackup` of this instance, and the manager's archiver,
//! restorer, exporter and base backups all reach the WAL through the link; only creating and
//! removing a data directory must know about the second directory, and this module says how.
//!
//! # The rule: WAL in `walDir` belongs to whoever links to it
//!
//! `walDir` holds files only while the data directory — or, while one is built or removed, its
//! staging directory `.<name>.bootstrap` — has a `pg_wal` link to it. Building and removing are
//! ordered so that a crash at any point leaves that true:
//!
//! ```text
//! build    initdb --waldir / pg_basebackup --waldir / a restored backup:
//!          staging/pg_wal ─▶ .<wal>.bootstrap (beside walDir, on the WAL volume)
//! install  staging/pg_wal re-linked to walDir, fsync
//!          .<wal>.bootstrap renamed to walDir, fsync     ◀ the WAL is in walDir; staging links to it
//!          staging renamed to dataDir, fsync             ◀ the data directory links to it
//! remove   dataDir renamed to staging, fsync             ◀ staging links to it
//!          walDir removed, then staging removed
//! ```
//!
//! So when a data directory is about to be built (there is none), a `walDir` holding files is
//! one of two things. Either it is the WAL of our own interrupted install or removal: the
//! staging directory links to it, no data directory does, nothing can ever use it — it is
//! deleted before anything is built ([`Verdict::Orphan`]). Or nothing links to it: it may be
//! another instance's WAL (a volume mounted in the wrong pod, a mistake in the configuration),
//! and the bootstrap is refused ([`WalDirError::InUse`]) — such a directory is never deleted,
//! and a new data directory's WAL is never mixed into it. The staging directories themselves
//! are ours by name and are always deleted, as for a data directory without `walDir`.
//!
//! An existing data directory is used only when its `pg_wal` links to `walDir` and every WAL
//! segment there that was ever written carries the system identifier of its `pg_control` (a
//! WAL volume of another cluster is refused before Postgres reads from it, or recycles it).
//! The manager never moves the WAL of an existing data directory: one with `pg_wal` inside it,
//! or linked elsewhere, is refused with the commands that move it.
//!
//! [`observe`] reads the disk; [`verdict`] is the pure decision over what it saw. Validation
//! runs both (a refusal names `walDir` before anything starts), and so does every build,
//! right before it deletes anything.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::osuser::OsUser;
use crate::paths::Paths;

/// What `pg_wal` of a data (or staging) directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgWal {
    /// There is no `pg_wal` (nor, then, a directory).
    Missing,
    /// A directory or file, not a link: the WAL is inside the data directory.
    NotALink,
    /// A link to `walDir`.
    LinkToWalDir,
    /// A link to somewhere else.
    LinkElsewhere(PathBuf),
}

/// What `walDir` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// It does not exist.
    Missing,
    /// An empty directory.
    Empty,
    /// A directory holding something.
    Holds,
    /// Something other than a directory.
    NotADirectory,
}

/// A WAL segment of another database system than the data directory's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignSegment {
    /// The segment's file name.
    pub segment: String,
    /// The system identifier in its first page header.
    pub wal_system_id: u64,
    /// The system identifier in `pg_control`.
    pub control_system_id: u64,
}

/// Everything [`verdict`] decides from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Whether the data directory exists and was initialised.
    pub initialized: bool,
    /// The data directory's `pg_wal`.
    pub pg_wal: PgWal,
    /// The staging directory's `pg_wal`.
    pub staging_pg_wal: PgWal,
    /// What `walDir` holds.
    pub content: Content,
    /// A segment of another system in `walDir` (looked for only in a data directory's own `walDir`).
    pub foreign: Option<ForeignSegment>,
}

/// What a sound `walDir` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The data directory's WAL, in place.
    InPlace,
    /// No data directory, and `walDir` missing or empty: a bootstrap builds into it.
    Empty,
    /// No data directory, and `walDir` holds the WAL of our own interrupted install or
    /// removal (the staging directory links to it): a bootstrap deletes it first.
    Orphan,
}

/// Why `walDir` cannot be used as it is. Nothing was changed on disk.
#[derive(Debug, thiserror::Error)]
pub enum WalDirError {
    /// The data directory keeps its WAL inside.
    #[error("{data_dir}/pg_wal is not a link to {wal_dir}: this data directory keeps its WAL inside it")]
    NotLinked {
        /// The data directory.
        data_dir: String,
        /// `walDir`.
        wal_dir: String,
    },
    /// The data directory's WAL is in another directory.
    #[error("{data_dir}/pg_wal links to {target}, not to {wal_dir}")]
    LinkedElsewhere {
        /// The data directory.
        data_dir: String,
        /// Where its `pg_wal` points.
        target: String,
        /// `walDir`.
        wal_dir: String,
    },
    /// The data directory links to `walDir` but is not a whole data directory.
    #[error(
        "{data_dir}/pg_wal links to {wal_dir}, but {data_dir} is not a whole data directory (no PG_VERSION or global/pg_control)"
    )]
    Damaged {
        /// The data directory.
        data_dir: String,
        /// `walDir`.
        wal_dir: String,
    },
    /// The data directory has no `pg_wal` at all.
    #[error("{data_dir} has no pg_wal")]
    NoPgWal {
        /// The data directory.
        data_dir: String,
    },
    /// The data directory links to a `walDir` that is not there.
    #[error("{wal_dir} does not exist, and {data_dir}/pg_wal links to it")]
    Missing {
        /// The data directory.
        data_dir: String,
        /// `walDir`.
        wal_dir: String,
    },
    /// `walDir` is a file.
    #[error("{wal_dir} exists and is not a directory")]
    NotADirectory {
        /// `walDir`.
        wal_dir: String,
    },
    /// `walDir` holds files no data directory links to.
    #[error(
        "{wal_dir} holds files, and no data directory of this instance links to it (it may be another instance's WAL)"
    )]
    InUse {
        /// `walDir`.
        wal_dir: String,
    },
    /// `walDir` holds WAL of another cluster.
    #[error(
        "{wal_dir}/{} is WAL of another database system (system identifier {}, the data directory's is {})",
        .foreign.segment, .foreign.wal_system_id, .foreign.control_system_id
    )]
    Foreign {
        /// `walDir`.
        wal_dir: String,
        /// The segment that gave it away.
        foreign: ForeignSegment,
    },
    /// The disk could not be read.
    #[error("cannot inspect {path}: {source}")]
    Inspect {
        /// What was read.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl WalDirError {
    /// How to fix it.
    pub fn hint(&self) -> String {
        match self {
            Self::NotLinked { data_dir, wal_dir } => format!(
                "remove walDir from the configuration, or move the WAL with Postgres stopped, as its OS user: \
                 rmdir {wal_dir} (if it exists: it must be empty); mv {data_dir}/pg_wal {wal_dir} && \
                 ln -s {wal_dir} {data_dir}/pg_wal"
            ),
            Self::LinkedElsewhere { target, .. } => {
                format!("set walDir to {target}, or move the WAL there with Postgres stopped and link pg_wal to it")
            }
            Self::Damaged { .. } | Self::NoPgWal { .. } => {
                "the data directory is damaged: restore it, or empty it (and walDir) to bootstrap again".into()
            }
            Self::Missing { .. } => "mount the WAL volume so that walDir is there".into(),
            Self::NotADirectory { .. } => "point walDir at a directory (the manager creates it)".into(),
            Self::InUse { wal_dir } => format!(
                "point walDir at an empty or absent directory, or empty {wal_dir} if no instance needs that WAL"
            ),
            Self::Foreign { .. } => "mount this instance's WAL volume (walDir belongs with this dataDir)".into(),
            Self::Inspect { .. } => "check the path and its permissions".into(),
        }
    }
}

/// Decides what `walDir` is from what was observed (see the module docs for the rule).
pub fn verdict(data_dir: &Path, wal_dir: &Path, o: &Observed) -> Result<Verdict, WalDirError> {
    let (data_dir, wal_dir) = (data_dir.display().to_string(), wal_dir.display().to_string());
    if o.content == Content::NotADirectory {
        return Err(WalDirError::NotADirectory { wal_dir });
    }
    if !o.initialized {
        return match (o.content, &o.pg_wal, &o.staging_pg_wal) {
            (Content::Missing | Content::Empty, _, _) => Ok(Verdict::Empty),
            // Half a data directory still links to it: not an orphan, and not usable either.
            (_, PgWal::LinkToWalDir, _) => Err(WalDirError::Damaged { data_dir, wal_dir }),
            (_, _, PgWal::LinkToWalDir) => Ok(Verdict::Orphan),
            _ => Err(WalDirError::InUse { wal_dir }),
        };
    }
    match &o.pg_wal {
        PgWal::Missing => return Err(WalDirError::NoPgWal { data_dir }),
        PgWal::NotALink => return Err(WalDirError::NotLinked { data_dir, wal_dir }),
        PgWal::LinkElsewhere(target) => {
            return Err(WalDirError::LinkedElsewhere { data_dir, target: target.display().to_string(), wal_dir });
        }
        PgWal::LinkToWalDir => {}
    }
    if o.content == Content::Missing {
        return Err(WalDirError::Missing { data_dir, wal_dir });
    }
    if let Some(foreign) = &o.foreign {
        return Err(WalDirError::Foreign { wal_dir, foreign: foreign.clone() });
    }
    Ok(Verdict::InPlace)
}

/// Observes `paths` (which must have a `walDir`) and decides; `Ok(None)` without `walDir`.
pub fn inspect(paths: &Paths) -> Result<Option<Verdict>, WalDirError> {
    let Some(wal_dir) = &paths.wal_dir else { return Ok(None) };
    let observed = observe(&paths.data_dir, &paths.staging_dir(), wal_dir)?;
    verdict(&paths.data_dir, wal_dir, &observed).map(Some)
}

/// Before a data directory is built: deletes `walDir` when it holds the WAL of our own
/// interrupted install or removal ([`Verdict::Orphan`]), and refuses one that may be someone
/// else's. The staging directory, the evidence, is left for the caller to delete afterwards:
/// a crash in between finds the same orphan again.
pub fn clear_orphan(paths: &Paths) -> Result<(), super::Error> {
    let Some(wal_dir) = &paths.wal_dir else { return Ok(()) };
    if inspect(paths)? == Some(Verdict::Orphan) {
        tracing::warn!(
            wal_dir = %wal_dir.display(),
            "removing WAL no data directory links to any more (a removed data directory's, or an interrupted bootstrap's)"
        );
        std::fs::remove_dir_all(wal_dir).map_err(super::io("cannot remove", wal_dir))?;
        sync_parent(wal_dir)?;
    }
    Ok(())
}

/// Moves the staged WAL into `wal_dir`: `staging/pg_wal` is re-linked to `wal_dir` first, so
/// that the WAL is in `wal_dir` only while the staging directory links to it. `wal_dir` must
/// be missing or empty ([`clear_orphan`] ran before the build).
pub(super) fn install(staging: &Path, wal_staging: &Path, wal_dir: &Path, user: &OsUser) -> Result<(), super::Error> {
    let link = staging.join("pg_wal");
    let tmp = staging.join(".pg_wal.pgwarden-link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(wal_dir, &tmp).map_err(super::io("cannot create the link", &tmp))?;
    user.lchown(&tmp)?;
    std::fs::rename(&tmp, &link).map_err(super::io("cannot link to walDir:", &link))?;
    super::sync_dir(staging)?;
    if std::fs::symlink_metadata(wal_dir).is_ok() {
        // Empty (clear_orphan, then validation); remove_dir refuses anything else.
        std::fs::remove_dir(wal_dir).map_err(super::io("cannot replace the empty WAL directory", wal_dir))?;
    }
    std::fs::rename(wal_staging, wal_dir).map_err(super::io("cannot move the new WAL directory into", wal_dir))?;
    sync_parent(wal_dir)
}

/// Replaces the plain `pg_wal` a restored base backup has (empty but for `archive_status/`)
/// by a link to the staged WAL directory, where recovery then writes.
pub(super) fn link_restored(staging: &Path, wal_staging: &Path, user: &OsUser) -> Result<(), super::Error> {
    let pg_wal = staging.join("pg_wal");
    for dir in [pg_wal.join("archive_status"), pg_wal.clone()] {
        // remove_dir, not remove_dir_all: WAL in there would be a surprise, refused, not lost.
        match std::fs::remove_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(super::io("cannot replace by a link to the WAL directory:", &dir)(e));
            }
            _ => {}
        }
    }
    user.ensure_dir(&wal_staging.join("archive_status"), 0o700)?;
    user.ensure_dir(wal_staging, 0o700)?;
    std::os::unix::fs::symlink(wal_staging, &pg_wal).map_err(super::io("cannot create the link", &pg_wal))?;
    user.lchown(&pg_wal)?;
    Ok(())
}

fn sync_parent(dir: &Path) -> Result<(), super::Error> {
    match dir.parent() {
        Some(parent) => super::sync_dir(parent),
        None => Ok(()),
    }
}

/// Reads what [`verdict`] needs from the disk. Changes nothing.
pub fn observe(data_dir: &Path, staging: &Path, wal_dir: &Path) -> Result<Observed, WalDirError> {
    let initialized = super::is_initialized(data_dir);
    let pg_wal = pg_wal_of(data_dir, wal_dir)?;
    let content = content_of(wal_dir)?;
    let foreign = if initialized && pg_wal == PgWal::LinkToWalDir && content == Content::Holds {
        foreign_segment(data_dir, wal_dir)?
    } else {
        None
    };
    Ok(Observed { initialized, pg_wal, staging_pg_wal: pg_wal_of(staging, wal_dir)?, content, foreign })
}

fn inspect_error(path: &Path) -> impl FnOnce(std::io::Error) -> WalDirError + '_ {
    move |source| WalDirError::Inspect { path: path.display().to_string(), source }
}

fn pg_wal_of(dir: &Path, wal_dir: &Path) -> Result<PgWal, WalDirError> {
    let link = dir.join("pg_wal");
    let meta = match std::fs::symlink_metadata(&link) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(PgWal::Missing);
        }
        Err(e) => return Err(inspect_error(&link)(e)),
    };
    if !meta.is_symlink() {
        return Ok(PgWal::NotALink);
    }
    // A relative target is relative to the link's directory.
    let target = dir.join(std::fs::read_link(&link).map_err(inspect_error(&link))?);
    Ok(if same_directory(&target, wal_dir) { PgWal::LinkToWalDir } else { PgWal::LinkElsewhere(target) })
}

/// The same path, or (both existing) the same directory once symbolic links are resolved.
fn same_directory(a: &Path, b: &Path) -> bool {
    a == b || std::fs::canonicalize(a).ok().zip(std::fs::canonicalize(b).ok()).is_some_and(|(a, b)| a == b)
}

fn content_of(wal_dir: &Path) -> Result<Content, WalDirError> {
    match std::fs::metadata(wal_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Content::Missing),
        Err(e) => Err(inspect_error(wal_dir)(e)),
        Ok(m) if !m.is_dir() => Ok(Content::NotADirectory),
        Ok(_) => {
            let mut entries = std::fs::read_dir(wal_dir).map_err(inspect_error(wal_dir))?;
            Ok(if entries.next().is_some() { Content::Holds } else { Content::Empty })
        }
    }
}

/// The first WAL segment in `wal_dir` whose header names another system than `pg_control`.
/// Segments vanishing meanwhile (Postgres recycles them) are skipped.
fn foreign_segment(data_dir: &Path, wal_dir: &Path) -> Result<Option<ForeignSegment>, WalDirError> {
    let control_file = data_dir.join("global").join("pg_control");
    let control = std::fs::read(&control_file).map_err(inspect_error(&control_file))?;
    let Some(control_system_id) = control_system_identifier(&control) else { return Ok(None) };
    for entry in std::fs::read_dir(wal_dir).map_err(inspect_error(wal_dir))? {
        let entry = entry.map_err(inspect_error(wal_dir))?;
        let Some(segment) = entry.file_name().to_str().filter(|n| is_segment_name(n)).map(str::to_owned) else {
            continue;
        };
        let mut head = Vec::with_capacity(LONG_HEADER_LEN);
        match std::fs::File::open(entry.path()).and_then(|f| f.take(LONG_HEADER_LEN as u64).read_to_end(&mut head)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(inspect_error(&entry.path())(e)),
        }
        if let Some(wal_system_id) = segment_system_identifier(&head)
            && wal_system_id != control_system_id
        {
            return Ok(Some(ForeignSegment { segment, wal_system_id, control_system_id }));
        }
    }
    Ok(None)
}

/// A WAL segment's file name: timeline, log and segment, 24 upper-case hex digits.
fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// `SizeOfXLogLongPHD`: the long page header that starts every WAL segment.
const LONG_HEADER_LEN: usize = 40;
/// Offset of `xlp_sysid` in it (after the 24-byte standard header).
const SYSID_OFFSET: usize = 24;
/// `XLP_LONG_HEADER` in `xlp_info`.
const XLP_LONG_HEADER: u16 = 0x0002;

/// The database system identifier `pg_control` starts with (`ControlFileData.system_identifier`,
/// the first field in every version, in the machine's byte order).
pub fn control_system_identifier(pg_control: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = pg_control.get(..8)?.try_into().ok()?;
    Some(u64::from_ne_bytes(bytes)).filter(|id| *id != 0)
}

/// The system identifier in the long page header at the start of a WAL segment; `None` for a
/// segment never written (pre-allocated with zeros) or too short to tell.
pub fn segment_system_identifier(head: &[u8]) -> Option<u64> {
    let info = u16::from_ne_bytes(head.get(2..4)?.try_into().ok()?);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    let bytes: [u8; 8] = head.get(SYSID_OFFSET..SYSID_OFFSET + 8)?.try_into().ok()?;
    Some(u64::from_ne_bytes(bytes)).filter(|id| *id != 0)
}

#[cfg(test)]
#[path = "wal_dir_tests.rs"]
mod tests;
