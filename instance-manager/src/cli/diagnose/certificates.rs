//! The certificate checks of `diagnose`, one per certificate `/status` lists as in use (`api`,
//! `api_ca`, `postgres`, `postgres_ca`).
//!
//! The files are read again from disk ([`gather`]), since a rotation may have replaced what the
//! manager holds: each must be readable and parse, a server certificate's key must match it
//! and the configured CA must have issued it; then its validity is judged against the clock,
//! a warning [`EXPIRY_WARN`] ahead. A file on disk that differs from the one in use (a
//! rotation not taken, or refused) is reported too. [`certificate_check`] judges the gathered
//! [`CertificateFacts`] without I/O.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, Error as TlsError};

use super::Check;
use crate::api::CertificateStatus;
use crate::tls::{self, CertInfo};

/// How long before its `notAfter` a certificate is reported (cert-manager renews at two
/// thirds of the lifetime: 30 days ahead for its default 90-day certificates).
pub const EXPIRY_WARN: SignedDuration = SignedDuration::from_hours(7 * 24);

/// A certificate file as read from disk by `diagnose`.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateFacts {
    /// `api`, `api_ca`, `postgres` or `postgres_ca`.
    pub purpose: String,
    /// The certificate (or CA) file.
    pub file: PathBuf,
    /// The private key file of a server certificate.
    pub key_file: Option<PathBuf>,
    /// What the file holds (a server certificate: its own; a CA file: the certificate that
    /// expires first), or why it cannot be used. Every `Err` of these facts is the reason a
    /// check shows a person, not an error to match on.
    pub read: Result<Validity, String>,
    /// Whether the key matches the certificate; `None` when not checked (a CA, an unreadable
    /// certificate, a key kind only Postgres' OpenSSL reads).
    pub key: Option<Result<(), String>>,
    /// The CA file and whether it verifies the certificate's chain; `None` without a CA.
    pub chain: Option<(PathBuf, Result<(), String>)>,
    /// The serial number of the certificate the manager has in use.
    pub in_use_serial: String,
    /// Why the manager refused the last rotation of this file, if it did.
    pub last_reload_error: Option<String>,
}

/// Serial number and validity period of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    /// Serial number (hex).
    pub serial: String,
    /// `notBefore`.
    pub not_before: Timestamp,
    /// `notAfter`.
    pub not_after: Timestamp,
}

impl From<CertInfo> for Validity {
    fn from(i: CertInfo) -> Self {
        Self { serial: i.serial, not_before: i.not_before, not_after: i.not_after }
    }
}

/// Reads the files of every certificate in `in_use` (the `/status` `tls` section) at `now`.
pub fn gather(in_use: &BTreeMap<String, CertificateStatus>, now: Timestamp) -> Vec<CertificateFacts> {
    let ca_of = |purpose: &str| in_use.get(&format!("{purpose}_ca")).map(|ca| PathBuf::from(&ca.file));
    in_use.iter().map(|(purpose, s)| gather_one(purpose, s, ca_of(purpose).as_deref(), now)).collect()
}

fn gather_one(purpose: &str, s: &CertificateStatus, ca: Option<&Path>, now: Timestamp) -> CertificateFacts {
    let file = PathBuf::from(&s.file);
    let key_file = s.key_file.as_ref().map(PathBuf::from);
    let mut facts = CertificateFacts {
        purpose: purpose.to_owned(),
        file: file.clone(),
        key_file: key_file.clone(),
        read: Err(String::new()),
        key: None,
        chain: None,
        in_use_serial: s.serial.clone(),
        last_reload_error: s.last_reload_error.clone(),
    };
    let certs = match tls::read_certs(&file) {
        Ok(certs) => certs,
        Err(e) => return CertificateFacts { read: Err(e.to_string()), ..facts },
    };
    let info = match &key_file {
        Some(_) => certs.first().and_then(|c| CertInfo::from_der(c)),
        None => certs.iter().filter_map(|c| CertInfo::from_der(c)).min_by_key(|i| i.not_after),
    };
    let Some(info) = info else {
        facts.read = Err(format!("{} holds a PEM certificate that cannot be parsed", file.display()));
        return facts;
    };
    if let Some(key) = &key_file {
        facts.key = match tls::certified_key(&file, key) {
            Ok(_) => Some(Ok(())),
            // OpenSSL reads more kinds of keys than ring: Postgres judges those itself.
            Err(tls::Error::UnusableKey { .. }) if purpose == tls::status::POSTGRES => None,
            Err(e) => Some(Err(e.to_string())),
        };
        // Judged at a moment the certificate is valid: an expiry is its own verdict.
        let at = now.min(info.not_after).max(info.not_before);
        facts.chain = ca.map(|ca| (ca.to_owned(), verify_chain(&certs, ca, at)));
    }
    facts.read = Ok(info.into());
    facts
}

