//! Restoring a base backup's data into a directory: the stored tar is streamed from the
//! store, checked against the SHA-256 in `backup.json`, decrypted when sealed, decompressed
//! and unpacked on a blocking thread, with at most a few chunks in memory. Each file is flushed
//! to disk while the next ones are unpacked: the restored directory is durable when this returns.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc;

use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use super::catalog::BackupInfo;
use super::syncer::{SyncError, Syncer};
use crate::archive::cipher;
use crate::archive::{Store, StoreError};

/// Why a base backup could not be restored into a directory.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A stored object could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The object.
        path: String,
        /// The client's error (boxed: it is large).
        source: Box<object_store::Error>,
    },
    /// The store holds encrypted data and no key is configured.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored data could not be read, decrypted or decompressed.
    #[error(transparent)]
    Stream(std::io::Error),
    /// The tar could not be unpacked.
    #[error("cannot unpack: {0}")]
    Unpack(#[source] std::io::Error),
    /// An entry of the tar points outside the directory it is unpacked into.
    #[error("cannot unpack: {path} is outside {target}")]
    Outside {
        /// The entry's path.
        path: String,
        /// The directory.
        target: String,
    },
    /// The unpacked files could not be made durable.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The unpacking thread ended without an answer.
    #[error("unpacking task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// What was downloaded is not what `backup.json` describes.
    #[error(
        "{path} does not match backup.json (size {size} vs {expected_size}, sha256 {sha256} vs {expected_sha256}): \
         the backup is damaged"
    )]
    Damaged {
        /// The object.
        path: String,
        /// Its size as downloaded.
        size: u64,
        /// Its size in `backup.json`.
        expected_size: u64,
        /// Its SHA-256 as downloaded.
        sha256: String,
        /// Its SHA-256 in `backup.json`.
        expected_sha256: String,
    },
    /// A tablespace's location already holds files.
    #[error("{name} restores into {location}, which is not empty: empty it or restore on another machine")]
    TablespaceNotEmpty {
        /// The backup object.
        name: String,
        /// The tablespace's location.
        location: String,
    },
    /// A tablespace's location cannot be created.
    #[error("cannot create {location}: {source}")]
    TablespaceCreate {
        /// The tablespace's location.
        location: String,
        /// Why.
        source: std::io::Error,
    },
    /// The restored data's `tablespace_map` cannot be read.
    #[error("the backup has tablespace {oid} but {path} cannot be read: {source}")]
    TablespaceMap {
        /// The tablespace.
        oid: String,
        /// The map file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The backup has a tablespace its `tablespace_map` does not place.
    #[error("tablespace {oid} is not in the backup's tablespace_map")]
    NotInTablespaceMap {
        /// The tablespace.
        oid: String,
    },
}

/// Chunks buffered between the download and the unpacker.
const CHUNKS_IN_FLIGHT: usize = 8;

/// A `Read` over chunks sent by the downloading task; hashes what it reads.
struct ChannelReader {
    rx: mpsc::Receiver<Result<bytes::Bytes, RestoreError>>,
    current: bytes::Bytes,
    hash: Sha256,
    total: u64,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.hash.update(&chunk);
                    self.total += chunk.len() as u64;
                    self.current = chunk;
                }
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Downloads and unpacks the data of `backup` into `dir` (an empty directory), and each
/// tablespace's tar (`tablespace-<oid>.tar…`, after the data) where the data's
/// `tablespace_map` puts it. Returns the bytes downloaded.
pub async fn unpack(store: &Store, backup: &BackupInfo, dir: &Path) -> Result<u64, RestoreError> {
    let mut total = 0;
    for file in &backup.files {
        let target = target_of(&file.name, dir)?;
        let path = object_store::path::Path::from(format!("{}/{}", store.layout.backup_dir(&backup.id), file.name));
        let read_err = |e| RestoreError::Read { path: path.to_string(), source: Box::new(e) };
        let result = store.client().get(&path).await.map_err(read_err)?;
        let mut stream = result.into_stream();
        let (tx, rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        let compression = backup.compression;
        let store_owned = store.clone();
        let unpacker = tokio::task::spawn_blocking(move || -> Result<(u64, String), RestoreError> {
            let mut reader = ChannelReader { rx, current: bytes::Bytes::new(), hash: Sha256::new(), total: 0 };
            {
                // Encrypted data starts with the cipher's magic: peek, then read on from there.
                let mut head = Vec::with_capacity(cipher::MAGIC.len());
                (&mut reader).take(cipher::MAGIC.len() as u64).read_to_end(&mut head).map_err(RestoreError::Stream)?;
                let opener = store_owned.opener(&head)?.cloned();
                let stored = std::io::Cursor::new(head).chain(&mut reader);
                let plain: Box<dyn Read + Send + '_> = match opener {
                    None => Box::new(stored),
                    Some(c) => Box::new(cipher::OpeningReader::new(c, stored)),
                };
                let decoder = crate::archive::compress::decoder(compression, plain).map_err(RestoreError::Stream)?;
                let mut archive = tar::Archive::new(decoder);
                archive.set_preserve_permissions(true);
                archive.set_overwrite(false);
                unpack_durably(&mut archive, &target)?;
            }
            // Drain what the tar reader left (the compressor's trailer, padding) into the hash.
            std::io::copy(&mut reader, &mut std::io::sink()).map_err(RestoreError::Stream)?;
            Ok((reader.total, hex(&reader.hash.finalize())))
        });
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(read_err);
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                break;
            }
        }
        drop(tx);
        let (size, sha256) = unpacker.await??;
        if size != file.size || sha256 != file.sha256 {
            return Err(RestoreError::Damaged {
                path: path.to_string(),
                size,
                expected_size: file.size,
                sha256,
                expected_sha256: file.sha256.clone(),
            });
        }
        total += size;
    }
    Ok(total)
}

