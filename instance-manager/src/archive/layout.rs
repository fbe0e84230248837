//! The bucket layout — stable, documented, readable without pgwarden:
//!
//! ```text
//! <prefix>/<cluster>/cluster.json                          whose archive this is (system identifier)
//! <prefix>/<cluster>/wal/<TTTTTTTTLLLLLLLL>/<segment>[.zst|.lz4|.gz]
//!                                                          WAL segments, and their .partial and
//!                                                          .backup files, by timeline and log
//! <prefix>/<cluster>/wal/<TTTTTTTT>.history[.ext]          timeline history files
//! <prefix>/<cluster>/base/<backup-id>/backup.json          a base backup's description, written last
//! <prefix>/<cluster>/base/<backup-id>/data.tar[.ext]       the data directory (with backup_label)
//! ```
//!
//! The extension says how an object is compressed, so the archive stays readable after the
//! configured compression changes. Pure functions on names; no I/O.

use object_store::path::Path;

use crate::api::Compression;

/// Bytes per WAL segment unless the cluster was initialised with another size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// A file Postgres archives or restores, classified by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalName {
    /// A whole segment `TTTTTTTTLLLLLLLLSSSSSSSS`.
    Segment(SegmentId),
    /// The last, partial segment of a timeline a standby promoted away from.
    Partial(SegmentId),
    /// A backup history file `<segment>.XXXXXXXX.backup`.
    BackupHistory(SegmentId),
    /// A timeline history file `TTTTTTTT.history`.
    History(u32),
}

/// A segment's position: timeline, log and segment number within the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId {
    /// Timeline.
    pub timeline: u32,
    /// High 32 bits of the position.
    pub log: u32,
    /// Segment within the log.
    pub seg: u32,
}

impl SegmentId {
    /// The 24-character file name.
    pub fn file_name(&self) -> String {
        format!("{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }

    /// The next segment on the same timeline, for segments of `segment_size` bytes.
    pub fn next(&self, segment_size: u64) -> Self {
        let per_log = (0x1_0000_0000_u64 / segment_size.max(1)) as u32;
        if self.seg + 1 >= per_log {
            Self { log: self.log + 1, seg: 0, ..*self }
        } else {
            Self { seg: self.seg + 1, ..*self }
        }
    }
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u32::from_str_radix(s, 16).ok()).flatten()
}

fn segment(s: &str) -> Option<SegmentId> {
    if s.len() != 24 {
        return None;
    }
    Some(SegmentId { timeline: hex8(&s[0..8])?, log: hex8(&s[8..16])?, seg: hex8(&s[16..24])? })
}

/// Classifies a WAL file name; `None` for anything Postgres would not archive.
pub fn parse_wal_name(name: &str) -> Option<WalName> {
    if let Some(tli) = name.strip_suffix(".history") {
        return hex8(tli).map(WalName::History);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return segment(seg).map(WalName::Partial);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        let (seg, offset) = rest.split_at_checked(24)?;
        let offset = offset.strip_prefix('.')?;
        hex8(offset)?;
        return segment(seg).map(WalName::BackupHistory);
    }
    segment(name).map(WalName::Segment)
}

/// The file extension of a compression, with its dot (empty for none).
pub fn extension(c: Compression) -> &'static str {
    match c {
        Compression::Zstd => ".zst",
        Compression::Lz4 => ".lz4",
        Compression::Gzip => ".gz",
        Compression::None => "",
    }
}

/// Every compression, the configured one first: the order restore tries them in.
pub fn compressions_from(preferred: Compression) -> Vec<Compression> {
    let mut all = vec![preferred];
    for c in [Compression::Zstd, Compression::Lz4, Compression::Gzip, Compression::None] {
        if c != preferred {
            all.push(c);
        }
    }
    all
}

/// Paths of one cluster's objects in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: String,
}

impl Layout {
    /// The layout of `cluster` under the destination's `prefix`.
    pub fn new(prefix: &str, cluster: &str) -> Self {
        let root = if prefix.is_empty() { cluster.to_string() } else { format!("{prefix}/{cluster}") };
        Self { root }
    }

    /// `<prefix>/<cluster>`.
    pub fn root(&self) -> Path {
        Path::from(self.root.as_str())
    }

    /// The identity document.
    pub fn identity(&self) -> Path {
        Path::from(format!("{}/cluster.json", self.root))
    }

    /// Where WAL lives.
    pub fn wal_dir(&self) -> Path {
        Path::from(format!("{}/wal", self.root))
    }

    /// The object holding the WAL file `name` compressed with `c`; `None` for a name
    /// Postgres would not archive.
    pub fn wal_object(&self, name: &str, c: Compression) -> Option<Path> {
        let ext = extension(c);
        let dir = match parse_wal_name(name)? {
            WalName::History(_) => return Some(Path::from(format!("{}/wal/{name}{ext}", self.root))),
            WalName::Segment(id) | WalName::Partial(id) | WalName::BackupHistory(id) => {
                format!("{:08X}{:08X}", id.timeline, id.log)
            }
        };
        Some(Path::from(format!("{}/wal/{dir}/{name}{ext}", self.root)))
    }

