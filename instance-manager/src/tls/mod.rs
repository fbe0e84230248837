//! TLS with rustls (ring provider): certificates and keys from PEM files (mounted Secrets),
//! the HTTP API's server side, the clients' side (CLI, peers), and tokio-postgres over TLS.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | this file | reading PEM files, [`server_config`] and [`client_config`], [`Error`] |
//! | [`x509`] | serial number and validity of a certificate |
//! | [`status`] | the certificates in use and their validity, for `/status` and the metrics |
//! | [`reload`] | [`ServerTls`]: the API's certificate, swapped without a restart when its files change |
//! | [`listener`] | [`TlsListener`]: the API's listener, TLS handshakes in each connection's task |
//! | [`postgres`] | [`postgres::MakeRustlsConnect`]: tokio-postgres over rustls |
//!
//! Every config is built with the ring provider explicitly, so the library works whether or
//! not `main` installed a process-wide default.

pub mod listener;
pub mod postgres;
pub mod reload;
pub mod status;
pub mod x509;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use listener::{TlsListener, TlsPeer};
pub use reload::{ServerTls, watch_server_tls};
pub use x509::CertInfo;

use crate::api::ClientAuth;

/// Errors reading TLS material or building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM object of the kind expected.
    #[error("{path} holds no PEM {what}{detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// What the PEM parser said, `: ...`, or empty.
        detail: String,
    },
    /// The key is not one rustls can sign with (ring: RSA, ECDSA P-256/P-384, Ed25519).
    #[error("the private key in {path} is not usable: {detail}")]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The key does not belong to the certificate.
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A CA file holds a certificate that cannot be a trust anchor.
    #[error("{path} holds a certificate that cannot be used as a CA: {detail}")]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// The ring provider, the one crypto provider pgwarden uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })
}

/// The certificate chain in a PEM file, the server's (or client's) own certificate first.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| Error::Pem {
        path: path.to_path_buf(),
        what: "certificate",
        detail: format!(": {e}"),
    })?;
    if certs.is_empty() {
        return Err(Error::Pem { path: path.to_path_buf(), what: "certificate", detail: String::new() });
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let detail = match e {
            rustls::pki_types::pem::Error::NoItemsFound => String::new(),
            e => format!(": {e}"),
        };
        Error::Pem { path: path.to_path_buf(), what: "private key", detail }
    })
}

/// The trust anchors in a CA file (one or more PEM certificates).
pub fn read_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| Error::BadCa { path: path.to_path_buf(), detail: e.to_string() })?;
    }
    Ok(roots)
}

/// The certificate chain of `cert` with the key of `key`, refused when they do not belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let chain = read_certs(cert)?;
    let der = read_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| Error::UnusableKey { path: key.to_path_buf(), detail: e.to_string() })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        // rustls could not derive the public key from this kind of key: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(_) => Err(Error::KeyMismatch { cert: cert.to_path_buf(), key: key.to_path_buf() }),
    }
}

/// What the certificate at the head of `certified` says about itself.
pub fn info(certified: &CertifiedKey) -> Option<CertInfo> {
    certified.cert.first().and_then(|c| CertInfo::from_der(c))
}

/// The API's server configuration: the certificate from `resolver`, client certificates
/// verified against `ca` when `client_auth` asks for them.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    ca: Option<&Path>,
    client_auth: ClientAuth,
) -> Result<ServerConfig> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?;
    let builder = match (client_auth, ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => return Err(Error::Config("client certificate authentication needs a CA file".into())),
        (mode, Some(ca)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider);
            let verifier = if mode == ClientAuth::Optional { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| Error::Config(e.to_string()))?)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration trusting the CA in `ca` only, presenting `identity` (certificate
/// and key files) when the server asks for a client certificate.
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_root_certificates(read_roots(ca)?);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certified = certified_key(cert, key)?;
            builder.with_client_auth_cert(certified.cert, read_key(key)?).map_err(|e| Error::Config(e.to_string()))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Logs a warning when the certificate of `field` has expired (or is not valid yet): the
/// files are used anyway, the way Postgres and clients that do not check time would.
pub fn warn_if_expired(field: &str, certified: &CertifiedKey) {
    let Some(info) = info(certified) else { return };
    let now = jiff::Timestamp::now();
    if info.expired_at(now) {
        tracing::warn!(field, serial = %info.serial, not_after = %info.not_after, "the certificate has expired; clients will refuse it");
    } else if now < info.not_before {
        tracing::warn!(field, serial = %info.serial, not_before = %info.not_before, "the certificate is not valid yet");
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests;
