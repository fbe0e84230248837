//! `InstanceRole`: what an instance is right now, as `/status`, the metrics and the CLI say it.
//! The configured role, which an instance starts in, is [`crate::Role`].

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Role;

/// The role an instance runs in now (`/status`'s `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceRole {
    /// Postgres runs out of recovery: it accepts writes.
    Primary,
    /// Postgres runs in recovery: a standby.
    Replica,
    /// Postgres is starting (or being created), or runs but does not answer yet.
    Starting,
    /// Postgres is being shut down.
    Stopping,
    /// Postgres is not running, on purpose.
    Stopped,
    /// Postgres exited unexpectedly; a restart is scheduled.
    Crashed,
    /// An operator fenced the instance: Postgres is kept stopped.
    Fenced,
}

impl InstanceRole {
    /// Every role, in the order the metrics list them.
    pub const ALL: [InstanceRole; 7] =
        [Self::Primary, Self::Replica, Self::Starting, Self::Stopping, Self::Stopped, Self::Crashed, Self::Fenced];

    /// The role as the API spells it (`primary`, `replica`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
            Self::Starting => "starting",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
            Self::Fenced => "fenced",
        }
    }

    /// The configured role this one is, when it is one (`primary` or `replica`).
    pub fn configured(self) -> Option<Role> {
        match self {
            Self::Primary => Some(Role::Primary),
            Self::Replica => Some(Role::Replica),
            _ => None,
        }
    }
}

impl From<Role> for InstanceRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Primary => Self::Primary,
            Role::Replica => Self::Replica,
        }
    }
}

impl Role {
    /// The role as the configuration spells it (`primary`, `replica`).
    pub fn as_str(self) -> &'static str {
        InstanceRole::from(self).as_str()
    }
}

/// Answer of `GET /primary` and `GET /replica` when the instance has that role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleAnswer {
    /// The role.
    pub role: InstanceRole,
}

/// A word that is no [`InstanceRole`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRole {
    /// The word as given.
    pub text: String,
}

impl fmt::Display for UnknownRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an instance role: use one of primary, replica, starting, stopping, stopped, crashed, fenced",
            self.text
        )
    }
}

impl std::error::Error for UnknownRole {}

impl FromStr for InstanceRole {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownRole { text: s.to_string() })
    }
}

impl fmt::Display for InstanceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<Role> for InstanceRole {
    fn eq(&self, other: &Role) -> bool {
        self.configured() == Some(*other)
    }
}

impl PartialEq<str> for InstanceRole {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for InstanceRole {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_keep_their_wire_strings() {
        let spelled = ["primary", "replica", "starting", "stopping", "stopped", "crashed", "fenced"];
        for (role, text) in InstanceRole::ALL.into_iter().zip(spelled) {
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<InstanceRole>(&format!("\"{text}\"")).unwrap(), role);
            assert_eq!(role.to_string(), text);
            assert_eq!(role, text);
            assert_eq!(text.parse::<InstanceRole>().unwrap(), role);
        }
        assert_eq!(serde_json::to_string(&Role::Replica).unwrap(), "\"replica\"");
        assert_eq!(Role::Primary.to_string(), "primary");
        assert!("leader".parse::<InstanceRole>().unwrap_err().to_string().contains("\"leader\""));
    }

    #[test]
    fn a_running_role_matches_its_configured_role() {
        assert_eq!(InstanceRole::Replica, Role::Replica);
        assert_ne!(InstanceRole::Primary, Role::Replica);
        assert_ne!(InstanceRole::Fenced, Role::Primary);
        assert_eq!(InstanceRole::from(Role::Primary), InstanceRole::Primary);
    }
}
