//! Whose archive is this? `<prefix>/<cluster>/cluster.json` holds the Postgres system
//! identifier of the cluster archiving there. It is written (create-only) before the first
//! WAL file; an archive that holds another cluster's identifier, or WAL without an identity
//! document, is refused: mixing two clusters' WAL in one place corrupts both histories.

use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::store::{Created, Store};

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
pub fn system_identifier(data_dir: &Path) -> Result<u64, String> {
    let file = data_dir.join("global/pg_control");
    let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let first: [u8; 8] =
        bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| format!("{} is too short", file.display()))?;
    Ok(u64::from_ne_bytes(first))
}

/// Checks that the store's archive belongs to the cluster of `data_dir`, claiming an empty
/// one.
pub async fn ensure(store: &Store, data_dir: &Path) -> Result<(), String> {
    let ours = system_identifier(data_dir)?.to_string();
    let path = store.layout.identity();
    for _ in 0..2 {
        match read(store).await? {
            Some(theirs) if theirs.system_identifier == ours => return Ok(()),
            Some(theirs) => {
                return Err(format!(
                    "{} belongs to another cluster (system identifier {}; this one is {ours}): \
                     give this cluster its own destination or cluster name",
                    store.describe(),
                    theirs.system_identifier
                ));
            }
            None => {}
        }
        let wal = store.list(&store.layout.wal_dir()).await.map_err(|e| e.to_string())?;
        if let Some(first) = wal.first() {
            return Err(format!(
                "{} already holds WAL ({}) but no {path}: it was not written by this cluster; \
                 use an empty destination",
                store.describe(),
                first.location
            ));
        }
        let doc = Identity { system_identifier: ours.clone(), created_at: jiff::Timestamp::now() };
        let body = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
        if store.create(&path, Bytes::from(body)).await.map_err(|e| e.to_string())? == Created::Written {
            tracing::info!(destination = %store.describe(), system_identifier = %ours, "claimed an empty WAL archive");
            return Ok(());
        }
        // Another instance of this cluster claimed it at the same moment: read it again.
    }
    Err(format!("{path} in {} keeps changing", store.describe()))
}

/// The identity document, if any.
pub async fn read(store: &Store) -> Result<Option<Identity>, String> {
    let path = store.layout.identity();
    match store.get(&path).await.map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{path} is not valid: {e}")),
    }
}
