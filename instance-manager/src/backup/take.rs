//! Taking a base backup of the running instance into the backup store.
//!
//! ```text
//!  held connection        blocking thread                      async uploader
//!  pg_backup_start ──▶ walk PGDATA → tar → compress → sink ──chunks──▶ multipart parts
//!                        (data directory done: Walked) ────────▶ pg_backup_stop
//!                      append backup_label ◀────── label ─────────┘
//!                      end tar, end frame ───────── last chunks ──▶ complete upload
//!                                                                    backup.json (last)
//! ```
//!
//! - **Non-exclusive**: `pg_backup_start(label, fast => true)` and `pg_backup_stop()` on one
//!   held connection. If anything fails, the connection is closed, which ends the backup in
//!   Postgres; multipart uploads are aborted and what was uploaded is deleted; no
//!   `backup.json` is written, so the backup never exists (leftovers of a manager killed
//!   midway are removed by retention).
//! - **One stream per object** ([`super::upload`]): the data directory as a tar
//!   ([`super::tarball`]), compressed with `backup.base.compression`, uploaded with
//!   `put_multipart` in `partSizeMiB` parts, at most `maxParallel` parts in flight (larger
//!   parts, fewer in flight, for a database too large for 9,000 parts: [`upload::sized_for`]:
//!   stores take at most 10,000 per object). The label
//!   only exists after `pg_backup_stop`, so that tar is finished after it: the directory first,
//!   then `backup_label` (and `tablespace_map`), then the end. Tablespaces, each a tar of its
//!   own (`tablespace-<oid>.tar[.ext]`), are copied first, while the backup runs; in
//!   `backup.json` the data directory's object comes first (its `tablespace_map` says where
//!   the others are unpacked).
//! - **Bounded memory**: the reader and compressor run on a blocking thread and hand 1 MiB
//!   chunks to the uploader through a channel of [`super::upload::CHANNEL_CHUNKS`]; a slow
//!   store slows the reader. At most `(maxParallel + 1) × partSizeMiB` plus a few MiB are
//!   buffered.
//! - **Encrypted** after compression when the store says so (`encryption.keyFile`); the
//!   checksum in `backup.json` is of the stored (sealed) bytes.
//! - **Its WAL archived first**: on a primary, `backup.json` is written only once Postgres has
//!   archived the segment holding the stop point and the backup history file — what
//!   `pg_backup_stop(wait_for_archive => true)` waits for, but that polls once a second; the
//!   manager calls it with `false` and watches `archive_status/` every 20 ms while the upload
//!   finishes.
//! - **Data page checksums verified** as the files are read, when the cluster has them
//!   (`data_checksums`), as `pg_basebackup` does ([`super::tarball::checksum`]). A bad page does
//!   not stop the backup: it is finished and published with `checksumFailures` and the first
//!   bad pages in `backup.json`, and the runner reports it as failed.
//! - **From a standby**: Postgres allows non-exclusive backups on a standby. Nothing is waited
//!   for: the segment holding a standby's stop point is archived (by the primary, or by the
//!   standbys themselves, which archive what they receive with `archive_mode = always`) only
//!   once the primary has finished it, which on a quiet cluster may take long; a standby
//!   cannot switch WAL. The WAL such a backup needs, from `startWal` to `stopWal`, comes from
//!   the same store, and the archive audit reports it missing if it never arrives.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::Client;

use super::catalog::{self, BackupFile, BackupInfo};
use super::tarball::{PageChecks, Totals, tablespaces};
use super::upload::{self, Ending, stream_data_dir, stream_tree};
use crate::api::{BaseBackupSpec, Compression, Lsn};
use crate::archive::Store;
use crate::postgres::Db;

/// Connecting to the local Postgres.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `pg_backup_start` waits for a checkpoint (fast, but a standby's restartpoint can take longer).
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// `pg_backup_stop` itself (a standby's waits for its minimum recovery point).
const STOP_TIMEOUT: Duration = Duration::from_secs(600);
/// On a primary, the backup waits until its last WAL segment is archived: a backup is
/// worthless without it, and a failing archive fails the backup after this long.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often the archive status of the last segment is looked at.
const ARCHIVE_POLL: Duration = Duration::from_millis(20);

