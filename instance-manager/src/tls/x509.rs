//! The few fields of an X.509 certificate pgwarden reads itself: the serial number (logged
//! when a rotated certificate is taken into use) and the validity period (an expired
//! certificate is reported). A minimal DER walk over the fixed start of `TBSCertificate`
//! (RFC 5280 §4.1), so no ASN.1 library is linked into the manager for two fields.

use jiff::Timestamp;

/// What pgwarden reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number as lower-case hex, without leading zero bytes.
    pub serial: String,
    /// Not valid before.
    pub not_before: Timestamp,
    /// Not valid after.
    pub not_after: Timestamp,
}

impl CertInfo {
    /// Reads a DER certificate; `None` when it is not one.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (cert, _) = element(der, SEQUENCE)?;
        let (tbs, _) = element(cert, SEQUENCE)?;
        // version [0] EXPLICIT is optional (absent for v1).
        let rest = match element(tbs, 0xA0) {
            Some((_, rest)) => rest,
            None => tbs,
        };
        let (serial, rest) = element(rest, INTEGER)?;
        let (_signature, rest) = element(rest, SEQUENCE)?;
        let (_issuer, rest) = element(rest, SEQUENCE)?;
        let (validity, _) = element(rest, SEQUENCE)?;
        let (not_before, rest) = time(validity)?;
        let (not_after, _) = time(rest)?;
        let trimmed = match serial.iter().position(|b| *b != 0) {
            Some(i) => &serial[i..],
            None => &serial[serial.len().saturating_sub(1)..],
        };
        let serial = trimmed.iter().map(|b| format!("{b:02x}")).collect();
        Some(Self { serial, not_before, not_after })
    }

    /// Whether the certificate is past its `notAfter` at `now`.
    pub fn expired_at(&self, now: Timestamp) -> bool {
        now > self.not_after
    }
}

const INTEGER: u8 = 0x02;
const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element with tag `tag` at the start of `input`: its content and what follows.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A `Time` (UTCTime or GeneralizedTime, always UTC in certificates) and what follows.
fn time(input: &[u8]) -> Option<(Timestamp, &[u8])> {
    let (tag, digits_len) = match *input.first()? {
        UTC_TIME => (UTC_TIME, 12),
        GENERALIZED_TIME => (GENERALIZED_TIME, 14),
        _ => return None,
    };
    let (content, rest) = element(input, tag)?;
    let text = std::str::from_utf8(content).ok()?;
    let digits = text.strip_suffix('Z')?;
    if digits.len() != digits_len || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| digits[range].parse::<i16>().ok();
    let (year, off) = if tag == UTC_TIME {
        // RFC 5280: YY >= 50 is 19YY, else 20YY.
        let yy = num(0..2)?;
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
    } else {
        (num(0..4)?, 4)
    };
    let field = |i: usize| num(off + 2 * i..off + 2 * i + 2).and_then(|v| i8::try_from(v).ok());
    let dt = jiff::civil::DateTime::new(year, field(0)?, field(1)?, field(2)?, field(3)?, field(4)?, 0).ok()?;
    let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some((ts, rest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_times_in_both_forms() {
        let utc = [&[UTC_TIME, 13][..], b"491231235959Z"].concat();
        let (t, rest) = time(&utc).unwrap();
        assert_eq!(t.to_string(), "2049-12-31T23:59:59Z");
        assert!(rest.is_empty());
        let old = [&[UTC_TIME, 13][..], b"990101000000Z"].concat();
        assert_eq!(time(&old).unwrap().0.to_string(), "1999-01-01T00:00:00Z");
        let gen_time = [&[GENERALIZED_TIME, 15][..], b"20991231235959Z"].concat();
        assert_eq!(time(&gen_time).unwrap().0.to_string(), "2099-12-31T23:59:59Z");
        let local = [&[UTC_TIME, 12][..], b"491231235959"].concat();
        assert!(time(&local).is_none(), "a time without Z is refused");
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        assert!(CertInfo::from_der(b"").is_none());
        assert!(CertInfo::from_der(b"-----BEGIN CERTIFICATE-----").is_none());
        assert!(CertInfo::from_der(&[SEQUENCE, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(CertInfo::from_der(&[SEQUENCE, 0x80]).is_none());
    }
}
