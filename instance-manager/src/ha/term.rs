//! The highest term this instance has seen, so that terms never go backwards (invariant 6).
//!
//! The lease's term (`leaseTransitions`) is the fencing token stamped on everything derived
//! from leadership. A lease that is deleted (by a person, a tool, a namespace restore) or a
//! lease file removed by hand would start again at term 1, below the terms already stamped
//! on the `-rw` EndpointSlice and known to every member: routing that compares terms would
//! then trust a stale primary. So every member remembers the highest term it has seen — in
//! memory, in its `/status` (`lease.highestTerm`, read by the others before they create a
//! lease) and beside its data directory (`<dataDir>-highest-term`, on the same volume like the
//! WAL spool, outside what Postgres, backups and rewinds read) — and a new lease starts above
//! the highest of all of them.

use std::path::{Path, PathBuf};

/// The suffix of the file beside the data directory.
const SUFFIX: &str = "-highest-term";

/// The highest term seen, and where it is kept.
#[derive(Debug)]
pub struct HighestTerm {
    file: PathBuf,
    seen: u64,
}

impl HighestTerm {
    /// The highest term recorded beside `data_dir` (0 when none).
    pub fn load(data_dir: &Path) -> Self {
        let mut name = data_dir.as_os_str().to_owned();
        name.push(SUFFIX);
        let file = PathBuf::from(name);
        let seen = std::fs::read_to_string(&file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        Self { file, seen }
    }

    /// The highest term seen.
    pub fn get(&self) -> u64 {
        self.seen
    }

    /// Notes a term seen in the lease or reported by a member; keeps it on disk when it is
    /// higher than what was kept.
    pub fn observe(&mut self, term: u64) {
        if term <= self.seen {
            return;
        }
        self.seen = term;
        if let Err(e) = crate::paths::write_atomic(&self.file, format!("{term}\n").as_bytes(), 0o600) {
            tracing::warn!(file = %self.file.display(), error = %e, "cannot record the highest lease term seen");
        }
    }

    /// The term a newly created lease must carry: above every term seen.
    pub fn next(&self, reported_by_members: u64) -> u64 {
        self.seen.max(reported_by_members).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_highest_term_survives_beside_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pgdata");
        let mut t = HighestTerm::load(&data);
        assert_eq!(t.get(), 0);
        t.observe(7);
        t.observe(5);
        assert_eq!(t.get(), 7);
        assert!(!data.exists(), "the data directory itself is not touched (initdb needs it empty)");
        assert_eq!(HighestTerm::load(&data).get(), 7, "kept, and never lowered");
        assert_eq!(t.next(3), 8);
        assert_eq!(t.next(9), 10, "a member that saw more wins");
    }
}
