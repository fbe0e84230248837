use super::*;
use crate::cli::diagnose::Outcome;

const DAY: SignedDuration = SignedDuration::from_hours(24);

fn now() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

/// A good API certificate with 60 days left, as `diagnose` would read it.
fn fine() -> CertificateFacts {
    CertificateFacts {
        purpose: "api".into(),
        file: "/etc/pgwarden/tls/tls.crt".into(),
        key_file: Some("/etc/pgwarden/tls/tls.key".into()),
        read: Ok(Validity { serial: "2a".into(), not_before: now() - 30 * DAY, not_after: now() + 60 * DAY }),
        key: Some(Ok(())),
        chain: Some(("/etc/pgwarden/tls/ca.crt".into(), Ok(()))),
        in_use_serial: "2a".into(),
        last_reload_error: None,
    }
}

fn expiring_in(left: SignedDuration) -> CertificateFacts {
    let mut c = fine();
    if let Ok(v) = &mut c.read {
        v.not_after = now() + left;
    }
    c
}

#[test]
fn a_valid_matching_certificate_issued_by_its_ca_is_ok() {
    let check = certificate_check(&fine(), now());
    assert_eq!((check.name, check.outcome, check.hint.as_deref()), ("api certificate", Outcome::Ok, None));
    assert_eq!(
        check.detail,
        "/etc/pgwarden/tls/tls.crt (serial 2a) valid until 2026-04-30T12:00:00Z, 60d 0h left; \
         issued by the CA in /etc/pgwarden/tls/ca.crt"
    );
}

#[test]
fn expiring_within_a_week_warns() {
    let check = certificate_check(&expiring_in(3 * DAY + SignedDuration::from_hours(4)), now());
    assert_eq!(check.outcome, Outcome::Warn, "{check:?}");
    assert!(check.detail.ends_with("3d 4h left"), "{check:?}");
    assert!(check.hint.as_deref().is_some_and(|h| h.starts_with("renew it now")), "{check:?}");
    let a_minute = SignedDuration::from_mins(1);
    assert_eq!(certificate_check(&expiring_in(EXPIRY_WARN - a_minute), now()).outcome, Outcome::Warn);
    assert_eq!(certificate_check(&expiring_in(EXPIRY_WARN + a_minute), now()).outcome, Outcome::Ok);
    assert_eq!(
        certificate_check(&expiring_in(SignedDuration::from_mins(40)), now()).detail.split(", ").last(),
        Some("40m left")
    );
}

#[test]
fn an_expired_or_not_yet_valid_certificate_fails() {
    let check = certificate_check(&expiring_in(-SignedDuration::from_hours(2)), now());
    assert_eq!(check.outcome, Outcome::Fail, "{check:?}");
    assert_eq!(check.detail, "/etc/pgwarden/tls/tls.crt (serial 2a) expired at 2026-03-01T10:00:00Z, 2h 0m ago");
    assert!(check.hint.as_deref().is_some_and(|h| h.contains("cmctl renew")), "{check:?}");
    let mut early = fine();
    if let Ok(v) = &mut early.read {
        v.not_before = now() + DAY;
    }
    let check = certificate_check(&early, now());
    assert_eq!(check.outcome, Outcome::Fail, "{check:?}");
    assert!(check.detail.contains("is not valid before 2026-03-02T12:00:00Z"), "{check:?}");
}

#[test]
fn a_key_that_does_not_match_fails_naming_both_files() {
    let mut c = fine();
    c.key = Some(Err("the private key in /etc/pgwarden/tls/tls.key does not match the certificate in \
                      /etc/pgwarden/tls/tls.crt"
        .into()));
    let check = certificate_check(&c, now());
    assert_eq!(check.outcome, Outcome::Fail);
    assert!(check.detail.contains("does not match the certificate in /etc/pgwarden/tls/tls.crt"), "{check:?}");
    assert!(check.hint.as_deref().is_some_and(|h| h.contains("at /etc/pgwarden/tls/tls.key")), "{check:?}");
    // A mismatch is the first thing to fix even when the certificate has also expired.
    c.read = expiring_in(-DAY).read;
    assert!(certificate_check(&c, now()).detail.contains("does not match"));
}

#[test]
fn an_unreadable_file_fails_naming_the_file_and_the_setting() {
    let mut c = fine();
    c.purpose = "postgres_ca".into();
    c.read = Err("cannot read /etc/pgwarden/pg/ca.crt: No such file or directory (os error 2)".into());
    let check = certificate_check(&c, now());
    assert_eq!((check.name, check.outcome), ("postgres CA", Outcome::Fail));
    assert!(check.detail.starts_with("cannot use /etc/pgwarden/tls/tls.crt: cannot read"), "{check:?}");
    assert!(check.hint.as_deref().is_some_and(|h| h.ends_with("or fix postgres.tls.caFile")), "{check:?}");
}

#[test]
fn a_certificate_of_another_ca_fails() {
    let mut c = fine();
    c.purpose = "postgres".into();
    c.chain =
        Some(("/etc/pgwarden/pg/ca.crt".into(), Err("it was not issued by the CA in /etc/pgwarden/pg/ca.crt".into())));
    let check = certificate_check(&c, now());
    assert_eq!((check.name, check.outcome), ("postgres certificate", Outcome::Fail));
    assert!(check.detail.ends_with("does not verify: it was not issued by the CA in /etc/pgwarden/pg/ca.crt"));
    assert!(check.hint.as_deref().is_some_and(|h| h.contains("postgres.tls.caFile")), "{check:?}");
}