    /// Where base backups live.
    pub fn base_dir(&self) -> Path {
        Path::from(format!("{}/base", self.root))
    }

    /// The directory of one base backup.
    pub fn backup_dir(&self, id: &str) -> Path {
        Path::from(format!("{}/base/{id}", self.root))
    }

    /// A base backup's description.
    pub fn backup_json(&self, id: &str) -> Path {
        Path::from(format!("{}/base/{id}/backup.json", self.root))
    }

    /// A base backup's data archive.
    pub fn backup_data(&self, id: &str, c: Compression) -> Path {
        Path::from(format!("{}/base/{id}/data.tar{}", self.root, extension(c)))
    }

    /// The WAL file name and compression of an object under [`wal_dir`](Self::wal_dir).
    pub fn wal_name_of(&self, object: &Path) -> Option<(String, Compression)> {
        let file = object.filename()?;
        let (name, c) = [Compression::Zstd, Compression::Lz4, Compression::Gzip]
            .into_iter()
            .find_map(|c| file.strip_suffix(extension(c)).map(|n| (n, c)))
            .unwrap_or((file, Compression::None));
        parse_wal_name(name).map(|_| (name.to_string(), c))
    }

    /// The WAL file name a differing copy kept aside (`<object>.diverged-<ms>`, written by the
    /// archiver, never read by a restore) stands beside: it goes when that file goes.
    pub fn diverged_of(&self, object: &Path) -> Option<String> {
        let (base, ms) = object.filename()?.rsplit_once(".diverged-")?;
        if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.wal_name_of(&Path::from(base)).map(|(name, _)| name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_classified() {
        let id = SegmentId { timeline: 2, log: 0x1A, seg: 0xFF };
        assert_eq!(id.file_name(), "000000020000001A000000FF");
        assert_eq!(parse_wal_name("000000020000001A000000FF"), Some(WalName::Segment(id)));
        assert_eq!(parse_wal_name("000000020000001A000000FF.partial"), Some(WalName::Partial(id)));
        assert_eq!(parse_wal_name("000000020000001A000000FF.00000028.backup"), Some(WalName::BackupHistory(id)));
        assert_eq!(parse_wal_name("00000003.history"), Some(WalName::History(3)));
        for bad in ["RECOVERYXLOG", "0000000200000001A000000FF", "00000002.HISTORY.x", "zz000002.history", ""] {
            assert_eq!(parse_wal_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn next_segment_rolls_over_the_log() {
        let id = SegmentId { timeline: 1, log: 0, seg: 0xFF };
        assert_eq!(id.next(DEFAULT_SEGMENT_SIZE), SegmentId { timeline: 1, log: 1, seg: 0 });
        let id = SegmentId { timeline: 1, log: 0, seg: 0xFE };
        assert_eq!(id.next(DEFAULT_SEGMENT_SIZE).seg, 0xFF);
        // 64 MiB segments: 64 per log.
        let id = SegmentId { timeline: 1, log: 0, seg: 63 };
        assert_eq!(id.next(64 * 1024 * 1024), SegmentId { timeline: 1, log: 1, seg: 0 });
    }

    #[test]
    fn objects_follow_the_documented_layout() {
        let l = Layout::new("backups/prod", "main");
        assert_eq!(
            l.wal_object("000000010000000A000000FF", Compression::Zstd).unwrap().as_ref(),
            "backups/prod/main/wal/000000010000000A/000000010000000A000000FF.zst"
        );
        assert_eq!(
            l.wal_object("00000002.history", Compression::None).unwrap().as_ref(),
            "backups/prod/main/wal/00000002.history"
        );
        assert_eq!(l.wal_object("RECOVERYXLOG", Compression::None), None);
        assert_eq!(l.backup_json("20261130T120000Z").as_ref(), "backups/prod/main/base/20261130T120000Z/backup.json");
        assert_eq!(Layout::new("", "main").identity().as_ref(), "main/cluster.json");
        let obj = l.wal_object("000000010000000A000000FF.partial", Compression::Lz4).unwrap();
        assert_eq!(l.wal_name_of(&obj), Some(("000000010000000A000000FF.partial".into(), Compression::Lz4)));
        let aside = Path::from("p/c/wal/000000010000000A/000000010000000A000000FF.zst.diverged-1733380000123");
        assert_eq!(l.wal_name_of(&aside), None, "a copy kept aside is not the archived file");
        assert_eq!(l.diverged_of(&aside).as_deref(), Some("000000010000000A000000FF"));
        for bad in ["000000010000000A000000FF.zst", "000000010000000A000000FF.diverged-", "x.diverged-12"] {
            assert_eq!(l.diverged_of(&Path::from(format!("p/c/wal/000000010000000A/{bad}"))), None, "{bad}");
        }
    }
}
