//! One object of a backup: a directory tree read, tarred and compressed (and sealed) on a
//! blocking thread, handed over in chunks through a bounded channel, uploaded in multipart
//! parts with at most `maxParallel` in flight, and described by its size and SHA-256.
//!
//! The data directory's object is special: once its tree is read, the backup is stopped
//! (`on_walked`), and what `pg_backup_stop` returned (`backup_label`, `tablespace_map`) is
//! appended before the tar ends.
//!
//! With [`PageChecks`], data page checksums are verified as the tree is read; the result
//! comes back in the [`Totals`].

use std::io::Write;
use std::path::{Path, PathBuf};

use object_store::{ObjectStoreExt, WriteMultipart};
use tokio::sync::{mpsc, oneshot};

use super::catalog::BackupFile;
use super::sink::{ChunkSink, Piece};
use super::take::Error;
use super::tarball::{DataDirTar, PageChecks, Totals};
use crate::api::{BaseBackupSpec, Compression};
use crate::archive::cipher::{Cipher, SealingWriter};
use crate::archive::{Store, compress};

/// Chunks (of [`super::sink::CHUNK`]) waiting between the reader and the uploader.
pub const CHANNEL_CHUNKS: usize = 4;

/// Parts one multipart upload may have (S3 and Google Cloud Storage: 10,000; Azure more).
pub const MAX_PARTS: u64 = 10_000;
/// Parts an object is planned to fit in: the rest is room for a database that grows while it
/// is read.
const PLANNED_PARTS: u64 = 9_000;
/// The largest part S3 takes, in MiB.
const MAX_PART_MIB: u64 = 5 * 1024;

/// The upload settings for objects of up to `expected` bytes (the databases' size: more than
/// any one object stores, compressed or not, but for tar's headers). Parts stay
/// `partSizeMiB` while the object fits in [`PLANNED_PARTS`] of them, and grow with it beyond
/// (a 1 TiB database: 117 MiB parts), so that no upload runs into the store's [`MAX_PARTS`].
/// Larger parts mean fewer of them in flight: memory stays near `(maxParallel + 1) ×
/// partSizeMiB`, with at least one part in flight.
pub fn sized_for(spec: &BaseBackupSpec, expected: u64) -> BaseBackupSpec {
    const MIB: u64 = 1024 * 1024;
    let configured = u64::from(spec.part_size_mib.max(5));
    let needed = expected.div_ceil(PLANNED_PARTS).div_ceil(MIB);
    let part = configured.max(needed).min(MAX_PART_MIB);
    if part == configured {
        return spec.clone();
    }
    let max_parallel = u64::from(spec.max_parallel.max(1));
    let budget = (max_parallel + 1) * configured;
    let in_flight = (budget / part).saturating_sub(1).clamp(1, max_parallel);
    BaseBackupSpec {
        part_size_mib: u32::try_from(part).unwrap_or(u32::MAX),
        max_parallel: u32::try_from(in_flight).unwrap_or(1),
        ..spec.clone()
    }
}

/// The files `pg_backup_stop` returns, stored at the root of the data directory's tar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    /// `backup_label`.
    pub label: String,
    /// `tablespace_map`; not stored when empty.
    pub tablespace_map: String,
}

/// What one object holds.
enum Content {
    /// The data directory, then the label.
    DataDir(oneshot::Receiver<Ending>),
    /// A tablespace's directory, as is.
    Tree,
}

/// Uploads the tree at `root` (a tablespace) as `path`.
pub async fn stream_tree(
    store: &Store,
    path: &object_store::path::Path,
    spec: &BaseBackupSpec,
    root: &Path,
    checks: Option<PageChecks>,
) -> Result<(BackupFile, Totals), Error> {
    type NoWalk = fn() -> std::future::Ready<Result<((), Ending), Error>>;
    let (file, totals, _) = stream_object::<(), NoWalk>(store, path, spec, root, checks, None).await?;
    Ok((file, totals))
}

