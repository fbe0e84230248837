//! Data page checksums, verified while a base backup reads the data directory, as
//! `pg_basebackup` does (Postgres' `basebackup.c`, `sendFile`).
//!
//! - **The algorithm** is Postgres' (`storage/checksum_impl.h`): the 8 KiB page as 32 columns
//!   of 32-bit words, each column folded into its own FNV-1a-like sum from a fixed offset,
//!   two rounds of zeros, the sums xor-ed together, the block number (in the relation, not
//!   the segment file) xor-ed in, then reduced to `1..=65535` ([`pg_checksum_page`]). The
//!   page's own `pd_checksum` counts as zero.
//! - **Which files**: relation segments, `<relfilenode>[_fsm|_vm|_init][.<segno>]`, under
//!   `base/`, `global/` and `pg_tblspc/` (in-place tablespaces) of the data directory and
//!   anywhere in a tablespace's tree ([`relation_segment`]). Postgres checks every file
//!   there but a short list (`pg_control`, `pg_filenode.map`, `PG_VERSION`,
//!   `pg_internal.init*`); the name pattern leaves those out too, and a stray file that is
//!   no relation does not turn into false failures.
//! - **Which pages**: not a new page (`pd_upper == 0`: never initialised, no checksum yet),
//!   and not one changed since the backup started (`pd_lsn` at or after the start LSN): it may
//!   be read half-written, and the backup's WAL replay rewrites it anyway. A page that fails is
//!   read again once ([`FileCheck::feed`]'s `reread`): a read that raced Postgres' write of
//!   the page sees the new LSN the second time.
//! - **Only when the cluster has data checksums** (`SHOW data_checksums`; pgwarden's `initdb`
//!   turns them on). The caller decides; this module only checks what it is fed.
//!
//! **A failure does not stop the backup** (as with `pg_basebackup`, the file is stored as
//! read): the backup is still the faithful copy of everything else, and the newest one may be
//! all there is. What each bad page is, is logged (at most [`LOGGED_PER_FILE`] lines per file,
//! then its total), counted, and listed in the backup's description (the first
//! [`MAX_LISTED`]). What that means for the backup (kept, but reported as failed) is decided
//! by the runner (`jobs::backups`).

pub use crate::api::BadPage;

/// Bytes per page (`BLCKSZ`).
pub const BLCKSZ: usize = 8192;
/// Pages per segment file of a relation (`RELSEG_SIZE`: 1 GiB files).
pub const RELSEG_SIZE: u32 = 131_072;
/// Bad pages logged per file; the rest of the file's are only counted.
pub const LOGGED_PER_FILE: u64 = 5;
/// Bad pages listed in `backup.json`; the count goes on.
pub const MAX_LISTED: usize = 100;

/// Parallel sums (`N_SUMS`): part of the algorithm, as it changes the result.
const N_SUMS: usize = 32;
/// The FNV-1a prime.
const FNV_PRIME: u32 = 16_777_619;
/// The starting value of each of the parallel sums.
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C, 0xF8D4474F,
    0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB, 0xE58F764B, 0x187636BC,
    0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4, 0x783125BB, 0x6CA8EAA2, 0xE407EAC6,
    0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];
/// Where `pd_checksum` (u16) lies in the page header, after `pd_lsn` (u64).
const CHECKSUM_AT: usize = 8;
/// Where `pd_upper` (u16) lies: after `pd_flags` and `pd_lower`.
const UPPER_AT: usize = 14;

fn mix(sum: u32, value: u32) -> u32 {
    let t = sum ^ value;
    t.wrapping_mul(FNV_PRIME) ^ (t >> 17)
}

