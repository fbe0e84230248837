//! What the archive holds, read for the gap checks of [`super::gaps`]: the path of the newest
//! timeline (its history file), the segments archived, and whether a later segment of a
//! timeline exists. The thin I/O shell; every judgement is in [`super::gaps`].

use std::collections::{BTreeMap, BTreeSet};

use object_store::path::Path;

use super::gaps::{self, HistoryError, Span};
use super::layout::{SegmentId, WalName, parse_wal_name};
use super::pack;
use super::store::{Store, StoreError};

/// Why what the archive holds cannot be told.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The store failed or could not be reached, or holds encrypted objects and no key is set.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A history file vanished between the listing and the read.
    #[error("{object} vanished")]
    Vanished {
        /// The object.
        object: String,
    },
    /// A history file that cannot be decrypted or decompressed.
    #[error("{object} cannot be read: {source}")]
    Unreadable {
        /// The object.
        object: String,
        /// Why.
        source: std::io::Error,
    },
    /// An object named like a history file that is not one.
    #[error("{object} is not a history file")]
    NotHistory {
        /// The object.
        object: String,
    },
    /// A history file with a line that does not parse.
    #[error("{object}: {source}")]
    BadHistory {
        /// The object.
        object: String,
        /// The line.
        source: HistoryError,
    },
}

/// History files are a few lines per timeline; anything larger is not one.
const HISTORY_LIMIT: u64 = 1 << 20;

/// The timeline of a `wal/TTTTTTTTLLLLLLLL` directory and its log.
fn dir_of(path: &Path) -> Option<(u32, u32)> {
    let name = path.filename()?;
    if name.len() != 16 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((u32::from_str_radix(&name[..8], 16).ok()?, u32::from_str_radix(&name[8..], 16).ok()?))
}

/// The top of `wal/`: history files by timeline, and segment directories by (timeline, log).
async fn top(store: &Store) -> Result<(BTreeMap<u32, Path>, BTreeMap<(u32, u32), Path>), InventoryError> {
    let (objects, dirs) = store.list_dir(&store.layout.wal_dir()).await?;
    let histories = objects
        .into_iter()
        .filter_map(|m| match store.layout.wal_name_of(&m.location).and_then(|(n, _)| parse_wal_name(&n)) {
            Some(WalName::History(t)) => Some((t, m.location)),
            _ => None,
        })
        .collect();
    let dirs = dirs.into_iter().filter_map(|d| dir_of(&d).map(|k| (k, d))).collect();
    Ok((histories, dirs))
}

/// The path a recovery to the latest timeline of the archive follows.
pub async fn newest_path(store: &Store) -> Result<Vec<Span>, InventoryError> {
    let (histories, dirs) = top(store).await?;
    path_from(store, &histories, &dirs).await
}

async fn path_from(
    store: &Store,
    histories: &BTreeMap<u32, Path>,
    dirs: &BTreeMap<(u32, u32), Path>,
) -> Result<Vec<Span>, InventoryError> {
    let Some((&newest, object)) = histories.last_key_value() else {
        let newest = dirs.keys().map(|(t, _)| *t).max().unwrap_or(1);
        return Ok(gaps::path(newest, &[]));
    };
    let text = read_history(store, object).await?;
    let history = gaps::parse_history(&text)
        .map_err(|source| InventoryError::BadHistory { object: object.to_string(), source })?;
    Ok(gaps::path(newest, &history))
}

async fn read_history(store: &Store, object: &Path) -> Result<String, InventoryError> {
    let not_history = || InventoryError::NotHistory { object: object.to_string() };
    let (_, c) = store.layout.wal_name_of(object).ok_or_else(not_history)?;
    let packed = store.get(object).await?.ok_or_else(|| InventoryError::Vanished { object: object.to_string() })?;
    let cipher = store.opener(&packed)?.cloned();
    let plain = pack::unpack_small(&packed, c, cipher.as_ref(), HISTORY_LIMIT)
        .map_err(|source| InventoryError::Unreadable { object: object.to_string(), source })?;
    String::from_utf8(plain).map_err(|_| not_history())
}

/// Why the archive's lack of `missing` is a gap (see [`gaps::missing_reason`]), or `None` at
/// the end of the archive. Lists the top of `wal/` and a directory or two of `missing`'s
/// timeline: a few requests.
pub async fn gap_reason(
    store: &Store,
    missing: SegmentId,
    segment_size: u64,
) -> Result<Option<String>, InventoryError> {
    let (histories, dirs) = top(store).await?;
    let spans = path_from(store, &histories, &dirs).await?;
    let mut later = None;
    for ((_, log), dir) in dirs.range((missing.timeline, missing.log)..=(missing.timeline, u32::MAX)) {
        let (objects, _) = store.list_dir(dir).await?;
        later = objects
            .iter()
            .filter_map(|m| match store.layout.wal_name_of(&m.location).and_then(|(n, _)| parse_wal_name(&n)) {
                Some(WalName::Segment(s)) if s > missing => Some(s),
                _ => None,
            })
            .min();
        if later.is_some() || *log > missing.log {
            break;
        }
    }
    Ok(gaps::missing_reason(missing, segment_size, &spans, later))
}

/// Every whole segment in the archive, and the path of its newest timeline.
pub async fn segments(store: &Store) -> Result<(BTreeSet<SegmentId>, Vec<Span>), InventoryError> {
    let spans = newest_path(store).await?;
    let objects = store.list(&store.layout.wal_dir()).await?;
    let archived = objects
        .iter()
        .filter_map(|m| match store.layout.wal_name_of(&m.location).and_then(|(n, _)| parse_wal_name(&n)) {
            Some(WalName::Segment(s)) => Some(s),
            _ => None,
        })
        .collect();
    Ok((archived, spans))
}
