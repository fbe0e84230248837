//! Segments of the timelines before this one that Postgres never marked for archiving.
//!
//! A standby marks a segment for archiving (`archive_mode = always`) when its WAL receiver
//! finishes writing it. After a `pg_switch_wal()` the primary streams the switch record and
//! then the zeros up to the segment's end; when it dies in between, the standby has the switch
//! record, so its recovery ends at the next segment's start, but it never finished the file and
//! never marks it. At its promotion Postgres only deals with a segment split by the switch point
//! (renamed `.partial` and archived); a switch point on a segment boundary leaves the last whole
//! segment of the old timeline unmarked, and with `wal_keep_size` Postgres notices it only when
//! a checkpoint wants to recycle it, long after a restore needed it: the archive has a gap
//! right at the branch point, and no other member may hold the segment.
//!
//! The lease holder therefore looks, right after a promotion and at every archive audit, for
//! segment files in `pg_wal` of an ancestor timeline, wholly before the point where that
//! timeline ended, that have neither a `.ready` nor a `.done` mark and are not in the archive,
//! and marks each `.ready` and archives it at once (Postgres then records it `.done` as for
//! any segment). What is after the switch record in such a file is never read by a recovery:
//! a copy another member archived that differs only there is kept, and this one stored beside
//! it ([`super::Archiver`]).
//!
//! [`unmarked`] decides, from names alone; [`archive_unmarked`] is the thin shell.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::Archiver;
use super::gaps::{self, Switch};
use super::layout::{SegmentId, WalName, parse_wal_name};

/// The segments among `files` (names in `pg_wal`) that belong to an ancestor timeline of
/// `timeline` (whose history is `history`), lie wholly before that ancestor's end, and have
/// no mark in `marked` (names with a `.ready` or `.done` file), oldest first.
pub fn unmarked(
    timeline: u32,
    history: &[Switch],
    segment_size: u64,
    files: &[String],
    marked: &BTreeSet<String>,
) -> Vec<SegmentId> {
    let size = segment_size.max(1);
    let spans = gaps::path(timeline, history);
    let mut out: Vec<SegmentId> = files
        .iter()
        .filter(|name| !marked.contains(name.as_str()))
        .filter_map(|name| match parse_wal_name(name) {
            Some(WalName::Segment(id)) if id.timeline < timeline => Some(id),
            _ => None,
        })
        .filter(|id| {
            let end_of_segment = (gaps::segno(*id, size) + 1) * size;
            spans.iter().any(|s| {
                s.timeline == id.timeline && s.end.is_some_and(|end| end_of_segment <= end && end_of_segment > s.begin)
            })
        })
        .collect();
    out.sort();
    out
}

/// What [`archive_unmarked`] could not do.
#[derive(Debug, thiserror::Error)]
pub enum UnmarkedError {
    /// `pg_wal` or its history file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The timeline's history file does not parse.
    #[error("{path}: {source}")]
    History {
        /// The history file.
        path: String,
        /// The line.
        source: gaps::HistoryError,
    },
    /// A mark cannot be written.
    #[error("cannot mark {name} for archiving: {source}")]
    Mark {
        /// The segment.
        name: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Finds the [`unmarked`] segments of `archiver`'s `pg_wal` for an instance on `timeline`,
/// and for each one the archive lacks: marks it `.ready` and archives it. Returns the names
/// archived. A failed upload is left to Postgres, which retries the marked file.
pub async fn archive_unmarked(archiver: &Arc<Archiver>, timeline: u32) -> Result<Vec<String>, UnmarkedError> {
    if timeline <= 1 {
        return Ok(Vec::new());
    }
    let pg_wal = archiver.pg_wal().to_path_buf();
    let history_path = pg_wal.join(format!("{timeline:08X}.history"));
    let text = std::fs::read_to_string(&history_path).map_err(read(&history_path))?;
    let history = gaps::parse_history(&text)
        .map_err(|source| UnmarkedError::History { path: history_path.display().to_string(), source })?;
    let status = pg_wal.join("archive_status");
    let files = names_in(&pg_wal).map_err(read(&pg_wal))?;
    let marked: BTreeSet<String> = names_in(&status)
        .map_err(read(&status))?
        .into_iter()
        .filter_map(|n| n.strip_suffix(".ready").or_else(|| n.strip_suffix(".done")).map(str::to_string))
        .collect();
    let Some(segment_size) = segment_size(&pg_wal, &files) else { return Ok(Vec::new()) };
    let mut archived = Vec::new();
    for id in unmarked(timeline, &history, segment_size, &files, &marked) {
        let name = id.file_name();
        match archiver.is_archived(&name).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(wal = %name, error = %e, "cannot tell whether an unmarked segment is archived");
                continue;
            }
        }
        mark_ready(&status, &name)?;
        tracing::warn!(
            wal = %name,
            timeline,
            "a segment of an earlier timeline was never marked for archiving (its primary died while \
             streaming the end of it): marked and archived now, so the archive has no gap at the branch point"
        );
        // The store lacks it: whatever this manager remembers of an earlier upload is stale.
        archiver.forget(&name);
        match archiver.archive(&pg_wal.join(&name)).await {
            Ok(()) => archived.push(name),
            Err(e) => tracing::warn!(wal = %name, error = %e, "archiving it failed; Postgres retries the marked file"),
        }
    }
    Ok(archived)
}