#[test]
fn a_file_other_than_the_one_in_use_warns_with_the_refusal() {
    let mut c = fine();
    c.in_use_serial = "1f".into();
    let check = certificate_check(&c, now());
    assert_eq!(check.outcome, Outcome::Warn);
    assert_eq!(check.detail, "/etc/pgwarden/tls/tls.crt holds serial 2a but serial 1f is in use");
    assert!(check.hint.as_deref().is_some_and(|h| h.contains("picked up within seconds")), "{check:?}");
    c.last_reload_error = Some("the private key in k does not match the certificate in c".into());
    let hint = certificate_check(&c, now()).hint.unwrap();
    assert_eq!(hint, "the manager refused the rotated files: the private key in k does not match the certificate in c");
}

#[test]
fn certificate_checks_join_the_others() {
    use crate::cli::status::tests::primary_status;
    let status = primary_status();
    let mut facts = crate::cli::diagnose::Facts {
        api_target: "unix:///run/pgwarden/manager.sock".into(),
        status: Ok(status),
        readyz: Some(200),
        data_dir: None,
        disk: None,
        wal_disk: None,
        certificates: vec![fine(), expiring_in(-DAY)],
        now: now(),
    };
    let checks = crate::cli::diagnose::evaluate_checks(&facts);
    let verdicts: Vec<_> = checks.iter().filter(|c| c.name == "api certificate").map(|c| c.outcome).collect();
    assert_eq!(verdicts, [Outcome::Ok, Outcome::Fail]);
    assert_eq!(crate::cli::CheckResult::from(checks).exit_code(), 1);
    facts.certificates.truncate(1);
    let checks = crate::cli::diagnose::evaluate_checks(&facts);
    assert!(checks.iter().filter(|c| c.name.contains("certificate")).all(|c| c.outcome == Outcome::Ok));
}

/// [`gather`] over real files from a test CA.
#[cfg(feature = "testkit")]
mod files {
    use super::*;
    use crate::testkit::{CertKey, TestCa};

    struct Layout {
        dir: tempfile::TempDir,
        in_use: BTreeMap<String, CertificateStatus>,
    }

    /// `pair` as the Postgres certificate in use and `ca` as its CA, written under a temp dir.
    fn layout(pair: &CertKey, ca: &TestCa) -> Layout {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("ca.crt"));
        pair.write(&cert, &key);
        ca.write(&ca_file);
        let chain = tls::read_certs(&cert).unwrap();
        let mut in_use = BTreeMap::new();
        in_use.insert("postgres".into(), tls::status::server_certificate(&chain, &cert, &key).unwrap());
        let roots = tls::read_certs(&ca_file).unwrap();
        in_use.insert("postgres_ca".into(), tls::status::ca_certificate(&roots, &ca_file).unwrap());
        Layout { dir, in_use }
    }

    fn verdicts(l: &Layout) -> Vec<Check> {
        let now = Timestamp::now();
        gather(&l.in_use, now).iter().map(|c| certificate_check(c, now)).collect()
    }

    #[test]
    fn a_good_pair_and_its_ca_pass() {
        let ca = TestCa::new("diagnose CA");
        let l = layout(&ca.server_cert_valid_for(90), &ca);
        let checks = verdicts(&l);
        let names: Vec<_> = checks.iter().map(|c| (c.name, c.outcome)).collect();
        assert_eq!(names, [("postgres certificate", Outcome::Ok), ("postgres CA", Outcome::Ok)], "{checks:#?}");
        assert!(checks[0].detail.contains("issued by the CA in"), "{checks:#?}");
    }

    #[test]
    fn a_wrong_key_a_stranger_ca_and_expiry_are_found() {
        let ca = TestCa::new("diagnose CA");
        let l = layout(&ca.server_cert(), &ca);
        let other = ca.server_cert();
        std::fs::write(l.dir.path().join("tls.key"), &other.key_pem).unwrap();
        let checks = verdicts(&l);
        assert_eq!(checks[0].outcome, Outcome::Fail, "{checks:#?}");
        assert!(checks[0].detail.contains("does not match the certificate in"), "{checks:#?}");

        let stranger = TestCa::new("somebody else's CA");
        let l = layout(&stranger.server_cert(), &ca);
        let check = &verdicts(&l)[0];
        assert_eq!(check.outcome, Outcome::Fail, "{check:#?}");
        assert!(check.detail.contains("does not verify: it was not issued by the CA in"), "{check:#?}");

        // Expired, but issued by the CA: the expiry is the verdict, not the chain.
        let l = layout(&ca.expired_server_cert(), &ca);
        let facts = gather(&l.in_use, Timestamp::now());
        assert_eq!(facts[0].chain.as_ref().map(|c| c.1.clone()), Some(Ok(())), "{facts:#?}");
        let check = certificate_check(&facts[0], Timestamp::now());
        assert!(check.outcome == Outcome::Fail && check.detail.contains("expired at"), "{check:#?}");

        std::fs::remove_file(l.dir.path().join("tls.crt")).unwrap();
        let check = &verdicts(&l)[0];
        assert_eq!(check.outcome, Outcome::Fail, "{check:#?}");
        assert!(check.detail.contains("cannot read"), "{check:#?}");
    }

    #[test]
    fn a_rotation_soon_to_expire_warns() {
        let ca = TestCa::new("diagnose CA");
        let l = layout(&ca.server_cert_valid_for(3), &ca);
        let check = &verdicts(&l)[0];
        assert_eq!(check.outcome, Outcome::Warn, "{check:#?}");
        assert!(check.detail.contains("left"), "{check:#?}");
    }
}
