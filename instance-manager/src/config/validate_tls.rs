//! Validation of `api.tls` and `postgres.tls`: every file readable and holding what it should,
//! each key matching its certificate, and the settings that need a CA having one. An expired
//! certificate is not refused here (the manager logs a warning when it loads it): a rotation
//! may be on its way, and refusing to start would not make it come sooner.

use std::path::Path;

use super::validate::Collector;
use crate::api::{ClientAuth, InstanceConfig};
use crate::tls::{self, Error};

/// Checks the TLS settings of `cfg`.
pub(super) fn check_tls(c: &mut Collector, cfg: &InstanceConfig) {
    if let Some(t) = &cfg.api.tls {
        check_pair(c, "api.tls", &t.cert_file, &t.key_file, true);
        if let Some(ca) = &t.ca_file {
            check_ca(c, "api.tls.caFile", ca);
        } else if t.client_auth != ClientAuth::None {
            c.add(
                "api.tls.clientAuth",
                format!(
                    "{} needs api.tls.caFile",
                    if t.client_auth == ClientAuth::Required { "required" } else { "optional" }
                ),
                "set caFile to the CA that signs the client certificates, or use clientAuth: none",
            );
        }
    }
    let https_member = cfg.members.iter().position(|m| m.api.starts_with("https://"));
    if let Some(i) = https_member
        && cfg.api.tls.as_ref().and_then(|t| t.ca_file.as_ref()).is_none()
    {
        c.add(
            &format!("members[{i}].api"),
            "is an https:// address but there is no CA to verify it with",
            "set api.tls.caFile to the CA that signed the members' API certificates",
        );
    }
    if let Some(t) = &cfg.postgres.tls {
        // Postgres (OpenSSL) reads more kinds of keys than rustls/ring: a key ring cannot use
        // is left to Postgres to judge.
        check_pair(c, "postgres.tls", &t.cert_file, &t.key_file, false);
        if let Some(ca) = &t.ca_file {
            check_ca(c, "postgres.tls.caFile", ca);
        }
    } else if cfg.postgres.require_tls {
        c.add(
            "postgres.requireTls",
            "is true but postgres.tls is not set",
            "set postgres.tls.certFile and keyFile, or remove requireTls",
        );
    }
}

fn check_pair(c: &mut Collector, field: &str, cert: &Path, key: &Path, strict_key: bool) {
    let hint = "mount the Secret there, or fix the path";
    let cert_ok = match tls::read_certs(cert) {
        Ok(_) => true,
        Err(e) => {
            c.add(&format!("{field}.certFile"), e.to_string(), hint);
            false
        }
    };
    let key_ok = match tls::read_key(key) {
        Ok(_) => true,
        Err(e) => {
            c.add(&format!("{field}.keyFile"), e.to_string(), hint);
            false
        }
    };
    if !(cert_ok && key_ok) {
        return;
    }
    match tls::certified_key(cert, key) {
        Ok(_) => {}
        Err(Error::UnusableKey { .. }) if !strict_key => {}
        Err(e @ Error::KeyMismatch { .. }) => c.add(
            &format!("{field}.keyFile"),
            e.to_string(),
            "use the key the certificate was issued for (tls.key beside tls.crt)",
        ),
        Err(e) => c.add(&format!("{field}.keyFile"), e.to_string(), "use an RSA, ECDSA (P-256, P-384) or Ed25519 key"),
    }
}

fn check_ca(c: &mut Collector, field: &str, ca: &Path) {
    if let Err(e) = tls::read_roots(ca) {
        c.add(field, e.to_string(), "point it at the PEM file of the CA certificate (ca.crt)");
    }
}
