//! The Secrets: credentials (`-superuser`, `-app` with the keys CloudNativePG users' apps read,
//! `-replication`, `-api-token`) and TLS (`-ca`, `-server`). Their values come in as
//! [`Generated`]; the reconcile shell generates them only for Secrets that do not exist, so a
//! password is never regenerated, and a Secret the spec names (the user's) is never written.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::Cluster;
use super::pod::{app_secret, server_secret, superuser_secret};
use crate::names::PG_PORT;

/// Annotation on the operator's server certificate Secret: when the certificate expires
/// (RFC 3339), so renewal needs no X.509 parsing.
pub const NOT_AFTER_ANNOTATION: &str = "pgwarden.io/not-after";

/// Values for Secrets that do not exist yet, made by the reconcile shell (random, clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The `postgres` superuser's password.
    pub superuser_password: String,
    /// The application owner's password.
    pub app_password: String,
    /// `streaming_replica`'s password.
    pub replication_password: String,
    /// The instance API's bearer token.
    pub api_token: String,
    /// The CA and the server certificate.
    pub tls: TlsMaterial,
}

/// PEM certificates and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The CA's certificate.
    pub ca_cert: String,
    /// The CA's key.
    pub ca_key: String,
    /// The server certificate, signed by the CA.
    pub server_cert: String,
    /// Its key.
    pub server_key: String,
    /// When the server certificate expires (RFC 3339).
    pub server_not_after: String,
}

fn data(pairs: &[(&str, String)]) -> BTreeMap<String, ByteString> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.clone().into_bytes()))).collect()
}

fn secret(cluster: &Cluster<'_>, name: &str, type_: &str, pairs: &[(&str, String)]) -> Secret {
    Secret { metadata: cluster.meta(name), type_: Some(type_.to_owned()), data: Some(data(pairs)), ..Secret::default() }
}

/// A login's Secret with CloudNativePG's keys: `username`, `user`, `password`, `dbname`,
/// `host` (the `-rw` Service), `port`, `uri`, `jdbc-uri`, `pgpass`.
fn login(cluster: &Cluster<'_>, name: &str, user: &str, dbname: &str, password: &str) -> Secret {
    let names = &cluster.names;
    let host = names.rw();
    let fqdn = format!("{host}.{}", names.namespace);
    // The superuser's `dbname` is `*` (any database, as in pgpass); its URI names `postgres`.
    let uri_db = if dbname == "*" { "postgres" } else { dbname };
    secret(
        cluster,
        name,
        "kubernetes.io/basic-auth",
        &[
            ("username", user.to_owned()),
            ("user", user.to_owned()),
            ("password", password.to_owned()),
            ("dbname", dbname.to_owned()),
            ("host", host.clone()),
            ("port", PG_PORT.to_string()),
            ("uri", format!("postgresql://{user}:{password}@{fqdn}:{PG_PORT}/{uri_db}")),
            ("jdbc-uri", format!("jdbc:postgresql://{fqdn}:{PG_PORT}/{uri_db}?password={password}&user={user}")),
            ("pgpass", format!("{host}:{PG_PORT}:{dbname}:{user}:{password}\n")),
        ],
    )
}

/// The operator's server certificate Secret (`kubernetes.io/tls`, with `ca.crt` as
/// cert-manager writes it).
pub fn server(cluster: &Cluster<'_>, tls: &TlsMaterial) -> Secret {
    let mut s = secret(
        cluster,
        &cluster.names.server_secret(),
        "kubernetes.io/tls",
        &[("tls.crt", tls.server_cert.clone()), ("tls.key", tls.server_key.clone()), ("ca.crt", tls.ca_cert.clone())],
    );
    s.metadata.annotations = Some(BTreeMap::from([(NOT_AFTER_ANNOTATION.to_owned(), tls.server_not_after.clone())]));
    s
}

/// Every Secret the operator would make for `cluster`, skipping those the spec names instead.
pub fn all(cluster: &Cluster<'_>, g: &Generated) -> Vec<Secret> {
    let names = &cluster.names;
    let mut out = Vec::new();
    if superuser_secret(cluster) == names.superuser_secret() {
        out.push(login(cluster, &names.superuser_secret(), "postgres", "*", &g.superuser_password));
    }
    if app_secret(cluster) == names.app_secret() {
        let (db, owner) = match cluster.spec().bootstrap.as_ref().and_then(|b| b.initdb.as_ref()) {
            Some(i) => (i.database.clone(), i.owner.clone()),
            None => ("app".to_owned(), "app".to_owned()),
        };
        out.push(login(cluster, &names.app_secret(), &owner, &db, &g.app_password));
    }
    out.push(secret(
        cluster,
        &names.replication_secret(),
        "kubernetes.io/basic-auth",
        &[("username", "streaming_replica".to_owned()), ("password", g.replication_password.clone())],
    ));
    out.push(secret(cluster, &names.token_secret(), "Opaque", &[("token", g.api_token.clone())]));
    if server_secret(cluster) == names.server_secret() {
        out.push(secret(
            cluster,
            &names.ca_secret(),
            "Opaque",
            &[("ca.crt", g.tls.ca_cert.clone()), ("ca.key", g.tls.ca_key.clone())],
        ));
        out.push(server(cluster, &g.tls));
    }
    out
}
