//! Certificates and keys made with rcgen (ECDSA through ring; RSA keys made with the `rsa`
//! crate, since ring cannot generate them, and signed by ring).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64ct::{Base64, Encoding};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SignatureAlgorithm,
    date_time_ymd,
};

use super::*;

/// PEM text of `der` under `label`, 64 characters a line.
fn pem(label: &str, der: &[u8]) -> String {
    let body = Base64::encode_string(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn at(y: i32, m: u8, d: u8) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(date_time_ymd(y, m, d).unix_timestamp() as u64)
}

/// Valid 2025-01-01 to 2030-01-01.
fn params(names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.not_before = date_time_ymd(2025, 1, 1);
    params.not_after = date_time_ymd(2030, 1, 1);
    params
}

/// A self-signed certificate for `names` and its PKCS#8 key, both PEM.
fn self_signed(alg: &'static SignatureAlgorithm, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate_for(alg).unwrap();
    let cert = params(names).self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The SEC1 (`EC PRIVATE KEY`) form of a PKCS#8 EC key.
fn sec1_of(pkcs8_pem: &str) -> String {
    let block = &blocks(pkcs8_pem.as_bytes(), Part::Key).unwrap()[0];
    let info = pkcs8::PrivateKeyInfo::from_der(&block.der).unwrap();
    pem("EC PRIVATE KEY", info.private_key)
}

/// The `now` of the checks: within the validity of [`params`].
fn now() -> SystemTime {
    at(2026, 6, 1)
}

#[test]
fn a_p256_certificate_and_its_key_pass_every_check() {
    let (cert, key) = self_signed(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &["example.com", "www.example.com"],
    );
    let facts = check(
        cert.as_bytes(),
        key.as_bytes(),
        &["example.com", "WWW.example.com."],
        now(),
    )
    .unwrap();
    assert_eq!(facts.names, ["example.com", "www.example.com"]);
    assert_eq!(facts.not_after, at(2030, 1, 1));
    assert_eq!(read_cert(cert.as_bytes()).unwrap(), facts);
    key_matches(cert.as_bytes(), key.as_bytes()).unwrap();
    // The SEC1 form, alone and after OpenSSL's `EC PARAMETERS` block.
    let sec1 = sec1_of(&key);
    key_matches(cert.as_bytes(), sec1.as_bytes()).unwrap();
    let params = pem(
        "EC PARAMETERS",
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
    );
    key_matches(cert.as_bytes(), format!("{params}{sec1}").as_bytes()).unwrap();
}

#[test]
fn a_p384_certificate_and_its_key_match_and_another_curve_does_not() {
    let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384, &["example.com"]);
    key_matches(cert.as_bytes(), key.as_bytes()).unwrap();
    key_matches(cert.as_bytes(), sec1_of(&key).as_bytes()).unwrap();
    let (_, p256_key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &["example.com"]);
    let err = key_matches(cert.as_bytes(), p256_key.as_bytes()).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch), "{err:?}");
}

#[test]
fn an_rsa_key_matches_in_pkcs8_and_pkcs1_and_another_key_does_not() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;
    let rsa_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pkcs8 = pem("PRIVATE KEY", rsa_key.to_pkcs8_der().unwrap().as_bytes());
    let pkcs1 = pem(
        "RSA PRIVATE KEY",
        rsa_key.to_pkcs1_der().unwrap().as_bytes(),
    );
    let key = KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = params(&["example.com"]).self_signed(&key).unwrap().pem();

    let facts = check(cert.as_bytes(), pkcs8.as_bytes(), &["example.com"], now()).unwrap();
    assert_eq!(facts.names, ["example.com"]);
    key_matches(cert.as_bytes(), pkcs1.as_bytes()).unwrap();

    let other = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let other = pem("RSA PRIVATE KEY", other.to_pkcs1_der().unwrap().as_bytes());
    let (_, ec_key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &["example.com"]);
    for wrong in [other, ec_key] {
        let err = key_matches(cert.as_bytes(), wrong.as_bytes()).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch), "{err:?}");
    }
}

#[test]
fn a_key_of_another_certificate_does_not_match() {
    let (cert, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &["example.com"]);
    let (_, other) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &["example.com"]);
    for key in [other.clone(), sec1_of(&other)] {
        let err = check(cert.as_bytes(), key.as_bytes(), &["example.com"], now()).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the key does not belong to the certificate"
        );
    }
}

