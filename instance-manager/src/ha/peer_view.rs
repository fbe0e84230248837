//! What an election reads from a peer's `/status` ([`Peer`] for the pure decision).

use super::decide::{Peer, PeerStatus};
use crate::api::{InstanceRole, InstanceStatus};
use crate::peers::election_lsn;

/// The election's view of a peer's status.
pub fn peer_view(name: &str, status: Option<&InstanceStatus>) -> Peer {
    Peer {
        name: name.to_string(),
        status: status.map(|s| PeerStatus {
            role: s.role,
            lsn: election_lsn(s),
            timeline: s.timeline,
            // A member that cannot read the lease cannot take it, nor can one that is not listed
            // in its own membership (it is being removed): neither must block the others.
            eligible: s.role == InstanceRole::Replica
                && !s.fenced
                && s.priority > 0
                && s.lease
                    .as_ref()
                    .is_none_or(|l| l.last_error.is_none() && l.membership.as_ref().is_none_or(|m| m.listed)),
            priority: s.priority,
            term: s.lease.as_ref().map(|l| l.highest_term.max(l.term)).unwrap_or(0),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A streaming replica's `/status`, with its view of its own membership.
    fn replica(membership: serde_json::Value) -> InstanceStatus {
        serde_json::from_value(serde_json::json!({
            "name": "pg-3", "cluster": "main", "role": "replica", "configured_role": "primary",
            "postgres": {"state": "running", "pid": 7, "accepting_connections": true, "version": "15",
                         "restarts": 0, "last_exit": null},
            "received_lsn": "0/3000060", "replication": [], "pending_restart": [], "priority": 100,
            "lease": {"store": "file /l", "holder": "pg-1", "term": 2, "held_by_me": false,
                      "sync_standbys": [], "eligible": true, "last_decision": "follow pg-1",
                      "membership": membership},
            "data_dir": "/d", "manager_pid": 1, "manager_version": "0", "uptime_seconds": 1
        }))
        .unwrap()
    }

    #[test]
    fn a_peer_left_out_of_its_own_membership_is_not_eligible() {
        let listed = replica(serde_json::json!({"members": ["pg-1", "pg-3"], "listed": true}));
        assert!(peer_view("pg-3", Some(&listed)).status.unwrap().eligible);
        let removed = replica(serde_json::json!({"members": ["pg-1", "pg-2"], "listed": false}));
        assert!(!peer_view("pg-3", Some(&removed)).status.unwrap().eligible, "it will not take the lease");
        // A manager that predates live membership says nothing: eligible as before.
        assert!(peer_view("pg-3", Some(&replica(serde_json::Value::Null))).status.unwrap().eligible);
    }
}