/// A failed backup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection to the local Postgres.
    #[error("cannot connect to postgres: {0}")]
    Connect(#[from] crate::postgres::sql::Error),
    /// A statement failed.
    #[error("{what}: {source}")]
    Sql {
        /// The statement.
        what: &'static str,
        /// Postgres' error.
        source: tokio_postgres::Error,
    },
    /// A statement did not return in time.
    #[error("{what} did not return within {timeout:?} ({hint})")]
    Timeout {
        /// The statement.
        what: &'static str,
        /// How long it was given.
        timeout: Duration,
        /// What to look at.
        hint: &'static str,
    },
    /// The data directory could not be read.
    #[error("cannot read the data directory: {0}")]
    Read(std::io::Error),
    /// The store refused or failed.
    #[error("cannot upload {path}: {source}")]
    Upload {
        /// The object.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// What Postgres returned is not what was expected.
    #[error("unexpected answer from postgres: {0}")]
    Unexpected(String),
    /// The archive is not this cluster's (any more): nothing is written to it.
    #[error("the backup store is refused: {0}")]
    Identity(crate::archive::identity::IdentityError),
    /// The archive refused WAL the backup needs while it waited: it would wait in vain.
    #[error("the archive refused WAL this backup needs ({0}); the backup cannot end until a person acts")]
    ArchiveRefused(String),
    /// `backup.json` could not be written.
    #[error("cannot write the backup's description: {0}")]
    Publish(String),
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Sql { what, source }
}

/// Where the backup comes from and goes to.
pub struct Source<'a> {
    /// The local Postgres.
    pub db: &'a Db,
    /// Its data directory.
    pub data_dir: &'a Path,
    /// This instance's name.
    pub instance: &'a str,
    /// The cluster's name.
    pub cluster: &'a str,
    /// The WAL archiver of the same store: its identity is checked before anything is
    /// written, and the wait for the backup's WAL stops when it refuses that WAL.
    pub archiver: Option<&'a crate::archive::Archiver>,
}

/// What Postgres says about itself before the backup.
#[derive(Debug, Clone)]
struct Facts {
    in_recovery: bool,
    version: String,
    version_num: u32,
    system_identifier: String,
    segment_size: u64,
    /// `data_checksums`: whether pages carry checksums to verify.
    data_checksums: bool,
    /// The size of every database: what sizes the upload's parts.
    database_bytes: u64,
}

/// What `pg_backup_stop` returned.
#[derive(Debug, Clone)]
struct Stopped {
    lsn: Lsn,
    label: String,
    tablespace_map: String,
    timeline: u32,
    at: jiff::Timestamp,
}

/// Takes backup `id` of `src` into `store` as `spec` says, and publishes its `backup.json`.
/// A failed backup leaves nothing in the store.
pub async fn take(src: &Source<'_>, store: &Store, spec: &BaseBackupSpec, id: &str) -> Result<BackupInfo> {
    if let Some(archiver) = src.archiver {
        archiver.check_identity().await.map_err(Error::Identity)?;
    }
    let client = src.db.dedicated(CONNECT_TIMEOUT).await?;
    let facts = facts(&client).await?;
    let label = format!("pgwarden {id}");
    let start_lsn: String = bounded(
        "pg_backup_start",
        START_TIMEOUT,
        "a standby waits for its next restartpoint",
        client.query_one("SELECT pg_backup_start($1, true)::text", &[&label]),
    )
    .await?
    .map_err(sql("pg_backup_start"))?
    .get(0);
    let start_lsn: Lsn = start_lsn.parse().map_err(|e| Error::Unexpected(format!("pg_backup_start returned {e}")))?;
    let started_at = jiff::Timestamp::now();
    tracing::info!(%id, %start_lsn, from_standby = facts.in_recovery, "base backup started");

    let sized = upload::sized_for(spec, facts.database_bytes);
    if sized != *spec {
        tracing::info!(
            %id, database_bytes = facts.database_bytes, part_size_mib = sized.part_size_mib,
            max_parallel = sized.max_parallel,
            "larger upload parts for a large database: an object must fit in the store's 10,000 parts"
        );
    }
    let copied = copy(src, store, &sized, id, &client, &facts, start_lsn).await;
    // Closing the connection ends a backup Postgres still has open.
    drop(client);
    let result = match copied {
        Ok((files, totals, stopped)) => describe(id, src, &facts, spec.compression, start_lsn, &stopped, started_at)
            .map(|info| (info, files, totals, stopped)),
        Err(e) => Err(e),
    };
    let (info, files, totals, stopped) = match result {
        Ok(r) => r,
        Err(e) => {
            remove_objects(store, id).await;
            return Err(e);
        }
    };
    let stored_bytes = files.iter().map(|f| f.size).sum();
    let pages = totals.pages;
    let info = BackupInfo {
        files,
        data_bytes: totals.data_bytes,
        stored_bytes,
        checksum_failures: facts.data_checksums.then_some(pages.failures),
        checksum_failed_pages: pages.listed,
        ..info
    };
    if let Err(e) = catalog::publish(store, &info).await {
        remove_objects(store, id).await;
        return Err(Error::Publish(e.to_string()));
    }
    let seconds = stopped.at.duration_since(started_at).as_secs_f64().max(0.001);
    tracing::info!(
        %id, stop_lsn = %info.stop_lsn, data_bytes = info.data_bytes, stored_bytes,
        files = totals.files, pages_verified = pages.verified,
        mib_per_second = format!("{:.1}", info.data_bytes as f64 / seconds / 1048576.0),
        "base backup done"
    );
    if pages.failures > 0 {
        tracing::error!(
            %id, checksum_failures = pages.failures,
            "data page checksum verification failed during the base backup: the data directory is corrupt; \
             the backup is kept, flagged in its backup.json"
        );
    }
    Ok(info)
}

