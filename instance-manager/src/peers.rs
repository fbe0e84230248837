//! Finding the other members and reading their `/status`, bounded and in parallel.
//!
//! Members whose `api` is `https://` are verified against `api.tls.caFile`; with
//! `api.tls.clientAuth: required` this instance presents its own API certificate (which must
//! then allow client authentication) when a peer asks for one.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{ClientAuth, InstanceStatus, Lsn, Member};
use crate::cli::{ApiClient, ApiTarget};
use crate::config::Validated;

/// The WAL position that counts in an election: received (replica) or current (primary),
/// falling back to replayed.
pub fn election_lsn(s: &InstanceStatus) -> Option<u64> {
    [s.received_lsn, s.current_lsn, s.replayed_lsn].into_iter().flatten().max().map(Lsn::as_u64)
}

/// The TLS client configuration for `https://` members, when `api.tls.caFile` is set.
pub fn tls_config(v: &Validated) -> Option<Arc<rustls::ClientConfig>> {
    let spec = v.config.api.tls.as_ref()?;
    let ca = spec.ca_file.as_deref()?;
    let identity = (spec.client_auth == ClientAuth::Required).then_some((&*spec.cert_file, &*spec.key_file));
    match crate::tls::client_config(ca, identity) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up TLS for the members' APIs");
            None
        }
    }
}

/// A client of `member`'s API with `timeout` per request (`tls` from [`tls_config`]).
pub fn client(
    member: &Member,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<ApiClient, crate::cli::ClientError> {
    let client = ApiClient::new(ApiTarget::parse(&member.api)?).with_timeout(timeout);
    Ok(match tls {
        Some(config) => client.with_tls(Arc::clone(config)),
        None => client,
    })
}

/// Reads `/status` of `members` (the HA loop's membership: `ha::membership`) but this
/// instance, all at once, each within `timeout`; `v` says how (TLS).
pub async fn statuses(v: &Validated, members: &[Member], timeout: Duration) -> Vec<(Member, Option<InstanceStatus>)> {
    let tls = tls_config(v);
    let futures = members.iter().filter(|m| m.name != v.name).map(|m| {
        let client = client(m, tls.as_ref(), timeout);
        async move {
            let status = match client {
                Ok(client) => client.get_json::<InstanceStatus>("/status").await.ok(),
                Err(_) => None,
            };
            (m.clone(), status)
        }
    });
    futures_util::future::join_all(futures).await
}

/// One failsafe round: asks every member of `members` but this instance to acknowledge `req`
/// (`POST /ha/failsafe` with the members' shared bearer token), all at once, each within
/// `timeout`. Returns the members that did not acknowledge, with why; empty means every member
/// acknowledged.
pub async fn failsafe_round(
    v: &Validated,
    members: &[Member],
    req: &crate::failsafe::FailsafeRequest,
    timeout: Duration,
) -> Vec<(String, String)> {
    let token = match &v.config.api.token_file {
        Some(file) => match crate::osuser::read_secret(file) {
            Ok(t) => t,
            Err(e) => return vec![("*".into(), format!("cannot read api.tokenFile: {e}"))],
        },
        None => return vec![("*".into(), "failsafe needs api.tokenFile (the members' shared token)".into())],
    };
    let tls = tls_config(v);
    let futures = members.iter().filter(|m| m.name != v.name).map(|m| {
        let client = client(m, tls.as_ref(), timeout);
        let token = token.expose().to_string();
        async move {
            let answer = match client {
                Ok(c) => c
                    .post_json::<_, crate::failsafe::FailsafeAnswer>("/ha/failsafe", req, Some(&token))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(a) if a.acknowledged => None,
                Ok(a) => Some((m.name.clone(), a.refused_because.unwrap_or_else(|| "refused".into()))),
                Err(e) => Some((m.name.clone(), e)),
            }
        }
    });
    futures_util::future::join_all(futures).await.into_iter().flatten().collect()
}

/// Asks every other member to run an HA tick now (`POST /ha/tick`), all at once, each call
/// bounded by a second: a new holder does this so that the others follow it at once instead of
/// at their next period (a synchronous primary's first commit waits for a standby to find it).
/// The returned future owns its calls: spawn it, or await it where the manager may exit next
/// (after a handover), since a spawned call dies with the process.
pub fn wake_all(v: &Validated) -> impl std::future::Future<Output = ()> + Send + 'static {
    let tls = tls_config(v);
    let clients: Vec<_> = v
        .config
        .members
        .iter()
        .filter(|m| m.name != v.name)
        .filter_map(|m| client(m, tls.as_ref(), Duration::from_secs(1)).ok())
        .collect();
    async move {
        let calls = clients.into_iter().map(|client| async move {
            let _ = client.post_json::<_, serde_json::Value>("/ha/tick", &serde_json::json!({}), None).await;
        });
        futures_util::future::join_all(calls).await;
    }
}
