//! Finding the other members and reading their `/status`, bounded and in parallel.

use std::time::Duration;

use crate::api::{InstanceStatus, Member};
use crate::cli::{ApiClient, ApiTarget};
use crate::ha::decide::{Peer, PeerStatus};

/// Parses an LSN in Postgres' text form (`16/B374D848`) into a byte position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The WAL position that counts in an election: received (replica) or current (primary),
/// falling back to replayed.
pub fn election_lsn(s: &InstanceStatus) -> Option<u64> {
    [&s.received_lsn, &s.current_lsn, &s.replayed_lsn].into_iter().flatten().filter_map(|l| parse_lsn(l)).max()
}

/// Reads `/status` of every member but `me`, all at once, each within `timeout`.
pub async fn statuses(members: &[Member], me: &str, timeout: Duration) -> Vec<(Member, Option<InstanceStatus>)> {
    let futures = members.iter().filter(|m| m.name != me).map(|m| async move {
        let status = match ApiTarget::parse(&m.api) {
            Ok(target) => {
                let client = ApiClient::new(target).with_timeout(timeout);
                client.get_json::<InstanceStatus>("/status").await.ok()
            }
            Err(_) => None,
        };
        (m.clone(), status)
    });
    futures_util::future::join_all(futures).await
}

/// The election's view of a peer's status.
pub fn peer_view(name: &str, status: Option<&InstanceStatus>) -> Peer {
    Peer {
        name: name.to_string(),
        status: status.map(|s| PeerStatus {
            role: s.role.clone(),
            lsn: election_lsn(s),
            timeline: s.timeline,
            // A member that cannot read the lease cannot take it: it must not block the others.
            eligible: s.role == "replica"
                && !s.fenced
                && s.priority > 0
                && s.lease.as_ref().is_none_or(|l| l.last_error.is_none()),
            priority: s.priority,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trip() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("nope"), None);
    }
}