/// Whether the CA in `ca` issued the chain `certs` (its own certificate first), at `at`;
/// `Err` is the reason the chain check shows.
fn verify_chain(certs: &[CertificateDer<'static>], ca: &Path, at: Timestamp) -> Result<(), String> {
    let roots = tls::read_roots(ca).map_err(|e| e.to_string())?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls::provider())
        .build()
        .map_err(|e| format!("cannot verify with {}: {e}", ca.display()))?;
    let Some((leaf, intermediates)) = certs.split_first() else { return Err("no certificate".into()) };
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.as_second().max(0).unsigned_abs()));
    // The name is not checked here (a certificate names the hosts its clients use, which the
    // manager does not know): a name mismatch means the chain itself verified.
    let name = ServerName::try_from("pgwarden.invalid").map_err(|e| e.to_string())?;
    match verifier.verify_server_cert(leaf, intermediates, &name, &[], at) {
        Ok(_) => Ok(()),
        Err(TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => Ok(()),
        Err(TlsError::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)) => {
            Err(format!("it was not issued by the CA in {}", ca.display()))
        }
        Err(TlsError::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        )) => Err("its extended key usage does not include server authentication".into()),
        Err(e) => Err(format!("its chain does not verify with the CA in {}: {e}", ca.display())),
    }
}

/// The check's name for `purpose`.
fn check_name(purpose: &str) -> &'static str {
    match purpose {
        tls::status::API => "api certificate",
        tls::status::API_CA => "api CA",
        tls::status::POSTGRES => "postgres certificate",
        tls::status::POSTGRES_CA => "postgres CA",
        _ => "certificate",
    }
}

/// The configuration field of `purpose`'s file.
fn field(purpose: &str) -> &'static str {
    match purpose {
        tls::status::API => "api.tls.certFile",
        tls::status::API_CA => "api.tls.caFile",
        tls::status::POSTGRES => "postgres.tls.certFile",
        tls::status::POSTGRES_CA => "postgres.tls.caFile",
        _ => "the certificate file",
    }
}

/// "3d 4h", "5h 12m", "40m".
fn span(d: SignedDuration) -> String {
    let minutes = d.as_secs().unsigned_abs() / 60;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes}m"),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// The verdict on one certificate at `now`.
pub fn certificate_check(c: &CertificateFacts, now: Timestamp) -> Check {
    let name = check_name(&c.purpose);
    let file = c.file.display();
    let v = match &c.read {
        Ok(v) => v,
        Err(e) => {
            let hint = format!("mount the Secret at {file} (kubectl describe pod), or fix {}", field(&c.purpose));
            return Check::fail(name, format!("cannot use {file}: {e}"), hint);
        }
    };
    if let Some(Err(e)) = &c.key {
        let key = c.key_file.as_deref().unwrap_or(Path::new("the key file")).display();
        let hint = format!(
            "put the key the certificate was issued for at {key} (the Secret's tls.key beside tls.crt); \
             until then the manager keeps the certificate it has"
        );
        return Check::fail(name, e.clone(), hint);
    }
    let left = now.duration_until(v.not_after);
    if left.is_negative() {
        return Check::fail(
            name,
            format!("{file} (serial {}) expired at {}, {} ago", v.serial, v.not_after, span(left)),
            "renew it (cert-manager: kubectl describe certificate; cmctl renew): clients refuse an expired certificate",
        );
    }
    if now < v.not_before {
        return Check::fail(
            name,
            format!("{file} (serial {}) is not valid before {}", v.serial, v.not_before),
            "clients refuse it until then: check the clocks of this node and of the issuer",
        );
    }
    if let Some((ca, Err(e))) = &c.chain {
        let hint = format!(
            "issue it from the CA in {} or point {}.tls.caFile at its issuer: peers and replicas verify it with that CA",
            ca.display(),
            c.purpose
        );
        return Check::fail(name, format!("{file} (serial {}) does not verify: {e}", v.serial), hint);
    }
    if v.serial != c.in_use_serial {
        let detail = format!("{file} holds serial {} but serial {} is in use", v.serial, c.in_use_serial);
        let hint = match (&c.last_reload_error, c.purpose.as_str()) {
            (Some(e), _) => format!("the manager refused the rotated files: {e}"),
            (None, tls::status::POSTGRES | tls::status::POSTGRES_CA) => {
                "the rotated files are copied for Postgres at the next configuration reload: if this stays, \
                 see the configuration check and the log"
                    .to_owned()
            }
            (None, _) => "a rotation is picked up within seconds: if this stays, read the log".to_owned(),
        };
        return Check::warn(name, detail, hint);
    }
    let detail = format!("{file} (serial {}) valid until {}, {} left", v.serial, v.not_after, span(left));
    if left < EXPIRY_WARN {
        let hint = "renew it now (cert-manager renews ahead of time: kubectl describe certificate says why it has not)";
        return Check::warn(name, detail, hint);
    }
    let verified = match &c.chain {
        Some((ca, _)) => format!("; issued by the CA in {}", ca.display()),
        None => String::new(),
    };
    Check::ok(name, format!("{detail}{verified}"))
}

#[cfg(test)]
#[path = "certificates_tests.rs"]
mod tests;
