//! `runonserver`: the Postgres versions a query is meant for, in CloudNativePG's notation (a
//! semantic-version range such as `>=12.0.0 <17.0.0`, alternatives joined by `||`).
//!
//! Postgres 10 and later number their releases `major.minor`; like CloudNativePG, the minor
//! release is read as the *patch* of a semantic version: 15.18 is `15.0.18`.

use std::fmt;

/// A version `major.minor.patch`.
pub type Version = (u64, u64, u64);

/// The semantic version of a `server_version_num` (`150018` → `15.0.18`).
pub fn from_server_version_num(num: u32) -> Version {
    let num = u64::from(num);
    if num >= 100_000 { (num / 10_000, 0, num % 10_000) } else { (num / 10_000, (num / 100) % 100, num % 100) }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A `runonserver` range that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionRangeError {
    /// Nothing between two `||`, or nothing at all.
    #[error("{text:?} has an empty alternative")]
    EmptyAlternative {
        /// The range as written.
        text: String,
    },
    /// A token that is not an operator and a version.
    #[error("{token:?} is not a comparison such as >=17.0.0")]
    NotAComparison {
        /// The token.
        token: String,
    },
}

/// A range: alternatives (`||`), each a conjunction of comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRange {
    text: String,
    any_of: Vec<Vec<(Op, Version)>>,
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl VersionRange {
    /// Parses `>=12.0.0 <17.0.0`, `>=17.0.0`, `15.0.0 || >=16.0.0`, ...
    pub fn parse(text: &str) -> Result<Self, VersionRangeError> {
        let mut any_of = Vec::new();
        for alternative in text.split("||") {
            let all: Vec<(Op, Version)> =
                alternative.split_whitespace().map(parse_comparison).collect::<Result<_, _>>()?;
            if all.is_empty() {
                return Err(VersionRangeError::EmptyAlternative { text: text.to_string() });
            }
            any_of.push(all);
        }
        Ok(Self { text: text.trim().to_string(), any_of })
    }

    /// Whether `v` is in the range.
    pub fn contains(&self, v: Version) -> bool {
        self.any_of.iter().any(|all| {
            all.iter().all(|(op, bound)| match op {
                Op::Eq => v == *bound,
                Op::Ne => v != *bound,
                Op::Lt => v < *bound,
                Op::Le => v <= *bound,
                Op::Gt => v > *bound,
                Op::Ge => v >= *bound,
            })
        })
    }
}

fn parse_comparison(token: &str) -> Result<(Op, Version), VersionRangeError> {
    let (op, rest) =
        [(">=", Op::Ge), ("<=", Op::Le), ("!=", Op::Ne), ("==", Op::Eq), (">", Op::Gt), ("<", Op::Lt), ("=", Op::Eq)]
            .into_iter()
            .find_map(|(p, op)| token.strip_prefix(p).map(|rest| (op, rest)))
            .unwrap_or((Op::Eq, token));
    let parts: Vec<&str> = rest.split('.').collect();
    let bad = || VersionRangeError::NotAComparison { token: token.to_string() };
    if parts.is_empty() || parts.len() > 3 {
        return Err(bad());
    }
    let mut n = [0u64; 3];
    for (slot, part) in n.iter_mut().zip(&parts) {
        *slot = part.parse().map_err(|_| bad())?;
    }
    Ok((op, (n[0], n[1], n[2])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_minor_releases_are_patches() {
        assert_eq!(from_server_version_num(150018), (15, 0, 18));
        assert_eq!(from_server_version_num(170002), (17, 0, 2));
        assert_eq!(from_server_version_num(90624), (9, 6, 24));
    }

    #[test]
    fn ranges_select_versions() {
        let old = VersionRange::parse("<17.0.0").unwrap();
        let new = VersionRange::parse(">=17.0.0").unwrap();
        let band = VersionRange::parse(">=12.0.0 <16").unwrap();
        let either = VersionRange::parse("15.0.18 || >=17").unwrap();
        let pg15 = (15, 0, 18);
        assert!(old.contains(pg15) && !new.contains(pg15) && band.contains(pg15) && either.contains(pg15));
        assert!(!old.contains((17, 0, 0)) && new.contains((17, 0, 0)) && either.contains((17, 0, 1)));
        assert!(!either.contains((15, 0, 17)));
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in ["", ">=", "=>17", ">=17.x", "1.2.3.4", "|| >=17", ">=abc"] {
            assert!(VersionRange::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
