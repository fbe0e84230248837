//! Why archiving one WAL file failed, classified: what `archive_command` is told (the HTTP
//! status of `POST /wal/archive` and its hint) depends on whose fault it is.

use super::StoreError;
use super::identity::IdentityError;

/// A failed archive of one WAL file.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The path given is not a WAL file Postgres archives (a bad `archive_command`).
    #[error("{path} is not a WAL file name Postgres archives")]
    NotWal {
        /// The path as given.
        path: String,
    },
    /// The path is outside this data directory's `pg_wal`.
    #[error("{path} is not in {pg_wal}")]
    OutsidePgWal {
        /// The path as given.
        path: String,
        /// This instance's `pg_wal`.
        pg_wal: String,
    },
    /// The archive already holds a different file of that name: never overwritten.
    #[error(
        "refusing to overwrite {object} in {store}: the archive holds a different {name}; \
         another cluster may be archiving to this destination"
    )]
    Conflict {
        /// The WAL file.
        name: String,
        /// The object in the store.
        object: String,
        /// The store.
        store: String,
    },
    /// The store is not this cluster's archive (any more): its identity is another cluster's,
    /// vanished, or cannot be established.
    #[error(transparent)]
    Identity(IdentityError),
    /// The store failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The local file could not be read, compressed, encrypted or compared.
    #[error("{0}")]
    Local(String),
}

impl ArchiveError {
    /// Whether the caller asked for something that can never be archived (HTTP 400), as
    /// opposed to a refusal (409) or a failure worth retrying (500/503).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, Self::NotWal { .. } | Self::OutsidePgWal { .. })
    }

    /// Whether the archive refuses this file or this cluster until a person acts.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::Identity(_))
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::NotWal { .. } | Self::OutsidePgWal { .. } => {
                "archive_command must pass %p (a file in pg_wal): instance-manager wal archive %p"
            }
            Self::Conflict { .. } => {
                "give each cluster its own backup.store destination or cluster name; \
                 the archived file is kept, Postgres retries"
            }
            Self::Identity(_) => "see `instance-manager diagnose`; WAL stays in pg_wal until the archive is sound",
            Self::Store(_) => "the store is unreachable or refused the request; Postgres retries",
            Self::Local(_) => "see the manager's log and `instance-manager status`; Postgres retries",
        }
    }
}