/// Uploads the data directory at `root` as `path`: calls `on_walked` when it has been read,
/// and appends the [`Ending`] it returns; its other result comes back too.
pub async fn stream_data_dir<T, F>(
    store: &Store,
    path: &object_store::path::Path,
    spec: &BaseBackupSpec,
    root: &Path,
    checks: Option<PageChecks>,
    on_walked: F,
) -> Result<(BackupFile, Totals, T), Error>
where
    F: AsyncFnOnce() -> Result<(T, Ending), Error>,
{
    let (file, totals, walked) = stream_object(store, path, spec, root, checks, Some(on_walked)).await?;
    let walked = walked.ok_or_else(|| Error::Unexpected("the backup was not stopped".into()))?;
    Ok((file, totals, walked))
}

async fn stream_object<T, F>(
    store: &Store,
    path: &object_store::path::Path,
    spec: &BaseBackupSpec,
    root: &Path,
    checks: Option<PageChecks>,
    on_walked: Option<F>,
) -> Result<(BackupFile, Totals, Option<T>), Error>
where
    F: AsyncFnOnce() -> Result<(T, Ending), Error>,
{
    let upload_err = |source| Error::Upload { path: path.to_string(), source };
    let upload = store.client().put_multipart(path).await.map_err(upload_err)?;
    let part_size = (spec.part_size_mib.max(5) as usize) * 1024 * 1024;
    let mut upload = WriteMultipart::new_with_chunk_size(upload, part_size);

    let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
    let (ending_tx, ending_rx) = oneshot::channel();
    let content = if on_walked.is_some() { Content::DataDir(ending_rx) } else { Content::Tree };
    let (root_owned, compression) = (root.to_path_buf(), spec.compression);
    let cipher = store.cipher().map(|c| Cipher::clone(c));
    let writer =
        tokio::task::spawn_blocking(move || write_object(root_owned, checks, compression, cipher, tx, content));

    let max_parallel = spec.max_parallel.max(1) as usize;
    let pumped = pump(&mut rx, &mut upload, max_parallel, on_walked, ending_tx).await.map_err(|e| match e {
        PumpError::Upload(source) => upload_err(source),
        PumpError::Backup(e) => e,
    });
    // Unblocks the writer if the pump stopped early.
    drop(rx);
    let written = writer.await.map_err(|e| Error::Unexpected(format!("the backup writer failed: {e}")));
    let (walked, (sha256, size, totals)) = match (pumped, written) {
        (Ok(walked), Ok(Ok(w))) => (walked, w),
        // The reader's own failure is the cause; a broken pipe is the pump's.
        (_, Ok(Err(e))) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(abort(upload, Error::Read(e)).await);
        }
        (Err(e), _) | (Ok(_), Err(e)) => return Err(abort(upload, e).await),
        (Ok(_), Ok(Err(e))) => return Err(abort(upload, Error::Read(e)).await),
    };
    upload.finish().await.map_err(upload_err)?;
    store.seal(path).map_err(|e| Error::Publish(e.to_string()))?;
    let name = path.filename().unwrap_or_default().to_string();
    Ok((BackupFile { name, size, sha256 }, totals, walked))
}

async fn abort(upload: WriteMultipart, e: Error) -> Error {
    if let Err(abort) = upload.abort().await {
        tracing::warn!(error = %abort, "cannot abort the multipart upload of a failed backup");
    }
    e
}

enum PumpError {
    Upload(object_store::Error),
    Backup(Error),
}

/// Moves chunks into the upload; calls `on_walked` when the tree has been read.
async fn pump<T, F>(
    rx: &mut mpsc::Receiver<Piece>,
    upload: &mut WriteMultipart,
    max_parallel: usize,
    mut on_walked: Option<F>,
    ending_tx: oneshot::Sender<Ending>,
) -> Result<Option<T>, PumpError>
where
    F: AsyncFnOnce() -> Result<(T, Ending), Error>,
{
    let mut ending_tx = Some(ending_tx);
    let mut walked = None;
    let expects_walk = on_walked.is_some();
    while let Some(piece) = rx.recv().await {
        match piece {
            Piece::Data(chunk) => {
                upload.wait_for_capacity(max_parallel).await.map_err(PumpError::Upload)?;
                upload.put(chunk);
            }
            Piece::Walked => {
                if let Some(f) = on_walked.take() {
                    let (t, ending) = f().await.map_err(PumpError::Backup)?;
                    if let Some(tx) = ending_tx.take() {
                        let _ = tx.send(ending);
                    }
                    walked = Some(t);
                }
            }
        }
    }
    if expects_walk && walked.is_none() {
        return Err(PumpError::Backup(Error::Unexpected("the data directory was not read to the end".into())));
    }
    Ok(walked)
}