/// Unpacks every entry of `archive` under `target`, flushing each file to disk in the background
/// as soon as it is written ([`Syncer`]); returns when all of it is on disk.
fn unpack_durably<R: Read>(archive: &mut tar::Archive<R>, target: &Path) -> Result<(), RestoreError> {
    let syncer = Syncer::start();
    let unpack_err = RestoreError::Unpack;
    for entry in archive.entries().map_err(unpack_err)? {
        let mut entry = entry.map_err(unpack_err)?;
        let is_file = entry.header().entry_type().is_file();
        let path = target.join(entry.path().map_err(unpack_err)?);
        if !entry.unpack_in(target).map_err(unpack_err)? {
            return Err(RestoreError::Outside {
                path: path.display().to_string(),
                target: target.display().to_string(),
            });
        }
        if is_file {
            syncer.push(path);
        }
    }
    Ok(syncer.finish(target)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the backup object `name` is unpacked: the data directory, or for a tablespace the
/// location `tablespace_map` gives its oid (which must be empty or missing).
pub fn target_of(name: &str, dir: &Path) -> Result<std::path::PathBuf, RestoreError> {
    let Some(location) = tablespace_location(name, dir)? else { return Ok(dir.to_path_buf()) };
    if location.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        return Err(RestoreError::TablespaceNotEmpty {
            name: name.to_string(),
            location: location.display().to_string(),
        });
    }
    std::fs::create_dir_all(&location)
        .map_err(|source| RestoreError::TablespaceCreate { location: location.display().to_string(), source })?;
    Ok(location)
}

/// The location of the tablespace object `name` from the data's `tablespace_map`; `None` for
/// the data object itself.
pub fn tablespace_location(name: &str, dir: &Path) -> Result<Option<std::path::PathBuf>, RestoreError> {
    let Some(oid) = name.strip_prefix("tablespace-").and_then(|r| r.split('.').next()) else {
        return Ok(None);
    };
    let map_file = dir.join("tablespace_map");
    let map = std::fs::read_to_string(&map_file).map_err(|source| RestoreError::TablespaceMap {
        oid: oid.to_string(),
        path: map_file.display().to_string(),
        source,
    })?;
    let location = map
        .lines()
        .find_map(|l| l.split_once(' ').filter(|(o, _)| *o == oid).map(|(_, p)| std::path::PathBuf::from(p)))
        .ok_or_else(|| RestoreError::NotInTablespaceMap { oid: oid.to_string() })?;
    Ok(Some(location))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tablespaces_go_where_their_map_says() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        assert_eq!(target_of("data.tar.zst", &data).unwrap(), data);
        let ts = dir.path().join("ts1");
        std::fs::write(data.join("tablespace_map"), format!("16384 {}\n", ts.display())).unwrap();
        assert_eq!(target_of("tablespace-16384.tar.zst", &data).unwrap(), ts);
        assert!(ts.is_dir());
        let e = target_of("tablespace-99.tar", &data).unwrap_err();
        assert!(matches!(&e, RestoreError::NotInTablespaceMap { oid } if oid == "99"), "{e:?}");
        assert!(e.to_string().contains("not in the backup's tablespace_map"), "{e}");
        std::fs::write(ts.join("x"), "busy").unwrap();
        let e = target_of("tablespace-16384.tar", &data).unwrap_err();
        assert!(matches!(e, RestoreError::TablespaceNotEmpty { .. }), "{e:?}");
        assert!(e.to_string().contains("not empty"), "{e}");
    }
}
