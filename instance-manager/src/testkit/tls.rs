//! Certificates for TLS tests: a throw-away CA ([`TestCa`]) issuing server certificates for
//! `127.0.0.1`/`::1`/`localhost` and client certificates, and [`TlsFiles`] — a certificate,
//! key and CA laid out the way Kubernetes mounts a Secret (files that are symlinks through a
//! `..data` symlink), rotated the way Kubernetes does it: one atomic swap of `..data`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct CertKey {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey").finish_non_exhaustive()
    }
}

impl CertKey {
    /// Writes the certificate and the key (mode 0600) to two files.
    pub fn write(&self, cert: &Path, key: &Path) {
        crate::paths::write_atomic(cert, self.cert_pem.as_bytes(), 0o644).expect("write certificate");
        crate::paths::write_atomic(key, self.key_pem.as_bytes(), 0o600).expect("write key");
    }
}

/// A CA for one test.
pub struct TestCa {
    /// The CA certificate (PEM).
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A server certificate for `127.0.0.1`, `::1` and `localhost` (usable as a client
    /// certificate too, as cert-manager's `server auth, client auth` usages allow).
    pub fn server_cert(&self) -> CertKey {
        self.issue(
            "pgwarden test server",
            &["127.0.0.1", "::1", "localhost"],
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            None,
        )
    }

    /// A server certificate as [`server_cert`](Self::server_cert), but expired yesterday.
    pub fn expired_server_cert(&self) -> CertKey {
        let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
        let yesterday = today.yesterday().expect("a date");
        let last_week = today.checked_sub(jiff::Span::new().days(7)).expect("a date");
        self.issue(
            "pgwarden test server (expired)",
            &["127.0.0.1", "::1", "localhost"],
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            Some((last_week, yesterday)),
        )
    }

    /// A server certificate as [`server_cert`](Self::server_cert), valid from yesterday until
    /// midnight (UTC) `days` days from today.
    pub fn server_cert_valid_for(&self, days: i64) -> CertKey {
        let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
        let until = today.checked_add(jiff::Span::new().days(days)).expect("a date");
        self.issue(
            "pgwarden test server",
            &["127.0.0.1", "::1", "localhost"],
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Some((today.yesterday().expect("a date"), until)),
        )
    }

    /// A client certificate with common name `name`.
    pub fn client_cert(&self, name: &str) -> CertKey {
        self.issue(name, &[], vec![ExtendedKeyUsagePurpose::ClientAuth], None)
    }

    fn issue(
        &self,
        cn: &str,
        names: &[&str],
        usages: Vec<ExtendedKeyUsagePurpose>,
        validity: Option<(jiff::civil::Date, jiff::civil::Date)>,
    ) -> CertKey {
        static SERIAL: AtomicU32 = AtomicU32::new(1);
        let key = KeyPair::generate().expect("generate a key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = usages;
        // Distinct serials, so a test can tell a rotated certificate from the one before.
        let serial = u64::from(SERIAL.fetch_add(1, Ordering::Relaxed)) | (u64::from(std::process::id()) << 32);
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        if let Some((from, to)) = validity {
            let day = |d: jiff::civil::Date| {
                rcgen::date_time_ymd(i32::from(d.year()), d.month().unsigned_abs(), d.day().unsigned_abs())
            };
            params.not_before = day(from);
            params.not_after = day(to);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("sign a certificate");
        CertKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) {
        crate::paths::write_atomic(path, self.cert_pem.as_bytes(), 0o644).expect("write the CA certificate");
    }
}

/// `tls.crt`, `tls.key` and `ca.crt` in a directory, mounted the Kubernetes way.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The directory (the "volume").
    pub dir: PathBuf,
    /// `<dir>/tls.crt`.
    pub cert_file: PathBuf,
    /// `<dir>/tls.key`.
    pub key_file: PathBuf,
    /// `<dir>/ca.crt`.
    pub ca_file: PathBuf,
}

impl TlsFiles {
    /// Lays out `pair` and `ca` under `dir` (created): `..data` → a timestamped directory,
    /// `tls.crt` → `..data/tls.crt`, and so on.
    pub fn kubernetes(dir: &Path, pair: &CertKey, ca: &TestCa) -> Self {
        std::fs::create_dir_all(dir).expect("create the TLS directory");
        let files = Self {
            dir: dir.to_path_buf(),
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
            ca_file: dir.join("ca.crt"),
        };
        files.swap_in(pair, &ca.cert_pem);
        for name in ["tls.crt", "tls.key", "ca.crt"] {
            let link = dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link).expect("link a Secret file");
            }
        }
        files
    }

    /// Rotates to `pair` the way the kubelet does: a new timestamped directory, then one
    /// atomic rename of the `..data` symlink. The old directory is removed.
    pub fn rotate(&self, pair: &CertKey, ca: &TestCa) {
        self.swap_in(pair, &ca.cert_pem);
    }

    fn swap_in(&self, pair: &CertKey, ca_pem: &str) {
        static VERSION: AtomicU32 = AtomicU32::new(1);
        let version = format!("..{}_{}", std::process::id(), VERSION.fetch_add(1, Ordering::Relaxed));
        let target = self.dir.join(&version);
        std::fs::create_dir(&target).expect("create a Secret version");
        pair.write(&target.join("tls.crt"), &target.join("tls.key"));
        crate::paths::write_atomic(&target.join("ca.crt"), ca_pem.as_bytes(), 0o644).expect("write ca.crt");
        let data = self.dir.join("..data");
        let old = std::fs::read_link(&data).ok();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).expect("link the new version");
        std::fs::rename(&tmp, &data).expect("swap ..data");
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
    }
}

/// The serial number (hex) of the certificate served on `127.0.0.1:port`, verified with the
/// CA in `ca`. `postgres`: ask for TLS the Postgres way first (an `SSLRequest`).
pub async fn served_serial(port: u16, ca: &Path, postgres: bool) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = crate::tls::client_config(ca, None).map_err(|e| e.to_string())?;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    if postgres {
        // SSLRequest: length 8, code 80877103; the server answers 'S' when it speaks TLS.
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.map_err(|e| e.to_string())?;
        let answer = tcp.read_u8().await.map_err(|e| e.to_string())?;
        if answer != b'S' {
            return Err(format!("postgres answered {:?} to SSLRequest", char::from(answer)));
        }
    }
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(std::time::Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).ok_or("no certificate served")?;
    crate::tls::CertInfo::from_der(cert).map(|i| i.serial).ok_or_else(|| "the served certificate does not parse".into())
}

/// The `notAfter` of a PEM certificate.
pub fn not_after_of(cert_pem: &str) -> jiff::Timestamp {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("a PEM certificate");
    crate::tls::CertInfo::from_der(&der).expect("a certificate").not_after
}

/// The serial number (hex) of a PEM certificate.
pub fn serial_of(cert_pem: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("a PEM certificate");
    crate::tls::CertInfo::from_der(&der).expect("a certificate").serial
}