fn read(path: &Path) -> impl FnOnce(std::io::Error) -> UnmarkedError {
    let path = path.display().to_string();
    move |source| UnmarkedError::Read { path, source }
}

fn names_in(dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
}

/// The segment size: the length of any whole segment file (they all have it).
fn segment_size(pg_wal: &Path, files: &[String]) -> Option<u64> {
    files
        .iter()
        .filter(|n| matches!(parse_wal_name(n), Some(WalName::Segment(_))))
        .find_map(|n| std::fs::metadata(pg_wal.join(n)).ok().map(|m| m.len()).filter(|l| *l > 0))
}

/// Creates `<name>.ready` as Postgres does: an empty file, made durable with its directory.
/// Postgres renames it `.done`: a manager running as root hands it to the directory's owner
/// (Postgres' user); otherwise Postgres runs as the manager's own user, who owns it already.
fn mark_ready(status: &Path, name: &str) -> Result<(), UnmarkedError> {
    use std::os::unix::fs::MetadataExt as _;
    let err = |source| UnmarkedError::Mark { name: name.to_string(), source };
    let path = status.join(format!("{name}.ready"));
    let file = std::fs::File::create(&path).map_err(err)?;
    if nix::unistd::geteuid().is_root() {
        let owner = std::fs::metadata(status).map_err(err)?;
        std::os::unix::fs::fchown(&file, Some(owner.uid()), Some(owner.gid())).map_err(err)?;
    }
    file.sync_all().map_err(err)?;
    std::fs::File::open(status).and_then(|d| d.sync_all()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn names(ids: &[SegmentId]) -> Vec<String> {
        ids.iter().map(SegmentId::file_name).collect()
    }

    fn seg(timeline: u32, n: u32) -> String {
        SegmentId { timeline, log: 0, seg: n }.file_name()
    }

    #[test]
    fn the_last_whole_segment_before_a_boundary_switch_point_is_found_when_unmarked() {
        // Timeline 2 began exactly at the start of segment 0x17.
        let history = [Switch { timeline: 1, lsn: 0x17 * SEG }];
        let files = [seg(1, 0x15), seg(1, 0x16), seg(2, 0x17), seg(2, 0x18), "00000002.history".into()];
        let marked = BTreeSet::from([seg(1, 0x15)]);
        assert_eq!(names(&unmarked(2, &history, SEG, &files, &marked)), [seg(1, 0x16)]);
        // Marked `.ready` or `.done`: Postgres takes care of it.
        let marked = BTreeSet::from([seg(1, 0x15), seg(1, 0x16)]);
        assert!(unmarked(2, &history, SEG, &files, &marked).is_empty());
    }

    #[test]
    fn a_segment_split_by_the_switch_point_and_anything_after_it_are_not() {
        // Timeline 2 began inside 0x16: Postgres archives 1/0x16 as `.partial` and copies it
        // to 2/0x16. A recycled 1/0x18 beyond the end is not WAL of timeline 1 at all.
        let history = [Switch { timeline: 1, lsn: 0x16 * SEG + 0x4000 }];
        let files = [seg(1, 0x15), seg(1, 0x16), seg(1, 0x18), seg(2, 0x16), seg(2, 0x17)];
        assert_eq!(names(&unmarked(2, &history, SEG, &files, &BTreeSet::new())), [seg(1, 0x15)]);
    }

    #[test]
    fn every_ancestor_is_looked_at_and_the_current_timeline_never() {
        // 1 → 2 at 0x10 (a boundary), 2 → 3 at 0x20 (a boundary).
        let history = [Switch { timeline: 1, lsn: 0x10 * SEG }, Switch { timeline: 2, lsn: 0x20 * SEG }];
        let files = [seg(1, 0x0F), seg(2, 0x0F), seg(2, 0x10), seg(2, 0x1F), seg(3, 0x20), seg(3, 0x21)];
        assert_eq!(
            names(&unmarked(3, &history, SEG, &files, &BTreeSet::new())),
            [seg(1, 0x0F), seg(2, 0x10), seg(2, 0x1F)]
        );
        // Without a history (timeline 1) there is no ancestor.
        assert!(unmarked(1, &[], SEG, &files, &BTreeSet::new()).is_empty());
    }
}
