//! Whose archive is this? `<prefix>/<cluster>/cluster.json` holds the Postgres system
//! identifier of the cluster archiving there. It is written (create-only) before the first
//! WAL file; an archive that holds another cluster's identifier, or WAL without an identity
//! document, is refused: mixing two clusters' WAL in one place corrupts both histories.

use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::store::{Created, Store, StoreError};

/// Why the archive's identity cannot be established or is not this cluster's: WAL must not be
/// archived there until a person acts (or the store answers again).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `global/pg_control` cannot be read.
    #[error("cannot read {path}: {source}")]
    PgControl {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// `global/pg_control` is shorter than its first field.
    #[error("{path} is too short")]
    PgControlShort {
        /// The file.
        path: String,
    },
    /// The archive was claimed by another cluster before this one looked.
    #[error(
        "{store} belongs to another cluster (system identifier {theirs}; this one is {ours}): \
         give this cluster its own destination or cluster name"
    )]
    OtherCluster {
        /// The store.
        store: String,
        /// The identifier in the archive.
        theirs: String,
        /// This cluster's.
        ours: String,
    },
    /// The archive was this cluster's and is now another's.
    #[error(
        "{store} now belongs to another cluster (system identifier {theirs}; this one is {ours}): \
         refusing to archive into it; WAL stays in pg_wal"
    )]
    Taken {
        /// The store.
        store: String,
        /// The identifier in the archive now.
        theirs: String,
        /// This cluster's.
        ours: String,
    },
    /// The archive was this cluster's and its identity document is gone.
    #[error(
        "{store} lost its identity ({path} vanished: the archive was moved, deleted or replaced): \
         refusing to archive into it; WAL stays in pg_wal. Put the archive back, or restart \
         the manager to start a new archive there (then take a base backup)"
    )]
    Vanished {
        /// The store.
        store: String,
        /// The identity document.
        path: String,
    },
    /// WAL without an identity document: not this cluster's archive.
    #[error(
        "{store} already holds WAL ({first}) but no {path}: it was not written by this cluster; \
         use an empty destination"
    )]
    Unclaimed {
        /// The store.
        store: String,
        /// The first WAL object found.
        first: String,
        /// The identity document.
        path: String,
    },
    /// The identity document changed under every read.
    #[error("{path} in {store} keeps changing")]
    Unsettled {
        /// The identity document.
        path: String,
        /// The store.
        store: String,
    },
    /// The identity document does not parse.
    #[error("{path} is not valid: {source}")]
    Invalid {
        /// The identity document.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The identity document cannot be encoded.
    #[error("cannot encode {path}: {source}")]
    Encode {
        /// The identity document.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The store failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The identity document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// `pg_control`'s database system identifier, as a decimal string.
    pub system_identifier: String,
    /// When the document was written.
    pub created_at: jiff::Timestamp,
}

/// The system identifier of the data directory: the first field of `global/pg_control`
/// (a native-endian u64).
pub fn system_identifier(data_dir: &Path) -> Result<u64, IdentityError> {
    let file = data_dir.join("global/pg_control");
    let path = || file.display().to_string();
    let bytes = std::fs::read(&file).map_err(|source| IdentityError::PgControl { path: path(), source })?;
    let first: [u8; 8] =
        bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| IdentityError::PgControlShort { path: path() })?;
    Ok(u64::from_ne_bytes(first))
}

/// Checks that the store's archive belongs to the cluster of `data_dir`, claiming an empty
/// one.
pub async fn ensure(store: &Store, data_dir: &Path) -> Result<(), IdentityError> {
    let ours = system_identifier(data_dir)?.to_string();
    let path = store.layout.identity();
    for _ in 0..2 {
        match read(store).await? {
            Some(theirs) if theirs.system_identifier == ours => return Ok(()),
            Some(theirs) => {
                return Err(IdentityError::OtherCluster {
                    store: store.describe(),
                    theirs: theirs.system_identifier,
                    ours,
                });
            }
            None => {}
        }
        let wal = store.list(&store.layout.wal_dir()).await?;
        if let Some(first) = wal.first() {
            return Err(IdentityError::Unclaimed {
                store: store.describe(),
                first: first.location.to_string(),
                path: path.to_string(),
            });
        }
        let doc = Identity { system_identifier: ours.clone(), created_at: jiff::Timestamp::now() };
        let body = serde_json::to_vec_pretty(&doc)
            .map_err(|source| IdentityError::Encode { path: path.to_string(), source })?;
        if store.create(&path, Bytes::from(body)).await? == Created::Written {
            tracing::info!(destination = %store.describe(), system_identifier = %ours, "claimed an empty WAL archive");
            return Ok(());
        }
        // Another instance of this cluster claimed it at the same moment: read it again.
    }
    Err(IdentityError::Unsettled { path: path.to_string(), store: store.describe() })
}

/// The identity document, if any.
pub async fn read(store: &Store) -> Result<Option<Identity>, IdentityError> {
    let path = store.layout.identity();
    match store.get(&path).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| IdentityError::Invalid { path: path.to_string(), source }),
    }
}