/// The blocking side: the tar of `root`, compressed (and sealed when the store encrypts) into
/// the channel. Returns the SHA-256 and size of the stored bytes and what was read.
fn write_object(
    root: PathBuf,
    checks: Option<PageChecks>,
    compression: Compression,
    cipher: Option<Cipher>,
    tx: mpsc::Sender<Piece>,
    content: Content,
) -> std::io::Result<(String, u64, Totals)> {
    let mut sink = ChunkSink::new(tx.clone());
    let totals = match cipher {
        Some(cipher) => {
            let mut sealer = SealingWriter::new(cipher, &mut sink);
            let totals = write_compressed(&mut sealer, &root, checks, compression, &tx, content)?;
            sealer.finish()?;
            totals
        }
        None => write_compressed(&mut sink, &root, checks, compression, &tx, content)?,
    };
    let (sha256, stored) = sink.finish()?;
    Ok((sha256, stored, totals))
}

fn write_compressed<W: Write + Send>(
    out: W,
    root: &Path,
    checks: Option<PageChecks>,
    compression: Compression,
    tx: &mpsc::Sender<Piece>,
    content: Content,
) -> std::io::Result<Totals> {
    let stopped = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the backup stopped");
    let mut tar = DataDirTar::new(compress::encoder(compression, out)?, root);
    if let Some(checks) = checks {
        tar = tar.verify_pages(checks);
    }
    match content {
        Content::Tree => tar.append_tree()?,
        Content::DataDir(ending) => {
            tar.append_data_dir()?;
            tx.blocking_send(Piece::Walked).map_err(|_| stopped())?;
            let ending = ending.blocking_recv().map_err(|_| stopped())?;
            tar.append_bytes("backup_label", ending.label.as_bytes())?;
            if !ending.tablespace_map.trim().is_empty() {
                tar.append_bytes("tablespace_map", ending.tablespace_map.as_bytes())?;
            }
        }
    }
    let (encoder, totals) = tar.finish()?;
    encoder.finish_stream()?;
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn spec(part_size_mib: u32, max_parallel: u32) -> BaseBackupSpec {
        BaseBackupSpec { compression: Compression::Zstd, part_size_mib, max_parallel }
    }

    fn parts_needed(s: &BaseBackupSpec, bytes: u64) -> u64 {
        bytes.div_ceil(u64::from(s.part_size_mib) << 20)
    }

    #[test]
    fn small_databases_keep_the_configured_parts() {
        for bytes in [0, GIB, 100 * GIB, 140 * GIB] {
            assert_eq!(sized_for(&spec(16, 4), bytes), spec(16, 4), "{bytes}");
        }
    }

    #[test]
    fn large_databases_get_parts_that_fit_the_store_with_room_to_grow() {
        for bytes in [150 * GIB, 1024 * GIB, 10 * 1024 * GIB, 40 * 1024 * GIB] {
            let s = sized_for(&spec(16, 4), bytes);
            assert!(s.part_size_mib > 16, "{bytes}: {s:?}");
            assert!(parts_needed(&s, bytes) <= PLANNED_PARTS, "{bytes}: {s:?}");
            // 10 % more data than expected still fits.
            assert!(parts_needed(&s, bytes + bytes / 10) <= MAX_PARTS, "{bytes}: {s:?}");
            assert!(s.max_parallel >= 1 && s.max_parallel <= 4, "{s:?}");
        }
        // 1 TiB: 117 MiB parts, one in flight (memory: two parts, as with five 16 MiB ones).
        assert_eq!(sized_for(&spec(16, 4), 1024 * GIB), spec(117, 1));
        // Moderately larger parts keep some parallelism within the same memory.
        assert_eq!(sized_for(&spec(16, 4), 200 * GIB), spec(23, 2));
    }

    #[test]
    fn parts_never_exceed_the_largest_s3_takes() {
        let s = sized_for(&spec(16, 4), 100_000 * GIB);
        assert_eq!(s.part_size_mib as u64, MAX_PART_MIB);
        assert_eq!(s.max_parallel, 1);
        // A configured size above the need stays as it is.
        assert_eq!(sized_for(&spec(256, 2), 1024 * GIB), spec(256, 2));
    }
}
