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
            // A member that cannot read the lease cannot take it: it must not block the others.
            eligible: s.role == InstanceRole::Replica
                && !s.fenced
                && s.priority > 0
                && s.lease.as_ref().is_none_or(|l| l.last_error.is_none()),
            priority: s.priority,
            term: s.lease.as_ref().map(|l| l.highest_term.max(l.term)).unwrap_or(0),
        }),
    }
}
