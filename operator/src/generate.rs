//! What the builders must not do: randomness and the clock. Passwords and the API token are 32
//! random alphanumeric characters (no character a URI or a pgpass line would need to escape);
//! the CA lives ten years, the server certificate [`SERVER_VALIDITY_DAYS`] and is renewed once
//! fewer than [`RENEW_BEFORE_DAYS`] remain (docs/operator.md).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::build::secrets::{Generated, TlsMaterial};
use crate::names::Names;

/// How long an operator-made server certificate is valid.
pub const SERVER_VALIDITY_DAYS: i64 = 90;
/// Renew the server certificate when fewer days remain.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// How long the operator's CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;

/// Why material could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The system's random source failed.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// A certificate could not be made or the stored CA could not be read.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A date out of range.
    #[error("certificate validity: {0}")]
    Date(String),
}

/// 32 random characters from `[A-Za-z0-9]`.
pub fn password() -> Result<String, GenerateError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(32);
    while out.len() < 32 {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf).map_err(|e| GenerateError::Random(e.to_string()))?;
        // 62 × 4 = 248: bytes at or above it are dropped, so every character is equally likely.
        out.extend(
            buf.iter().filter(|b| **b < 248).map(|b| ALPHABET[usize::from(*b % 62)] as char).take(32 - out.len()),
        );
    }
    Ok(out)
}

/// Fresh passwords, token, CA and server certificate for `names`, valid from `now`.
pub fn generate(names: &Names, now: jiff::Timestamp) -> Result<Generated, GenerateError> {
    let ca_key = KeyPair::generate()?;
    let ca_params = ca_params(names, now)?;
    let ca_cert = ca_params.self_signed(&ca_key)?.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let tls = server_material(names, now, &ca_cert, &ca_key_pem)?;
    Ok(Generated {
        superuser_password: password()?,
        app_password: password()?,
        replication_password: password()?,
        api_token: password()?,
        tls,
    })
}

/// Midnight UTC of `t`'s day, as rcgen takes it.
macro_rules! rcgen_date {
    ($t:expr) => {{
        let d = $t.to_zoned(jiff::tz::TimeZone::UTC).date();
        rcgen::date_time_ymd(i32::from(d.year()), d.month().unsigned_abs(), d.day().unsigned_abs())
    }};
}

fn plus_days(t: jiff::Timestamp, days: i64) -> Result<jiff::Timestamp, GenerateError> {
    t.checked_add(jiff::SignedDuration::from_hours(days * 24)).map_err(|e| GenerateError::Date(e.to_string()))
}

fn ca_params(names: &Names, now: jiff::Timestamp) -> Result<CertificateParams, GenerateError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.distinguished_name.push(DnType::CommonName, format!("pgwarden {}/{} CA", names.namespace, names.cluster));
    p.not_before = rcgen_date!(plus_days(now, -1)?);
    p.not_after = rcgen_date!(plus_days(now, CA_VALIDITY_DAYS)?);
    Ok(p)
}

/// A new server certificate signed by the stored CA (`ca_cert`, `ca_key`, PEM): at creation,
/// and at renewal. It names every Service and `*.<cluster>-headless.<namespace>.svc`, and serves
/// as a client certificate too (replication connections present it).
pub fn server_material(
    names: &Names,
    now: jiff::Timestamp,
    ca_cert: &str,
    ca_key: &str,
) -> Result<TlsMaterial, GenerateError> {
    let issuer = Issuer::from_ca_cert_pem(ca_cert, KeyPair::from_pem(ca_key)?)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(names.server_dns_names())?;
    p.distinguished_name.push(DnType::CommonName, names.rw());
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let not_after = plus_days(now, SERVER_VALIDITY_DAYS)?;
    p.not_before = rcgen_date!(plus_days(now, -1)?);
    p.not_after = rcgen_date!(not_after);
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(|e| GenerateError::Random(e.to_string()))?;
    serial[0] &= 0x7f;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = p.signed_by(&key, &issuer)?;
    // rcgen's not_after is midnight UTC of that day; say so exactly.
    let day = not_after.to_zoned(jiff::tz::TimeZone::UTC).date();
    Ok(TlsMaterial {
        ca_cert: ca_cert.to_owned(),
        ca_key: ca_key.to_owned(),
        server_cert: cert.pem(),
        server_key: key.serialize_pem(),
        server_not_after: format!("{day}T00:00:00Z"),
    })
}

/// Whether a certificate that expires at `not_after` (RFC 3339) must be renewed at `now`. An
/// unreadable date is renewed.
pub fn needs_renewal(not_after: Option<&str>, now: jiff::Timestamp) -> bool {
    let Some(t) = not_after.and_then(|s| s.parse::<jiff::Timestamp>().ok()) else { return true };
    plus_days(now, RENEW_BEFORE_DAYS).is_ok_and(|limit| t <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_safe_in_a_uri() {
        let a = password().expect("a password");
        let b = password().expect("a password");
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
    }

    #[test]
    fn renewal_starts_thirty_days_before_expiry() {
        let now: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().expect("a time");
        assert!(!needs_renewal(Some("2027-03-01T00:00:00Z"), now));
        assert!(needs_renewal(Some("2026-12-20T00:00:00Z"), now));
        assert!(needs_renewal(Some("garbage"), now));
        assert!(needs_renewal(None, now));
    }

    #[test]
    fn the_server_certificate_is_signed_by_the_ca_and_names_the_services() {
        let names = Names::new("pg", "db");
        let now = jiff::Timestamp::now();
        let g = generate(&names, now).expect("material");
        assert!(g.tls.server_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        // Renewal with the stored CA gives a different certificate from the same CA.
        let renewed = server_material(&names, now, &g.tls.ca_cert, &g.tls.ca_key).expect("renewed");
        assert_ne!(renewed.server_cert, g.tls.server_cert);
        assert_eq!(renewed.ca_cert, g.tls.ca_cert);
        assert!(!needs_renewal(Some(&renewed.server_not_after), now));
    }
}
