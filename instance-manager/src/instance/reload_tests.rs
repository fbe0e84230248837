#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Which edits of the configuration file apply live and which wait for a restart.

use std::path::{Path, PathBuf};

use super::merge;
use crate::api::{ApiTlsSpec, ClientAuth};
use crate::config::{Validated, parse, validate};

fn config() -> Validated {
    // Validation looks at the machine: the data directory's parent must exist.
    let yaml = "name: pg-1\ndataDir: /tmp/pgwarden-reload-test-pgdata\nrunDir: /tmp/pgwarden-reload-test-run\n\
                binDir: /usr/lib/postgresql/15/bin\napi:\n  listen: 127.0.0.1:8000\n";
    validate(parse(yaml, Path::new("t.yaml")).unwrap()).unwrap()
}

fn tls(dir: &str) -> ApiTlsSpec {
    ApiTlsSpec {
        cert_file: PathBuf::from(format!("{dir}/tls.crt")),
        key_file: PathBuf::from(format!("{dir}/tls.key")),
        ca_file: Some(PathBuf::from(format!("{dir}/ca.crt"))),
        client_auth: ClientAuth::Optional,
    }
}

#[test]
fn enabling_api_tls_is_pending_a_restart() {
    let old = config();
    let mut new = old.clone();
    new.config.api.tls = Some(tls("/etc/pgwarden/api"));
    let (merged, pending) = merge(&old, new);
    assert_eq!(pending, ["api.tls"]);
    assert_eq!(merged.config.api.tls, None, "the listener keeps serving plain HTTP until the restart");
}

#[test]
fn disabling_or_moving_api_tls_is_pending_a_restart() {
    let mut old = config();
    old.config.api.tls = Some(tls("/etc/pgwarden/api"));
    for edit in [
        None,
        Some(tls("/etc/pgwarden/other")),
        Some(ApiTlsSpec { client_auth: ClientAuth::Required, ..tls("/etc/pgwarden/api") }),
    ] {
        let mut new = old.clone();
        new.config.api.tls = edit.clone();
        let (merged, pending) = merge(&old, new);
        assert_eq!(pending, ["api.tls"], "{edit:?}");
        assert_eq!(merged.config.api.tls, old.config.api.tls, "{edit:?}");
    }
}

#[test]
fn the_same_api_tls_is_not_pending() {
    // Rotating the files' contents is not an edit of the configuration: tls::reload does it.
    let mut old = config();
    old.config.api.tls = Some(tls("/etc/pgwarden/api"));
    let (merged, pending) = merge(&old, old.clone());
    assert!(pending.is_empty(), "{pending:?}");
    assert_eq!(merged.config.api.tls, old.config.api.tls);
}

#[test]
fn a_new_token_file_applies_at_once() {
    // The token file is read at every request: a new path needs no restart.
    let old = config();
    let mut new = old.clone();
    new.config.api.token_file = Some(PathBuf::from("/etc/pgwarden/token"));
    let (merged, pending) = merge(&old, new);
    assert!(pending.is_empty(), "{pending:?}");
    assert_eq!(merged.config.api.token_file, Some(PathBuf::from("/etc/pgwarden/token")));
}

#[test]
fn api_and_metrics_addresses_are_pending_a_restart() {
    let old = config();
    let mut new = old.clone();
    new.api_listen = "127.0.0.1:8001".parse().unwrap();
    new.config.api.listen = "127.0.0.1:8001".into();
    new.metrics.listen = "127.0.0.1:9188".parse().unwrap();
    let (merged, pending) = merge(&old, new);
    assert_eq!(pending, ["api.listen", "metrics.listen"]);
    assert_eq!((merged.api_listen, merged.config.api.listen.as_str()), (old.api_listen, "127.0.0.1:8000"));
    assert_eq!(merged.metrics.listen, old.metrics.listen);
}

#[test]
fn moving_the_wal_dir_is_pending_a_restart() {
    let old = config();
    let mut new = old.clone();
    new.config.wal_dir = Some(PathBuf::from("/var/lib/postgresql/wal/pg_wal"));
    let (merged, pending) = merge(&old, new);
    assert_eq!(pending, ["walDir"]);
    assert_eq!(merged.config.wal_dir, None, "the running data directory keeps its WAL where it is");
}

#[test]
fn members_apply_at_once_and_the_lease_waits_for_a_restart() {
    use crate::api::{LeaseSpec, Member};
    let mut old = config();
    let member =
        |n: &str| Member { name: n.into(), host: "127.0.0.1".into(), port: 5432, api: format!("http://{n}:8000") };
    old.config.lease = Some(serde_yaml::from_str::<LeaseSpec>("backend: file\npath: /tmp/l.json\n").unwrap());
    old.config.members = vec![member("pg-1"), member("pg-2")];
    let mut new = old.clone();
    new.config.members = vec![member("pg-1"), member("pg-2"), member("pg-3")];
    let (merged, pending) = merge(&old, new.clone());
    assert!(pending.is_empty(), "{pending:?}");
    assert_eq!(merged.config.members.len(), 3, "members apply without a restart");
    // The lease store and its timing are opened once, by the HA loop's start.
    new.config.lease.as_mut().unwrap().lease_duration_seconds = 30.0;
    let (merged, pending) = merge(&old, new);
    assert_eq!(pending, ["lease"]);
    assert_eq!(merged.config.lease, old.config.lease);
    assert_eq!(merged.config.members.len(), 3);
}