/// Copies the tablespaces, then the data directory (stopping the backup when it has been
/// read), and on a primary waits for the WAL the backup needs to be archived. The data
/// directory's object comes first in the list: it holds the `tablespace_map` that says where
/// the others go.
async fn copy(
    src: &Source<'_>,
    store: &Store,
    spec: &BaseBackupSpec,
    id: &str,
    client: &Client,
    facts: &Facts,
    start_lsn: Lsn,
) -> Result<(Vec<BackupFile>, Totals, Stopped)> {
    let mut spaces = Vec::new();
    let mut totals = Totals::default();
    let start = start_lsn.as_u64();
    let checks = |in_tablespace, report_prefix| {
        facts.data_checksums.then_some(PageChecks { start_lsn: start, in_tablespace, report_prefix })
    };
    for (oid, location) in tablespaces(src.data_dir).map_err(Error::Read)? {
        let name = format!("tablespace-{oid}.tar{}", crate::archive::layout::extension(spec.compression));
        let path = store.layout.backup_dir(id).join(name);
        let in_space = checks(true, Path::new("pg_tblspc").join(&oid));
        let (file, t) = stream_tree(store, &path, spec, &location, in_space).await?;
        totals.add(t);
        spaces.push(file);
    }
    let path = store.layout.backup_data(id, spec.compression);
    let on_walked = async || {
        let stopped = stop(client, facts).await?;
        let ending = Ending { label: stopped.label.clone(), tablespace_map: stopped.tablespace_map.clone() };
        Ok((stopped, ending))
    };
    let in_data_dir = checks(false, PathBuf::new());
    let (file, t, stopped) = stream_data_dir(store, &path, spec, src.data_dir, in_data_dir, on_walked).await?;
    totals.add(t);
    if !facts.in_recovery {
        wait_archived(src, &stopped, start, facts.segment_size).await?;
    }
    let mut files = vec![file];
    files.extend(spaces);
    Ok((files, totals, stopped))
}

/// Removes what a failed backup uploaded (best effort: retention removes leftovers later).
async fn remove_objects(store: &Store, id: &str) {
    let objects = match store.list(&store.layout.backup_dir(id)).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(backup = %id, error = %e, "cannot list the objects of a failed backup");
            return;
        }
    };
    for meta in objects {
        if let Err(e) = store.delete(&meta.location).await {
            tracing::warn!(backup = %id, error = %e, "cannot delete an object of a failed backup");
        }
    }
}

async fn bounded<T>(
    what: &'static str,
    timeout: Duration,
    hint: &'static str,
    f: impl std::future::Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(timeout, f).await.map_err(|_| Error::Timeout { what, timeout, hint })
}

async fn facts(client: &Client) -> Result<Facts> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('server_version'), \
             current_setting('server_version_num')::int, \
             (SELECT system_identifier::text FROM pg_control_system()), \
             (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
             current_setting('data_checksums') = 'on', \
             (SELECT coalesce(sum(pg_database_size(oid)), 0)::bigint FROM pg_database)",
            &[],
        )
        .await
        .map_err(sql("reading the server's facts"))?;
    let version_num: i32 = row.get(2);
    let segment_size: i64 = row.get(4);
    Ok(Facts {
        in_recovery: row.get(0),
        version: row.get(1),
        version_num: u32::try_from(version_num).unwrap_or(0),
        system_identifier: row.get(3),
        segment_size: u64::try_from(segment_size).unwrap_or(crate::archive::layout::DEFAULT_SEGMENT_SIZE),
        data_checksums: row.get(5),
        database_bytes: u64::try_from(row.get::<_, i64>(6)).unwrap_or(0),
    })
}

