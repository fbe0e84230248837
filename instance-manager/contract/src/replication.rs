//! The states Postgres reports for replication, as typed values: a WAL receiver's `status`
//! (`pg_stat_wal_receiver`) and a standby's `state` (`pg_stat_replication`). On the wire they
//! stay Postgres' words; a word this version does not know is kept as it is
//! ([`WalReceiverStatus::Other`], [`ReplicationState::Other`]).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enum of Postgres' words with a fallback for the others: `as_str`, `Display`, `From<&str>`,
/// comparison with a word, and serde as the word itself.
macro_rules! postgres_words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $word:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A word this version does not know, as Postgres said it.
            Other(String),
        }

        impl $name {
            /// The word as Postgres says it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $word,)*
                    Self::Other(word) => word,
                }
            }
        }

        impl From<&str> for $name {
            fn from(word: &str) -> Self {
                match word {
                    $($word => Self::$variant,)*
                    other => Self::Other(other.to_string()),
                }
            }
        }

        impl From<String> for $name {
            fn from(word: String) -> Self {
                Self::from(word.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Ok(Self::from(String::deserialize(deserializer)?))
            }
        }
    };
}

postgres_words! {
    /// A WAL receiver's `status`.
    WalReceiverStatus {
        /// Not running.
        Stopped => "stopped",
        /// Starting up.
        Starting => "starting",
        /// Streaming from its primary.
        Streaming => "streaming",
        /// Waiting for the startup process to ask for WAL.
        Waiting => "waiting",
        /// Reconnecting.
        Restarting => "restarting",
        /// Shutting down.
        Stopping => "stopping",
    }
}

postgres_words! {
    /// A standby's `state` as its primary sees it.
    ReplicationState {
        /// The WAL sender is starting.
        Startup => "startup",
        /// The standby is catching up.
        Catchup => "catchup",
        /// Streaming: the standby follows the primary's WAL as it is written.
        Streaming => "streaming",
        /// Sending a base backup.
        Backup => "backup",
        /// The WAL sender is stopping.
        Stopping => "stopping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_unchanged() {
        for word in ["streaming", "catchup", "startup", "backup", "stopping", "", "something new"] {
            let state: ReplicationState = serde_json::from_str(&format!("{word:?}")).unwrap();
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("{word:?}"));
            assert_eq!(state.to_string(), word);
        }
        for word in ["streaming", "waiting", "starting", "restarting", "stopped", "stopping", "unknown"] {
            let status: WalReceiverStatus = serde_json::from_str(&format!("{word:?}")).unwrap();
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("{word:?}"));
        }
        assert_eq!(WalReceiverStatus::from("streaming"), WalReceiverStatus::Streaming);
        assert_eq!(ReplicationState::from("later"), ReplicationState::Other("later".into()));
    }
}
