//! `Lsn`: a WAL location, a number everywhere in the manager and Postgres' `X/Y` text on the
//! wire (`/status`, `backup.json`), exactly as Postgres prints a `pg_lsn`.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A WAL location (`pg_lsn`): the byte position in the WAL stream. Ordered like positions;
/// the difference of two is a number of bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The location as a number of bytes since the start of the WAL stream.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Bytes from `earlier` to `self`, zero when `earlier` is ahead.
    pub fn bytes_after(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> Self {
        lsn.0
    }
}

/// Postgres' text form: the high and low 32 bits in upper-case hex (`16/B374D848`).
impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Text that is not a WAL location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsnError {
    /// The text as given.
    pub text: String,
}

impl fmt::Display for LsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a WAL location: write it as Postgres prints a pg_lsn, like 0/3000060", self.text)
    }
}

impl std::error::Error for LsnError {}

impl FromStr for Lsn {
    type Err = LsnError;

    /// Parses `X/Y`, each half up to 8 hex digits (either case), as `pg_lsn` accepts it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let half = |h: &str| {
            (!h.is_empty() && h.len() <= 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(h, 16).ok())
                .flatten()
        };
        let bad = || LsnError { text: s.to_string() };
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let (hi, lo) = (half(hi).ok_or_else(bad)?, half(lo).ok_or_else(bad)?);
        Ok(Self((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Lsn {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Lsn".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$",
            "description": "A WAL location as Postgres prints a pg_lsn (0/3000060)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_as_postgres_prints_it() {
        for (text, value) in [("0/3000060", 0x300_0060), ("16/B374D848", (0x16 << 32) | 0xB374_D848), ("0/0", 0)] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn, Lsn(value));
            assert_eq!(lsn.to_string(), text);
            assert_eq!(serde_json::to_string(&lsn).unwrap(), format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Lsn>(&format!("\"{text}\"")).unwrap(), lsn);
        }
        assert_eq!("0/b374d848".parse::<Lsn>().unwrap().to_string(), "0/B374D848", "lower case is read");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn bad_text_is_named() {
        for bad in ["nope", "", "/1", "1/", "1/2/3", "+1/2", "1FFFFFFFF/0", "0/x"] {
            let e = bad.parse::<Lsn>().unwrap_err();
            assert_eq!(e.text, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let e = serde_json::from_str::<Lsn>("\"nope\"").unwrap_err().to_string();
        assert!(e.contains("\"nope\" is not a WAL location"), "{e}");
    }

    #[test]
    fn order_is_the_wal_order() {
        assert!("1/0".parse::<Lsn>().unwrap() > "0/FFFFFFFF".parse().unwrap());
        assert_eq!(Lsn(10).bytes_after(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_after(Lsn(10)), 0);
    }
}