/// Postgres' checksum of `page` as block `blkno` of its relation (`pg_checksum_page`), with
/// the page's `pd_checksum` taken as zero. Words are read in the machine's byte order, as
/// Postgres on this machine wrote them.
pub fn pg_checksum_page(page: &[u8; BLCKSZ], blkno: u32) -> u16 {
    let mut sums = BASE_OFFSETS;
    for (row, words) in page.chunks_exact(4 * N_SUMS).enumerate() {
        for (column, word) in words.chunks_exact(4).enumerate() {
            let mut bytes = [word[0], word[1], word[2], word[3]];
            if row == 0 && column == CHECKSUM_AT / 4 {
                // pd_checksum is the word's first two bytes; pd_flags follows.
                bytes[0] = 0;
                bytes[1] = 0;
            }
            sums[column] = mix(sums[column], u32::from_ne_bytes(bytes));
        }
    }
    for _ in 0..2 {
        for sum in &mut sums {
            *sum = mix(*sum, 0);
        }
    }
    let folded = sums.iter().fold(0, |acc, s| acc ^ s) ^ blkno;
    // 1..=65535: a checksum is never zero. The value fits: at most 65534 + 1.
    (folded % 65_535 + 1) as u16
}

/// `pd_lsn`: the WAL position just past the last change of the page (`xlogid` high, then
/// `xrecoff` low, each a u32 in the machine's order).
pub fn page_lsn(page: &[u8; BLCKSZ]) -> u64 {
    let half = |at: usize| u32::from_ne_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]);
    (u64::from(half(0)) << 32) | u64::from(half(4))
}

fn u16_at(page: &[u8; BLCKSZ], at: usize) -> u16 {
    u16::from_ne_bytes([page[at], page[at + 1]])
}

/// What one page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageVerdict {
    /// Not checked: new (no checksum yet), or changed since the backup started.
    Skipped,
    /// The checksum matches.
    Valid,
    /// It does not.
    Mismatch {
        /// `pd_checksum` as stored in the page.
        stored: u16,
        /// What the page's content gives.
        computed: u16,
    },
}

/// The verdict on `page`, block `blkno` of its relation, for a backup that started at
/// `start_lsn`.
pub fn check_page(page: &[u8; BLCKSZ], blkno: u32, start_lsn: u64) -> PageVerdict {
    if u16_at(page, UPPER_AT) == 0 || page_lsn(page) >= start_lsn {
        return PageVerdict::Skipped;
    }
    let (stored, computed) = (u16_at(page, CHECKSUM_AT), pg_checksum_page(page, blkno));
    if stored == computed { PageVerdict::Valid } else { PageVerdict::Mismatch { stored, computed } }
}

/// The segment number of `rel` (a path in the data directory, or in a tablespace's tree when
/// `in_tablespace`) when it is a relation's segment file whose pages carry checksums.
pub fn relation_segment(rel: &std::path::Path, in_tablespace: bool) -> Option<u32> {
    let mut parts = rel.components().filter_map(|c| match c {
        // A name that is not UTF-8 is no relation's, but keeps its place.
        std::path::Component::Normal(p) => Some(p.to_str().unwrap_or("")),
        _ => None,
    });
    let first = parts.next()?;
    let name = parts.next_back().unwrap_or(first);
    if !in_tablespace && !matches!(first, "base" | "global" | "pg_tblspc") {
        return None;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (node, segno) = match name.split_once('.') {
        // Segment 0 has no suffix: "<node>.0" is no relation file.
        Some((node, s)) if digits(s) && !s.starts_with('0') => (node, s.parse().ok()?),
        Some(_) => return None,
        None => (name, 0),
    };
    let node = ["_fsm", "_vm", "_init"].iter().find_map(|fork| node.strip_suffix(fork)).unwrap_or(node);
    digits(node).then_some(segno)
}

/// Bad pages found so far (in every file of a backup).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChecksumTally {
    /// Pages whose checksum was computed.
    pub verified: u64,
    /// Pages whose checksum is wrong.
    pub failures: u64,
    /// The first [`MAX_LISTED`] of them.
    pub listed: Vec<BadPage>,
}

impl ChecksumTally {
    /// Adds `other`'s pages (another object of the same backup).
    pub fn add(&mut self, other: ChecksumTally) {
        self.verified += other.verified;
        self.failures += other.failures;
        let room = MAX_LISTED.saturating_sub(self.listed.len());
        self.listed.extend(other.listed.into_iter().take(room));
    }
}