async fn stop(client: &Client, facts: &Facts) -> Result<Stopped> {
    let hint = "a standby waits for its minimum recovery point";
    let row = bounded(
        "pg_backup_stop",
        STOP_TIMEOUT,
        hint,
        // The wait for the archive is ours (`wait_archived`): Postgres polls once a second.
        client.query_one("SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)", &[]),
    )
    .await?
    .map_err(sql("pg_backup_stop"))?;
    let at = jiff::Timestamp::now();
    let (lsn, label, map): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let lsn: Lsn = lsn.parse().map_err(|e| Error::Unexpected(format!("pg_backup_stop returned {e}")))?;
    let start = parse_label(&label)?;
    // A standby's stop point is its minimum recovery point, on that point's timeline.
    let timeline = if facts.in_recovery {
        let row = client
            .query_one("SELECT min_recovery_end_timeline FROM pg_control_recovery()", &[])
            .await
            .map_err(sql("reading the standby's recovery point"))?;
        let tli: i32 = row.get(0);
        u32::try_from(tli).ok().filter(|t| *t > 0).unwrap_or(start.timeline)
    } else {
        start.timeline
    };
    Ok(Stopped { lsn, label, tablespace_map: map, timeline, at })
}

/// Waits until Postgres has archived what the backup needs: the segment holding its stop
/// point and the backup history file, as `pg_backup_stop(wait_for_archive => true)` would, but
/// looking every [`ARCHIVE_POLL`] rather than every second, and while the upload finishes.
/// A refusal by the archive during the wait ends it at once: the refused file holds back
/// every later one until a person acts.
async fn wait_archived(src: &Source<'_>, stopped: &Stopped, start_lsn: u64, segment_size: u64) -> Result<()> {
    let refused_before = src.archiver.map(|a| a.refusal().0);
    let start = parse_label(&stopped.label)?;
    let stop_lsn = stopped.lsn.as_u64();
    let files = [
        wal_file_before(stopped.timeline, stop_lsn, segment_size),
        format!("{}.{:08X}.backup", start.wal, start_lsn % segment_size.max(1)),
    ];
    let pg_wal = src.data_dir.join("pg_wal");
    let deadline = tokio::time::Instant::now() + ARCHIVE_TIMEOUT;
    loop {
        let Some(busy) = files.iter().find(|f| archive_busy(&pg_wal, f)) else { return Ok(()) };
        if let Some(why) = refused_since(src.archiver, refused_before) {
            return Err(Error::ArchiveRefused(why));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: if busy.ends_with(".backup") {
                    "archiving the backup history file"
                } else {
                    "archiving the last WAL segment"
                },
                timeout: ARCHIVE_TIMEOUT,
                hint: "WAL archiving is failing: see the archive in /status",
            });
        }
        tokio::time::sleep(ARCHIVE_POLL).await;
    }
}

/// The archiver's last refusal when it refused anything since it had refused `before` times.
fn refused_since(archiver: Option<&crate::archive::Archiver>, before: Option<u64>) -> Option<String> {
    let (count, last) = archiver?.refusal();
    (count > before.unwrap_or(0)).then(|| last.unwrap_or_default())
}

/// Postgres' `XLogArchiveIsBusy`: not archived yet. Archived means `.done`, or neither a
/// `.ready` nor the file itself (a checkpoint removed it after archiving).
pub fn archive_busy(pg_wal: &Path, name: &str) -> bool {
    let status = pg_wal.join("archive_status");
    let exists = |p: std::path::PathBuf| std::fs::symlink_metadata(p).is_ok();
    if exists(status.join(format!("{name}.done"))) {
        return false;
    }
    if exists(status.join(format!("{name}.ready"))) {
        return !exists(status.join(format!("{name}.done")));
    }
    exists(pg_wal.join(name))
}

/// What the label says about the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelStart {
    /// `START TIMELINE`.
    pub timeline: u32,
    /// The file named in `START WAL LOCATION`.
    pub wal: String,
}

