//! The HTTP API's TLS state, rotated without a restart.
//!
//! The certificate and key are served through a [`ResolvesServerCert`] that holds an
//! `Arc<CertifiedKey>`; a rotation swaps that `Arc`, so connections already open keep the
//! certificate they were made with and every new handshake gets the new one. The client CA
//! lives in the verifier of the `ServerConfig`, so a changed CA file swaps the whole config
//! (which shares the same resolver). A pair that does not load (unreadable, a key that does
//! not match the certificate — typically a rotation caught between its two files) is refused
//! with a log line and the previous one stays in use. Both are counted (see
//! [`ServerTls::in_use`]).

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::mpsc;

use super::status::{self, ReloadCounts};
use super::{Error, certified_key, info, server_config, warn_if_expired};
use crate::api::{ApiTlsSpec, CertificateStatus};

/// The server certificate in use: swapped whole when its files change.
#[derive(Debug)]
struct SwappableCert(RwLock<Arc<CertifiedKey>>);

impl SwappableCert {
    fn get(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn set(&self, new: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = new;
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The API's TLS configuration and the files it comes from.
#[derive(Debug)]
pub struct ServerTls {
    spec: ApiTlsSpec,
    cert: Arc<SwappableCert>,
    config: RwLock<Arc<ServerConfig>>,
    ca_pem: RwLock<Option<Vec<u8>>>,
    cert_reloads: ReloadCounts,
    ca_reloads: ReloadCounts,
}

impl ServerTls {
    /// Loads the certificate, key and CA named by `spec`.
    pub fn load(spec: &ApiTlsSpec) -> Result<Self, Error> {
        let certified = certified_key(&spec.cert_file, &spec.key_file)?;
        warn_if_expired("api.tls.certFile", &certified);
        let cert = Arc::new(SwappableCert(RwLock::new(Arc::new(certified))));
        let resolver: Arc<dyn ResolvesServerCert> = Arc::clone(&cert) as _;
        let config = server_config(resolver, spec.ca_file.as_deref(), spec.client_auth)?;
        let ca_pem = spec.ca_file.as_ref().and_then(|f| std::fs::read(f).ok());
        Ok(Self {
            spec: spec.clone(),
            cert,
            config: RwLock::new(Arc::new(config)),
            ca_pem: RwLock::new(ca_pem),
            cert_reloads: ReloadCounts::default(),
            ca_reloads: ReloadCounts::default(),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The certificate served to the next handshake.
    pub fn certificate(&self) -> Arc<CertifiedKey> {
        self.cert.get()
    }

    /// The certificate and CA in use (`api`, `api_ca`), with their rotations so far.
    pub fn in_use(&self) -> Vec<(&'static str, CertificateStatus)> {
        let mut out = Vec::new();
        let cert = status::server_certificate(&self.certificate().cert, &self.spec.cert_file, &self.spec.key_file);
        out.extend(cert.map(|s| (status::API, self.cert_reloads.stamp(s))));
        let ca_pem = self.ca_pem.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let (Some(file), Some(pem)) = (&self.spec.ca_file, ca_pem) {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
            let ca = status::ca_certificate(&certs, file);
            out.extend(ca.map(|s| (status::API_CA, self.ca_reloads.stamp(s))));
        }
        out
    }

    /// The files to watch.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.spec.cert_file.clone(), self.spec.key_file.clone()];
        files.extend(self.spec.ca_file.clone());
        files
    }

    /// Reads the files again. A new certificate is used for new connections; a pair that
    /// does not load keeps the current one (logged, and returned as the error).
    pub fn reload(&self) -> Result<(), Error> {
        let new = match certified_key(&self.spec.cert_file, &self.spec.key_file) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "the rotated API certificate is refused; keeping the current one");
                self.cert_reloads.refused(&e);
                return Err(e);
            }
        };
        let old = self.cert.get();
        let rotated = old.cert != new.cert;
        if rotated {
            warn_if_expired("api.tls.certFile", &new);
            let serial = |c: &CertifiedKey| info(c).map(|i| i.serial).unwrap_or_default();
            tracing::info!(old_serial = %serial(&old), new_serial = %serial(&new), "API certificate rotated");
            self.cert.set(Arc::new(new));
        }
        self.cert_reloads.loaded(rotated);
        self.reload_ca()
    }

    fn reload_ca(&self) -> Result<(), Error> {
        let Some(ca) = &self.spec.ca_file else { return Ok(()) };
        let pem = std::fs::read(ca).ok();
        if pem.is_none() {
            return Ok(());
        }
        if *self.ca_pem.read().unwrap_or_else(PoisonError::into_inner) == pem {
            self.ca_reloads.loaded(false);
            return Ok(());
        }
        let resolver: Arc<dyn ResolvesServerCert> = Arc::clone(&self.cert) as _;
        match server_config(resolver, Some(ca), self.spec.client_auth) {
            Ok(config) => {
                *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
                *self.ca_pem.write().unwrap_or_else(PoisonError::into_inner) = pem;
                tracing::info!(ca_file = %ca.display(), "API client CA reloaded");
                self.ca_reloads.loaded(true);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "the rotated API client CA is refused; keeping the current one");
                self.ca_reloads.refused(&e);
                Err(e)
            }
        }
    }
}

/// Watches the directories of `tls`'s files (Kubernetes swaps a `..data` symlink in a
/// mounted Secret) and reloads on every change, for as long as the process runs.
pub fn watch_server_tls(tls: Arc<ServerTls>, tasks: &crate::tasks::Tasks) {
    let (tx, mut rx) = mpsc::channel(1);
    let watch = match crate::config::watch_files(&tls.files(), tx) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the API certificate files; a rotation needs a restart");
            return;
        }
    };
    tasks.spawn("api certificate watch", async move {
        let _watch = watch;
        while rx.recv().await.is_some() {
            let _ = tls.reload();
        }
    });
}