/// The pages of one segment file, checked as its bytes go by.
#[derive(Debug)]
pub struct FileCheck {
    /// The file, as reports name it.
    file: String,
    /// Its first page's block number in the relation.
    first_block: u32,
    start_lsn: u64,
    /// The next page's index in the file.
    next: u32,
    /// The start of a page split between two reads.
    partial: Vec<u8>,
    failures: u64,
}

impl FileCheck {
    /// Checks segment `segno` named `file`, for a backup that started at `start_lsn`.
    pub fn new(file: String, segno: u32, start_lsn: u64) -> Self {
        let first_block = segno.wrapping_mul(RELSEG_SIZE);
        Self { file, first_block, start_lsn, next: 0, partial: Vec::new(), failures: 0 }
    }

    /// Checks the pages completed by `bytes`, the next bytes of the file. A page that fails
    /// is read again once with `reread(offset, page)` (false: the file ended there, it was
    /// truncated meanwhile, not bad) and judged on that.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        reread: &mut dyn FnMut(u64, &mut [u8; BLCKSZ]) -> std::io::Result<bool>,
        tally: &mut ChecksumTally,
    ) {
        if !self.partial.is_empty() {
            let take = (BLCKSZ - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < BLCKSZ {
                return;
            }
            let page = std::mem::take(&mut self.partial);
            if let Ok(page) = <&[u8; BLCKSZ]>::try_from(page.as_slice()) {
                self.page(page, reread, tally);
            }
        }
        let mut pages = bytes.chunks_exact(BLCKSZ);
        for page in &mut pages {
            if let Ok(page) = page.try_into() {
                self.page(page, reread, tally);
            }
        }
        self.partial.extend_from_slice(pages.remainder());
    }

    fn page(
        &mut self,
        page: &[u8; BLCKSZ],
        reread: &mut dyn FnMut(u64, &mut [u8; BLCKSZ]) -> std::io::Result<bool>,
        tally: &mut ChecksumTally,
    ) {
        let index = self.next;
        self.next = self.next.wrapping_add(1);
        let blkno = self.first_block.wrapping_add(index);
        let mut verdict = check_page(page, blkno, self.start_lsn);
        if let PageVerdict::Mismatch { .. } = verdict {
            let mut again = [0; BLCKSZ];
            match reread(u64::from(index) * BLCKSZ as u64, &mut again) {
                Ok(true) => verdict = check_page(&again, blkno, self.start_lsn),
                Ok(false) => verdict = PageVerdict::Skipped,
                // The first read stands.
                Err(e) => tracing::debug!(file = %self.file, block = index, error = %e, "cannot read a page again"),
            }
        }
        match verdict {
            PageVerdict::Skipped => {}
            PageVerdict::Valid => tally.verified += 1,
            PageVerdict::Mismatch { stored, computed } => {
                tally.verified += 1;
                tally.failures += 1;
                self.failures += 1;
                if self.failures <= LOGGED_PER_FILE {
                    tracing::warn!(
                        file = %self.file, block = index, stored = format!("{stored:04X}"),
                        computed = format!("{computed:04X}"), "data page checksum verification failed"
                    );
                }
                if self.failures == LOGGED_PER_FILE {
                    tracing::warn!(file = %self.file, "further checksum failures in this file are only counted");
                }
                if tally.listed.len() < MAX_LISTED {
                    tally.listed.push(BadPage { file: self.file.clone(), block: index });
                }
            }
        }
    }

    /// Ends the file: a page cut short by the end of the file is not checked (the file grew
    /// or shrank while it was read; WAL replay repairs it).
    pub fn finish(self) {
        if self.failures > 1 {
            tracing::warn!(
                file = %self.file, failures = self.failures,
                "pages of this file failed checksum verification in all"
            );
        }
        if !self.partial.is_empty() {
            tracing::debug!(file = %self.file, bytes = self.partial.len(), "partial last page not verified");
        }
    }
}

#[cfg(test)]
#[path = "checksum_tests.rs"]
mod tests;
