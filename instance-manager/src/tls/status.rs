//! The certificates in use and how long they stay valid, for `/status` (`tls`) and the
//! metrics (`pgwarden_tls_certificate_*`), so that an expiry is seen before clients refuse
//! the certificate.
//!
//! - The API's certificate and client CA are the ones [`ServerTls`](super::ServerTls) holds:
//!   after a rotation, the new ones. [`ReloadCounts`] counts its rotations and refusals.
//! - Postgres' are the copies in `<runDir>/tls/` it was last given: Postgres reads them at its
//!   start and at every reload, and a rotated pair is copied only when the configuration
//!   (which checks that the key matches) is accepted. Reading two small files is all a
//!   scrape or `/status` costs.
//!
//! A CA file may hold several certificates (a CA being rolled over): it is reported by the one
//! that expires first.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use rustls::pki_types::CertificateDer;

use super::{CertInfo, Error, read_certs};
use crate::api::{CertificateStatus, PostgresTlsSpec};
use crate::paths::Paths;

/// The API's server certificate.
pub const API: &str = "api";
/// The API's CA (`api.tls.caFile`).
pub const API_CA: &str = "api_ca";
/// Postgres' server certificate.
pub const POSTGRES: &str = "postgres";
/// Postgres' CA (`postgres.tls.caFile`).
pub const POSTGRES_CA: &str = "postgres_ca";

/// Rotations of one file taken into use or refused, since the manager started.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    reloads: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ReloadCounts {
    /// The files loaded: a rotation taken into use when `rotated`, else the same contents as
    /// before (a refused rotation undone). Either way no refusal stands any more.
    pub fn loaded(&self, rotated: bool) {
        if rotated {
            self.reloads.fetch_add(1, Ordering::Relaxed);
        }
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// A rotated file was refused; the previous one stays in use.
    pub fn refused(&self, e: &Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
    }

    /// `status` with these counts.
    pub fn stamp(&self, mut status: CertificateStatus) -> CertificateStatus {
        status.reloads_total = Some(self.reloads.load(Ordering::Relaxed));
        status.reload_failures_total = Some(self.failures.load(Ordering::Relaxed));
        status.last_reload_error = self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
        status
    }
}

/// The server certificate at the head of `chain`, read from `file` with its key `key_file`;
/// `None` when it does not parse.
pub fn server_certificate(chain: &[CertificateDer<'_>], file: &Path, key_file: &Path) -> Option<CertificateStatus> {
    let info = CertInfo::from_der(chain.first()?)?;
    Some(CertificateStatus { key_file: Some(key_file.display().to_string()), ..describe(info, file) })
}

/// The certificate of the CA file `file` that expires first; `None` when none parses.
pub fn ca_certificate(certs: &[CertificateDer<'_>], file: &Path) -> Option<CertificateStatus> {
    let first_to_expire = certs.iter().filter_map(|c| CertInfo::from_der(c)).min_by_key(|i| i.not_after)?;
    Some(describe(first_to_expire, file))
}

fn describe(info: CertInfo, file: &Path) -> CertificateStatus {
    CertificateStatus {
        file: file.display().to_string(),
        key_file: None,
        serial: info.serial,
        not_before: info.not_before,
        not_after: info.not_after,
        reloads_total: None,
        reload_failures_total: None,
        last_reload_error: None,
    }
}

/// Postgres' certificate and CA as it was last given them (their copies under `paths`),
/// named by the configured files of `spec`. Empty before the first copy.
pub fn postgres(spec: &PostgresTlsSpec, paths: &Paths) -> BTreeMap<String, CertificateStatus> {
    let mut out = BTreeMap::new();
    let cert = read_certs(&paths.ssl_cert_file()).ok();
    if let Some(s) = cert.and_then(|chain| server_certificate(&chain, &spec.cert_file, &spec.key_file)) {
        out.insert(POSTGRES.to_owned(), s);
    }
    if let Some(ca) = &spec.ca_file {
        let certs = read_certs(&paths.ssl_ca_file()).ok();
        if let Some(s) = certs.and_then(|certs| ca_certificate(&certs, ca)) {
            out.insert(POSTGRES_CA.to_owned(), s);
        }
    }
    out
}
