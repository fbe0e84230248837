//! The Secrets step: create what is missing, renew the operator's server certificate, and
//! check the Secrets a person provided. Generated values are made only when a Secret is
//! missing (or the certificate is due), so nothing is ever regenerated: a password written once
//! stays, a deleted operator Secret comes back with new values, and a provided Secret is read,
//! never written.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use crate::build::secrets::{self as build_secrets, Generated, NOT_AFTER_ANNOTATION};
use crate::build::{Cluster, pod};
use crate::generate::{self, GenerateError};

/// The outcome of the Secrets step.
#[derive(Debug, Default)]
pub struct SecretsOutcome {
    /// Secrets to write (create, or the renewed server certificate).
    pub writes: Vec<Secret>,
    /// Provided Secrets that are missing or lack a key: the instances cannot start.
    pub problems: Vec<String>,
    /// The CA the instances' API certificates are signed with (PEM), to read their `/status`.
    pub ca_pem: Option<String>,
    /// The instance API's bearer token.
    pub api_token: Option<String>,
    /// When the operator's server certificate expires.
    pub server_not_after: Option<String>,
}

fn key(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The Secrets a person provided through the spec, and the key each must hold.
pub fn provided(cluster: &Cluster<'_>) -> Vec<(String, &'static str)> {
    let names = &cluster.names;
    let mut out = Vec::new();
    if pod::superuser_secret(cluster) != names.superuser_secret() {
        out.push((pod::superuser_secret(cluster), "password"));
    }
    if pod::app_secret(cluster) != names.app_secret() {
        out.push((pod::app_secret(cluster), "password"));
    }
    if pod::server_secret(cluster) != names.server_secret() {
        for k in ["tls.crt", "tls.key", "ca.crt"] {
            out.push((pod::server_secret(cluster), k));
        }
    }
    out
}

/// Decides and generates. `now` is the clock; randomness comes from [`generate`].
pub fn step(
    cluster: &Cluster<'_>,
    secrets: &BTreeMap<String, Secret>,
    now: jiff::Timestamp,
) -> Result<SecretsOutcome, GenerateError> {
    let names = &cluster.names;
    let mut out = SecretsOutcome::default();
    let backup = crate::build::config::backup_secret_keys(cluster.spec()).into_iter().map(|sel| (sel.name, sel.key));
    let needed: Vec<(String, String)> =
        provided(cluster).into_iter().map(|(n, k)| (n, k.to_owned())).chain(backup).collect();
    for (name, k) in needed {
        match secrets.get(&name) {
            None => out.problems.push(format!("Secret {name} (named in the spec) does not exist")),
            Some(s) if key(Some(s), &k).is_none() => out.problems.push(format!("Secret {name} has no key {k:?}")),
            Some(_) => {}
        }
    }
    out.problems.sort();
    out.problems.dedup();

    let operator_tls = pod::server_secret(cluster) == names.server_secret();
    let existing: Vec<String> = secrets.keys().cloned().collect();
    let server = secrets.get(&names.server_secret());
    let renew = operator_tls
        && server.is_some()
        && generate::needs_renewal(
            server
                .and_then(|s| s.metadata.annotations.as_ref())
                .and_then(|a| a.get(NOT_AFTER_ANNOTATION))
                .map(String::as_str),
            now,
        );
    let all_present = build_secrets::all(cluster, &placeholder())
        .iter()
        .all(|s| s.metadata.name.as_ref().is_some_and(|n| existing.contains(n)));
    if !all_present || renew {
        let mut generated = generate::generate(names, now)?;
        // A CA that exists signs the new server certificate: the instances' trust stays valid.
        let ca = secrets.get(&names.ca_secret());
        if let (Some(cert), Some(k)) = (key(ca, "ca.crt"), key(ca, "ca.key")) {
            generated.tls = generate::server_material(names, now, &cert, &k)?;
        } else if server.is_some() && operator_tls {
            // The CA is gone but the server certificate is not: both are made again.
            out.writes.push(build_secrets::server(cluster, &generated.tls));
        }
        out.writes.extend(crate::build::missing_secrets(cluster, &existing, &generated));
        if renew {
            out.writes.push(build_secrets::server(cluster, &generated.tls));
        }
        dedup_by_name(&mut out.writes);
    }
    let server_after: Option<&Secret> = out
        .writes
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(pod::server_secret(cluster).as_str()))
        .or_else(|| secrets.get(&pod::server_secret(cluster)));
    out.ca_pem = key(server_after, "ca.crt");
    out.server_not_after =
        server_after.and_then(|s| s.metadata.annotations.as_ref()).and_then(|a| a.get(NOT_AFTER_ANNOTATION)).cloned();
    let token = out
        .writes
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(names.token_secret().as_str()))
        .or_else(|| secrets.get(&names.token_secret()));
    out.api_token = key(token, "token");
    Ok(out)
}

fn dedup_by_name(writes: &mut Vec<Secret>) {
    let mut seen = std::collections::BTreeSet::new();
    // The last write of a name wins (the renewed certificate over a missing-secret default).
    let mut kept: Vec<Secret> = writes.drain(..).rev().filter(|s| seen.insert(s.metadata.name.clone())).collect();
    kept.reverse();
    *writes = kept;
}

/// Values that are never written: only the names of [`build_secrets::all`] are looked at.
fn placeholder() -> Generated {
    let tls = build_secrets::TlsMaterial {
        ca_cert: String::new(),
        ca_key: String::new(),
        server_cert: String::new(),
        server_key: String::new(),
        server_not_after: String::new(),
    };
    Generated {
        superuser_password: String::new(),
        app_password: String::new(),
        replication_password: String::new(),
        api_token: String::new(),
        tls,
    }
}