#[test]
fn an_expired_certificate_is_refused_and_one_not_yet_valid_too() {
    let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &["example.com"]);
    let (cert, key) = (cert.as_bytes(), key.as_bytes());
    let after = at(2030, 1, 1) + Duration::from_secs(1);
    match check(cert, key, &["example.com"], after).unwrap_err() {
        TlsError::Expired { not_after } => assert_eq!(not_after, "2030-01-01 00:00:00 UTC"),
        other => panic!("{other:?}"),
    }
    check(cert, key, &["example.com"], at(2030, 1, 1)).unwrap();
    let before = at(2025, 1, 1) - Duration::from_secs(1);
    let err = check(cert, key, &["example.com"], before).unwrap_err();
    assert!(matches!(err, TlsError::NotYetValid { .. }), "{err:?}");

    // Made expired: its not_after in the past of the real clock.
    let key = KeyPair::generate().unwrap();
    let mut old = params(&["example.com"]);
    old.not_before = date_time_ymd(2019, 1, 1);
    old.not_after = date_time_ymd(2020, 1, 1);
    let cert = old.self_signed(&key).unwrap().pem();
    let pem_key = key.serialize_pem();
    let err = check(cert.as_bytes(), pem_key.as_bytes(), &[], SystemTime::now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the certificate expired on 2020-01-01 00:00:00 UTC"
    );
    assert!(days_left(&read_cert(cert.as_bytes()).unwrap(), SystemTime::now()) < 0);
}

#[test]
fn days_left_counts_whole_days_and_is_negative_once_expired() {
    let facts = CertFacts {
        not_after: at(2030, 1, 1),
        names: vec![],
    };
    assert_eq!(days_left(&facts, at(2029, 12, 11)), 21);
    assert_eq!(
        days_left(&facts, at(2029, 12, 11) + Duration::from_secs(1)),
        20
    );
    assert_eq!(days_left(&facts, at(2030, 1, 1)), 0);
    assert_eq!(
        days_left(&facts, at(2030, 1, 1) + Duration::from_nanos(1)),
        -1
    );
    assert_eq!(days_left(&facts, at(2030, 1, 3)), -2);
    assert_eq!(
        days_left(&facts, UNIX_EPOCH - Duration::from_secs(86_400)),
        21_915 + 1
    );
}

#[test]
fn a_wildcard_covers_exactly_one_label() {
    let facts = CertFacts {
        not_after: at(2030, 1, 1),
        names: vec!["*.example.com".into(), "*.com".into(), "10.0.0.1".into()],
    };
    for host in [
        "api.example.com",
        "API.Example.COM",
        "www.example.com.",
        "*.example.com",
    ] {
        assert!(covers(&facts, host), "{host}");
    }
    for host in [
        "example.com",
        "a.b.example.com",
        "example.org",
        "",
        ".example.com",
        "x.com",
    ] {
        assert!(!covers(&facts, host), "{host}");
    }
    assert!(covers(&facts, "10.0.0.1"));
    assert!(!covers(&facts, "10.0.0.2"));

    let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &["*.example.com"]);
    check(
        cert.as_bytes(),
        key.as_bytes(),
        &["api.example.com", "www.example.com"],
        now(),
    )
    .unwrap();
}

#[test]
fn a_host_the_certificate_does_not_name_is_refused_with_the_names_it_has() {
    let (cert, key) = self_signed(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &["example.com", "*.api.example.com"],
    );
    let err = check(
        cert.as_bytes(),
        key.as_bytes(),
        &["example.com", "shop.example.com"],
        now(),
    )
    .unwrap_err();
    match &err {
        TlsError::NotCovering { host, names } => {
            assert_eq!(host, "shop.example.com");
            assert_eq!(names, &["example.com", "*.api.example.com"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "the certificate does not cover `shop.example.com`: it names example.com, *.api.example.com"
    );
}

#[test]
fn the_common_name_counts_only_without_a_subject_alt_name() {
    let key = KeyPair::generate().unwrap();
    let mut p = params(&[]);
    p.distinguished_name
        .push(DnType::CommonName, "Legacy.Example.com");
    let cert = p.self_signed(&key).unwrap().pem();
    assert_eq!(
        read_cert(cert.as_bytes()).unwrap().names,
        ["legacy.example.com"]
    );

    let mut p = params(&["new.example.com"]);
    p.distinguished_name
        .push(DnType::CommonName, "legacy.example.com");
    let cert = p.self_signed(&key).unwrap().pem();
    assert_eq!(
        read_cert(cert.as_bytes()).unwrap().names,
        ["new.example.com"]
    );
}

#[test]
fn in_a_chain_only_the_leaf_counts() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = params(&["ca.example.org"]);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.not_after = date_time_ymd(2026, 3, 1); // the CA's date is not the leaf's
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, &ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = params(&["example.com"])
        .signed_by(&leaf_key, &issuer)
        .unwrap()
        .pem();
    let chain = format!("{leaf}{ca_pem}");
    let leaf_key = leaf_key.serialize_pem();

    let facts = check(
        chain.as_bytes(),
        leaf_key.as_bytes(),
        &["example.com"],
        now(),
    )
    .unwrap();
    assert_eq!(facts.names, ["example.com"]);
    assert_eq!(facts.not_after, at(2030, 1, 1));
    let err = check(
        chain.as_bytes(),
        leaf_key.as_bytes(),
        &["ca.example.org"],
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::NotCovering { .. }), "{err:?}");
    // The CA's key is not the leaf's; a chain in the wrong order is caught the same way.
    let err = key_matches(chain.as_bytes(), ca_key.serialize_pem().as_bytes()).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch), "{err:?}");
    let reversed = format!("{ca_pem}{leaf}");
    let err = key_matches(reversed.as_bytes(), leaf_key.as_bytes()).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch), "{err:?}");
    // Text around the blocks (OpenSSL's `subject=` lines) and CRLF line ends are fine.
    let annotated = format!(
        "subject=CN = example.com\r\n{}\r\n{ca_pem}",
        leaf.replace('\n', "\r\n")
    );
    assert_eq!(read_cert(annotated.as_bytes()).unwrap(), facts);
    // A broken second certificate is caught although the leaf is fine.
    let broken = format!("{leaf}{}", pem("CERTIFICATE", b"\x30\x03\x02\x01\x01"));
    let err = read_cert(broken.as_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("certificate 2 of the chain"),
        "{err}"
    );
}

