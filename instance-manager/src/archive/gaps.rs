//! Gaps in the WAL archive: segments a recovery needs that are not there. Pure functions over
//! names and timeline histories; no I/O.
//!
//! A recovery to the latest timeline follows the history of the newest timeline in the
//! archive ([`path`]): timeline 5 from its beginning to the point where timeline 6 branched
//! off, timeline 6 from there on, and so on. A segment wholly before such a switch point is
//! needed from the older timeline; the segment holding a switch point in its middle is read
//! from the newer timeline (Postgres copies it there at the promotion) and the older
//! timeline's copy is the `.partial`.
//!
//! - [`missing_reason`] judges one segment a restore asked for and did not find: the end of
//!   the archive (normal: recovery ends there), or a gap (a later segment of the same
//!   timeline is archived, or a newer timeline branches off after the whole segment), which a
//!   strict recovery must refuse to end at.
//! - [`scan`] lists every gap between a backup's first segment and the last archived one,
//!   for the periodic audit (`/status`, metrics, `diagnose`).

use std::collections::BTreeSet;

use super::layout::SegmentId;
use crate::api::Lsn;

/// One line of a timeline history file: `timeline` ended at `lsn`, where its child began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The parent timeline.
    pub timeline: u32,
    /// Where it ended.
    pub lsn: u64,
}

/// A line of a history file that is not `timeline<TAB>X/Y<TAB>reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("history line {line:?} is not `timeline<TAB>X/Y<TAB>reason`")]
pub struct HistoryError {
    /// The line, trimmed.
    pub line: String,
}

/// Parses a `TTTTTTTT.history` file (`parent<TAB>X/Y<TAB>reason` lines, `#` comments).
pub fn parse_history(text: &str) -> Result<Vec<Switch>, HistoryError> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut fields = line.split_whitespace();
        let timeline = fields.next().and_then(|t| t.parse::<u32>().ok());
        let lsn = fields.next().and_then(|l| l.parse::<Lsn>().ok()).map(Lsn::as_u64);
        match (timeline, lsn) {
            (Some(timeline), Some(lsn)) => out.push(Switch { timeline, lsn }),
            _ => return Err(HistoryError { line: line.to_string() }),
        }
    }
    Ok(out)
}

/// A timeline on the path of a recovery: from `begin` to `end` (`None`: the newest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The timeline.
    pub timeline: u32,
    /// Where it began (0 for the first).
    pub begin: u64,
    /// Where its child branched off; `None` for the newest timeline.
    pub end: Option<u64>,
}

/// The timelines a recovery to `newest` follows, oldest first, from `newest`'s history.
pub fn path(newest: u32, history: &[Switch]) -> Vec<Span> {
    let mut spans = Vec::with_capacity(history.len() + 1);
    let mut begin = 0;
    for s in history.iter().filter(|s| s.timeline < newest) {
        spans.push(Span { timeline: s.timeline, begin, end: Some(s.lsn) });
        begin = s.lsn;
    }
    spans.push(Span { timeline: newest, begin, end: None });
    spans
}

/// The segment number of `id` (its start LSN over the segment size).
pub fn segno(id: SegmentId, segment_size: u64) -> u64 {
    ((u64::from(id.log) << 32) + u64::from(id.seg) * segment_size) / segment_size.max(1)
}

/// The segment `segno` of `timeline`.
pub fn segment_at(timeline: u32, segno: u64, segment_size: u64) -> SegmentId {
    let per_log = (0x1_0000_0000_u64 / segment_size.max(1)).max(1);
    SegmentId { timeline, log: (segno / per_log) as u32, seg: (segno % per_log) as u32 }
}

/// An LSN as Postgres prints it.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:08X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Why the archive's lack of `missing` is a gap rather than its end, or `None` when it is
/// the end (or a segment this recovery does not need). `spans` is the [`path`] of the newest
/// timeline; `later` is a later segment of `missing`'s timeline found in the archive.
pub fn missing_reason(
    missing: SegmentId,
    segment_size: u64,
    spans: &[Span],
    later: Option<SegmentId>,
) -> Option<String> {
    let at = spans.iter().position(|s| s.timeline == missing.timeline)?;
    let span = spans[at];
    let n = segno(missing, segment_size);
    if n < span.begin / segment_size.max(1) {
        return None;
    }
    let name = missing.file_name();
    match span.end {
        // Needed when wholly before the switch point.
        Some(end) if (n + 1) * segment_size <= end => {
            let child = spans.get(at + 1).map_or(0, |c| c.timeline);
            Some(format!(
                "{name} is missing from the archive but timeline {child} branches from timeline {} at {}: \
                 refusing to end recovery before it",
                missing.timeline,
                lsn_text(end)
            ))
        }
        Some(_) => None,
        None => later.map(|l| {
            format!(
                "{name} is missing from the archive but a later segment of timeline {} is ({}): \
                 refusing to end recovery before it",
                missing.timeline,
                l.file_name()
            )
        }),
    }
}

/// Most missing segments a [`GapScan`] lists (the count goes on).
pub const LISTED: usize = 10_000;

/// What [`scan`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GapScan {
    /// The first segment looked for.
    pub from: Option<SegmentId>,
    /// The last segment looked for.
    pub to: Option<SegmentId>,
    /// Segments missing, oldest first (at most [`LISTED`]), as the file a recovery asks for.
    pub missing: Vec<SegmentId>,
    /// How many are missing in all.
    pub missing_count: u64,
}

/// Every segment a recovery from `start` to the end of the archive needs and the archive
/// lacks. `archived` holds the whole segments in the archive; `spans` the [`path`] of the
/// newest timeline. A position is covered by a segment of any path timeline it belongs to
/// (the one holding a switch point belongs to both); the last position looked for is the
/// last archived one, or the last whole segment before a switch point when that is later
/// (a newer timeline exists, so its parent's WAL up to there must be archived).
/// `None` when `start`'s timeline is not on the path (nothing to judge against).
pub fn scan(start: SegmentId, segment_size: u64, spans: &[Span], archived: &BTreeSet<SegmentId>) -> Option<GapScan> {
    let first = spans.iter().position(|s| s.timeline == start.timeline)?;
    let spans = &spans[first..];
    let size = segment_size.max(1);
    let range = |s: &Span| (s.begin / size, s.end.map(|e| (e.saturating_sub(1)) / size));
    let owners = |p: u64| {
        spans.iter().filter(move |s| {
            let (b, e) = range(s);
            b <= p && e.is_none_or(|e| p <= e)
        })
    };
    let from = segno(start, size);
    let mut last = spans.iter().filter_map(|s| s.end.map(|e| (e / size).saturating_sub(1))).max().unwrap_or(0);
    for id in archived.iter().filter(|id| spans.iter().any(|s| s.timeline == id.timeline)) {
        let p = segno(*id, size);
        if owners(p).any(|s| s.timeline == id.timeline) {
            last = last.max(p);
        }
    }
    let mut out = GapScan::default();
    if last < from {
        return Some(out);
    }
    out.from = Some(start);
    for p in from..=last {
        let mut newest = None;
        let mut covered = false;
        for s in owners(p) {
            covered |= archived.contains(&segment_at(s.timeline, p, size));
            newest = Some(s.timeline);
        }
        let Some(tl) = newest else { continue };
        out.to = Some(segment_at(tl, p, size));
        if !covered {
            out.missing_count += 1;
            if out.missing.len() < LISTED {
                out.missing.push(segment_at(tl, p, size));
            }
        }
    }
    Some(out)
}

#[cfg(test)]
#[path = "gaps_tests.rs"]
mod tests;
