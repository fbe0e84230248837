//! The control routes' documents (`POST /switchover`, `/promote`, `/fence`, `/unfence`,
//! `/pause`, `/resume`, `/ha/tick`, `/ha/failsafe`, `/ha/sync-leave`) and what the HA loop answers the commands
//! it carries out ([`HaResult`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Body of `POST /switchover`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// The replica to hand over to; default: the best one.
    #[serde(default)]
    pub target: Option<String>,
}

/// Answer of `POST /switchover`: the lease was handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverDone {
    /// The new primary.
    pub primary: String,
}

impl fmt::Display for SwitchoverDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.primary)
    }
}

/// Body of `POST /promote`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// Take the lease even from a live holder (it fences itself within its renew deadline;
    /// promotion waits until then).
    #[serde(default)]
    pub force: bool,
}

/// What an accepted `POST /promote` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromoteOutcome {
    /// This instance holds the lease already: nothing to do.
    AlreadyHolder,
    /// It took the free (or expired) lease and promotes now.
    Promoting,
    /// It took the lease from a live holder (with `force`) and promotes once that holder
    /// must have fenced itself.
    TookOver {
        /// The previous holder.
        from: String,
    },
}

impl fmt::Display for PromoteOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyHolder => f.write_str("already the lease holder"),
            Self::Promoting => f.write_str("promoting"),
            Self::TookOver { from } => {
                write!(f, "took the lease from {from}; promoting once it must have fenced itself")
            }
        }
    }
}

/// Answer of `POST /promote`: the outcome in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteAnswer {
    /// What was done ([`PromoteOutcome`] in words).
    pub result: String,
}

impl From<&PromoteOutcome> for PromoteAnswer {
    fn from(outcome: &PromoteOutcome) -> Self {
        Self { result: outcome.to_string() }
    }
}

/// Answer of `POST /fence` and `POST /unfence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceAnswer {
    /// Whether the instance is fenced now.
    pub fenced: bool,
}

/// Answer of `POST /pause` and `POST /resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseAnswer {
    /// Whether automatic failover is paused now.
    pub paused: bool,
}

/// Answer of `POST /ha/tick`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickAnswer {
    /// Always true: the request was understood.
    pub ok: bool,
    /// Whether the HA loop was woken (false: it was woken just before).
    pub woken: bool,
}

/// Body of `POST /ha/failsafe`: the holder asks a member to acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailsafeRequest {
    /// The cluster the holder belongs to.
    pub cluster: String,
    /// The holder.
    pub holder: String,
    /// The term of its lease.
    pub term: u64,
}

/// Answer of `POST /ha/failsafe`: acknowledged, or refused (why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailsafeAnswer {
    /// Whether the member acknowledged.
    pub acknowledged: bool,
    /// Why not.
    #[serde(default)]
    pub refused_because: Option<String>,
}

/// Body of `POST /ha/sync-leave`: a standby that is stopping (SIGTERM) asks the primary to take
/// it out of the synchronous set first, so that commits never wait for a standby that is going
/// away on purpose. Asked again until the answer is not `waiting`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncLeaveRequest {
    /// The standby that is stopping (its instance name).
    pub name: String,
}

/// Where a stopping standby stands in the primary's synchronous set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncLeaveState {
    /// Commits no longer wait for it: it may stop.
    Released,
    /// Another standby is being swapped in; ask again.
    Waiting,
    /// Leaving would not help or cannot be done: no other streaming standby can take its place
    /// (commits wait while it is down, as `dataDurability: required` promises), or it does not
    /// stream, so commits wait for it already. It stops anyway.
    CannotLeave,
}

/// Answer of `POST /ha/sync-leave`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncLeaveAnswer {
    /// Where it stands.
    pub state: SyncLeaveState,
    /// Why, in words.
    pub detail: String,
}

/// What the HA loop answers a command: its outcome, or why it refused or failed.
pub type HaResult<T> = Result<T, HaCommandError>;

/// Why the HA loop refused or failed a command, by kind; the message says it in words for the
/// operator (it is the `error` of the HTTP answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum HaCommandError {
    /// There is no leader election here: no lease is configured, or the HA loop is gone.
    NoElection(String),
    /// This instance is not in the state the command needs (a switchover asked of a replica,
    /// a promote of an instance whose Postgres is not a running replica).
    WrongRole(String),
    /// No member qualifies as the target of a switchover.
    NoTarget(String),
    /// The lease could not be read or written, or another instance holds it.
    Lease(String),
    /// This member promised the holder (failsafe) not to take the lease for now.
    Promised(String),
    /// A switchover began and was abandoned: Postgres was restarted as the primary.
    Aborted(String),
}

impl HaCommandError {
    /// The message, in words.
    pub fn message(&self) -> &str {
        match self {
            Self::NoElection(m)
            | Self::WrongRole(m)
            | Self::NoTarget(m)
            | Self::Lease(m)
            | Self::Promised(m)
            | Self::Aborted(m) => m,
        }
    }
}

impl fmt::Display for HaCommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for HaCommandError {}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn documents_keep_their_wire_form() {
        let req: SwitchoverRequest = serde_json::from_value(json!({"target": "pg-2"})).unwrap();
        assert_eq!(req.target.as_deref(), Some("pg-2"));
        assert!(serde_json::from_value::<SwitchoverRequest>(json!({"to": "pg-2"})).is_err(), "unknown fields refused");
        assert!(serde_json::from_value::<PromoteRequest>(json!({"force": true})).unwrap().force);
        assert_eq!(
            serde_json::to_value(SwitchoverDone { primary: "pg-2".into() }).unwrap(),
            json!({"primary": "pg-2"})
        );
        let took = PromoteOutcome::TookOver { from: "pg-1".into() };
        assert_eq!(
            serde_json::to_value(PromoteAnswer::from(&took)).unwrap(),
            json!({"result": "took the lease from pg-1; promoting once it must have fenced itself"})
        );
        assert_eq!(PromoteOutcome::AlreadyHolder.to_string(), "already the lease holder");
        assert_eq!(
            serde_json::to_value(TickAnswer { ok: true, woken: false }).unwrap(),
            json!({"ok": true, "woken": false})
        );
        assert_eq!(serde_json::to_value(FenceAnswer { fenced: true }).unwrap(), json!({"fenced": true}));
        assert_eq!(serde_json::to_value(PauseAnswer { paused: false }).unwrap(), json!({"paused": false}));
        let ask = FailsafeRequest { cluster: "main".into(), holder: "pg-1".into(), term: 4 };
        assert_eq!(serde_json::to_value(&ask).unwrap(), json!({"cluster": "main", "holder": "pg-1", "term": 4}));
        let refused: FailsafeAnswer = serde_json::from_value(json!({"acknowledged": false})).unwrap();
        assert_eq!(refused, FailsafeAnswer { acknowledged: false, refused_because: None });
        let leave: SyncLeaveRequest = serde_json::from_value(json!({"name": "pg-2"})).unwrap();
        assert_eq!(leave.name, "pg-2");
        let answer = SyncLeaveAnswer { state: SyncLeaveState::CannotLeave, detail: "alone".into() };
        assert_eq!(serde_json::to_value(&answer).unwrap(), json!({"state": "cannot_leave", "detail": "alone"}));
    }

    #[test]
    fn command_errors_are_their_message() {
        let e = HaCommandError::Lease("the lease cannot be read".into());
        assert_eq!(e.to_string(), "the lease cannot be read");
        assert_eq!(serde_json::to_value(&e).unwrap(), json!({"kind": "lease", "message": "the lease cannot be read"}));
    }
}
