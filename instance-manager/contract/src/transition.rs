//! Changes of primary: their kinds, the last one an instance took part in, and how often each
//! kind made it the primary (`/status`'s `lease.last_transition` and `lease.transitions`, the
//! `pgwarden_primary_transitions_total` metric).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How an instance became the primary.
///
/// The variants are in the order of their names, so a map keyed by kind lists them as it
/// did when the keys were strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransitionKind {
    /// It took a lease nobody held before (the cluster's first primary).
    Bootstrap,
    /// It took the lease after the previous holder's expired.
    Failover,
    /// An operator promoted it (`POST /promote`).
    Promote,
    /// The previous primary handed the lease to it (`POST /switchover`, or a SIGTERM).
    Switchover,
}

impl TransitionKind {
    /// Every kind, in the order the metrics list them.
    pub const ALL: [TransitionKind; 4] = [Self::Bootstrap, Self::Failover, Self::Switchover, Self::Promote];

    /// The kind as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bootstrap => "bootstrap",
            Self::Failover => "failover",
            Self::Promote => "promote",
            Self::Switchover => "switchover",
        }
    }
}

impl PartialEq<str> for TransitionKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TransitionKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for TransitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often one kind of change of primary happened, and how long the last one took.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionCount {
    /// How many.
    pub total: u64,
    /// From the decision to the promoted primary accepting writes, in milliseconds.
    pub last_duration_ms: u64,
}

/// A change of primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// How it happened.
    pub kind: TransitionKind,
    /// The previous holder.
    pub from: Option<String>,
    /// The new holder.
    pub to: String,
    /// The new term.
    pub term: u64,
    /// When it completed (RFC 3339).
    pub at: String,
    /// From the decision to the promoted primary accepting writes, in milliseconds.
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn kinds_keep_their_wire_strings_and_order() {
        let mut by_kind = BTreeMap::new();
        for kind in TransitionKind::ALL {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
            by_kind.insert(kind, TransitionCount { total: 1, last_duration_ms: 2 });
        }
        let json = serde_json::to_string(&by_kind).unwrap();
        let count = r#"{"total":1,"last_duration_ms":2}"#;
        assert_eq!(
            json,
            format!(r#"{{"bootstrap":{count},"failover":{count},"promote":{count},"switchover":{count}}}"#)
        );
        let back: BTreeMap<TransitionKind, TransitionCount> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, by_kind);
    }
}