#[test]
fn garbage_is_refused_with_what_is_wrong() {
    let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &["example.com"]);
    let not_pem = |input: &[u8]| {
        matches!(
            read_cert(input),
            Err(TlsError::NotPem(Part::Certificate, _))
        )
    };
    assert!(not_pem(b"\xff\xfe binary"));
    assert!(not_pem(b"hello"));
    assert!(not_pem(b""));
    assert!(not_pem(
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
    ));
    assert!(not_pem(b"-----BEGIN CERTIFICATE-----\nMIIB\n"));
    assert!(not_pem(
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END PRIVATE KEY-----\n"
    ));
    let junk = pem("CERTIFICATE", b"not DER at all");
    assert!(matches!(
        read_cert(junk.as_bytes()),
        Err(TlsError::NotACertificate(_))
    ));
    // The two swapped.
    let err = read_cert(key.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the certificate cannot be read: it holds no `CERTIFICATE` block (only `PRIVATE KEY`)"
    );
    let err = key_matches(cert.as_bytes(), cert.as_bytes()).unwrap_err();
    assert!(matches!(err, TlsError::NotAKey(_)), "{err:?}");
    let err = key_matches(cert.as_bytes(), b"garbage").unwrap_err();
    assert!(matches!(err, TlsError::NotPem(Part::Key, _)), "{err:?}");
    let err = key_matches(cert.as_bytes(), pem("PRIVATE KEY", b"\x30\x00").as_bytes()).unwrap_err();
    assert!(matches!(err, TlsError::NotAKey(_)), "{err:?}");
}

#[test]
fn an_encrypted_or_unsupported_key_is_named_as_such() {
    let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &["example.com"]);
    let encrypted = key.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
    let legacy = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END EC PRIVATE KEY-----\n";
    for key in [encrypted.as_str(), legacy] {
        let err = key_matches(cert.as_bytes(), key.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the key cannot be read: it is encrypted with a passphrase"
        );
    }
    let (ed_cert, ed_key) = self_signed(&rcgen::PKCS_ED25519, &["example.com"]);
    assert_eq!(
        read_cert(ed_cert.as_bytes()).unwrap().names,
        ["example.com"]
    );
    let err = key_matches(ed_cert.as_bytes(), ed_key.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, TlsError::UnsupportedKey(k) if k == "Ed25519"),
        "{err:?}"
    );
}

#[test]
fn no_error_shows_any_of_the_key() {
    let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &["example.com"]);
    let (other_cert, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &["example.com"]);
    let body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let truncated = format!(
        "{}\n{}\n-----END PRIVATE KEY-----\n",
        key.lines().next().unwrap(),
        &body[0][..40]
    );
    let secret_der = &blocks(key.as_bytes(), Part::Key).unwrap()[0].der;
    let inputs = [
        key.clone(),
        truncated,
        key.replace("-----END PRIVATE KEY-----", "-----END EC PRIVATE KEY-----"),
        key.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
        key.replace("PRIVATE KEY", "OPENSSH PRIVATE KEY"),
    ];
    for input in &inputs {
        let Err(err) = key_matches(other_cert.as_bytes(), input.as_bytes()) else {
            panic!("a key that is not the certificate's passed");
        };
        let shown = format!("{err} {err:?}");
        for line in &body {
            for chunk in line.as_bytes().chunks(8).filter(|c| c.len() == 8) {
                let chunk = std::str::from_utf8(chunk).unwrap();
                assert!(!shown.contains(chunk), "{shown} shows `{chunk}`");
            }
        }
        assert!(
            !shown.contains(&format!("{:?}", &secret_der[..8])),
            "{shown}"
        );
    }
    key_matches(cert.as_bytes(), key.as_bytes()).unwrap();
}