/// Reads the start timeline and WAL file from a `backup_label`.
pub fn parse_label(label: &str) -> Result<LabelStart> {
    let field = |name: &str| label.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let bad = |what: &str| Error::Unexpected(format!("backup_label without {what}: {label:?}"));
    let wal = field("START WAL LOCATION:")
        .and_then(|v| v.split_once("(file ")?.1.strip_suffix(')').map(str::to_string))
        .ok_or_else(|| bad("START WAL LOCATION"))?;
    let timeline = field("START TIMELINE:").and_then(|v| v.parse().ok()).ok_or_else(|| bad("START TIMELINE"))?;
    Ok(LabelStart { timeline, wal })
}

/// The WAL file holding the byte just before `lsn` (Postgres' `pg_walfile_name`): the last
/// file recovery needs to reach `lsn`.
pub fn wal_file_before(timeline: u32, lsn: u64, segment_size: u64) -> String {
    let segment_size = segment_size.max(1);
    let segno = lsn.saturating_sub(1) / segment_size;
    let per_log = 0x1_0000_0000_u64 / segment_size;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_log, segno % per_log)
}

fn describe(
    id: &str,
    src: &Source<'_>,
    facts: &Facts,
    compression: Compression,
    start_lsn: Lsn,
    stopped: &Stopped,
    started_at: jiff::Timestamp,
) -> Result<BackupInfo> {
    let start = parse_label(&stopped.label)?;
    let stop = stopped.lsn.as_u64();
    Ok(BackupInfo {
        id: id.to_string(),
        cluster: src.cluster.to_string(),
        instance: src.instance.to_string(),
        from_standby: facts.in_recovery,
        system_identifier: facts.system_identifier.clone(),
        postgres_version: facts.version.clone(),
        postgres_version_num: facts.version_num,
        timeline: start.timeline,
        segment_size: facts.segment_size,
        start_lsn,
        stop_lsn: stopped.lsn,
        start_wal: start.wal,
        stop_wal: wal_file_before(stopped.timeline, stop, facts.segment_size),
        started_at,
        stopped_at: stopped.at,
        compression,
        files: Vec::new(),
        data_bytes: 0,
        stored_bytes: 0,
        checksum_failures: None,
        checksum_failed_pages: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/5000028 (file 000000020000000000000005)\n\
        CHECKPOINT LOCATION: 0/5000060\nBACKUP METHOD: streamed\nBACKUP FROM: standby\n\
        START TIME: 2026-11-30 12:00:00 UTC\nLABEL: pgwarden 20261130T120000Z\nSTART TIMELINE: 2\n";

    #[test]
    fn archived_is_done_or_gone() {
        let dir = tempfile::tempdir().unwrap();
        let pg_wal = dir.path();
        std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
        let name = "000000010000000000000005";
        assert!(!archive_busy(pg_wal, name), "neither the file nor a status: recycled");
        std::fs::write(pg_wal.join(name), b"").unwrap();
        assert!(archive_busy(pg_wal, name), "the file without a status");
        std::fs::write(pg_wal.join("archive_status").join(format!("{name}.ready")), b"").unwrap();
        assert!(archive_busy(pg_wal, name));
        std::fs::rename(
            pg_wal.join("archive_status").join(format!("{name}.ready")),
            pg_wal.join("archive_status").join(format!("{name}.done")),
        )
        .unwrap();
        assert!(!archive_busy(pg_wal, name));
    }

    #[test]
    fn the_label_names_the_start() {
        let start = parse_label(LABEL).unwrap();
        assert_eq!(start, LabelStart { timeline: 2, wal: "000000020000000000000005".into() });
        assert!(parse_label("LABEL: x\n").is_err());
    }

    #[test]
    fn the_stop_file_holds_the_byte_before_the_stop_lsn() {
        let seg = 16 << 20;
        assert_eq!(wal_file_before(1, 0x5000138, seg), "000000010000000000000005");
        // Exactly on a boundary: the previous file, as pg_walfile_name says.
        assert_eq!(wal_file_before(1, 0x6000000, seg), "000000010000000000000005");
        assert_eq!(wal_file_before(3, (1 << 32) + 0x28, seg), "000000030000000100000000");
        assert_eq!(wal_file_before(1, 0xFF00_0028, 64 << 20), "00000001000000000000003F");
        assert_eq!(wal_file_before(1, (1 << 32) + 0x28, 64 << 20), "000000010000000100000000");
    }
}
