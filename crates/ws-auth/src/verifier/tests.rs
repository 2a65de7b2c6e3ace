//! Unit tests of [`JwtVerifier`], [`SharedVerifier`] and [`JwtSigner`]; the helpers (`SECRET`,
//! `claims`, `token`, `now`) are shared with the other modules' tests.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};

use super::*;
use crate::signer::JwtSigner;

pub(crate) const SECRET: &str = "test-secret-0123456789";

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn claims(projects: &[&str]) -> Claims {
    Claims::new("alice", projects.iter().copied(), Duration::from_secs(3600))
}

pub(crate) fn token(claims: &Claims) -> String {
    JwtSigner::hs256(SECRET).sign(claims).unwrap()
}

fn sign_with(alg: Algorithm, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn verifier() -> JwtVerifier {
    JwtVerifier::hs256([SECRET])
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn accepts_valid_token() {
    let claims = claims(&["chat"]);
    assert_eq!(verifier().verify(&token(&claims)).unwrap(), claims);
}

#[test]
fn rejects_bad_signature() {
    let token = JwtSigner::hs256("another-secret")
        .sign(&claims(&["chat"]))
        .unwrap();
    assert!(matches!(
        verifier().verify(&token),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn rejects_tampered_claims() {
    let token = token(&claims(&["chat"]));
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(&format!(
        r#"{{"sub":"mallory","projects":["*"],"exp":{}}}"#,
        now() + 3600
    ));
    parts[1] = &forged;
    assert!(matches!(
        verifier().verify(&parts.join(".")),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn rejects_malformed() {
    for token in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.b.c",
        &format!("{}.e30.sig", b64("not json")),
        &format!("{}.e30.!!!", b64(r#"{"alg":"HS256"}"#)),
    ] {
        assert!(
            matches!(verifier().verify(token), Err(AuthError::Malformed)),
            "{token}"
        );
    }
}

#[test]
fn rejects_expired_and_honours_leeway() {
    let mut c = claims(&["chat"]);
    c.exp = now() - 3600;
    assert!(matches!(
        verifier().verify(&token(&c)),
        Err(AuthError::Expired)
    ));
    c.exp = now() - 10;
    assert!(verifier().verify(&token(&c)).is_ok(), "within 30 s leeway");
    assert!(matches!(
        verifier().leeway(Duration::ZERO).verify(&token(&c)),
        Err(AuthError::Expired)
    ));
}

#[test]
fn rejects_not_yet_valid() {
    let mut c = claims(&["chat"]);
    c.nbf = Some(now() + 3600);
    assert!(matches!(
        verifier().verify(&token(&c)),
        Err(AuthError::NotYetValid)
    ));
    c.nbf = Some(now() - 1);
    assert!(verifier().verify(&token(&c)).is_ok());
}

#[test]
fn requires_exp() {
    let header = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64(r#"{"sub":"alice","projects":["chat"]}"#);
    let message = format!("{header}.{payload}");
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    assert!(matches!(
        verifier().verify(&format!("{message}.{sig}")),
        Err(AuthError::MissingClaim("exp"))
    ));
}

/// Signs a hand-written claims payload, so claims no [`Claims`] can hold can be tried.
fn sign_raw(payload: &str) -> String {
    let message = format!("{}.{}", b64(r#"{"alg":"HS256","typ":"JWT"}"#), b64(payload));
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{sig}")
}

/// `exp`, `nbf` and `iat` at the edges of i64/u64, as floats and negative: each is
/// accepted or refused with an `invalid_token` reason, and an accepted one yields a
/// deadline (maybe none: beyond the clock) without panicking, with or without leeway.
#[test]
fn time_claims_at_the_edges() {
    #[derive(Debug)]
    enum Want {
        Accepted,
        Refused(&'static str),
    }
    use Want::{Accepted, Refused};
    let later = now() + 3600;
    let cases: Vec<(String, Want)> = vec![
        (format!(r#""exp":{later}"#), Accepted),
        (r#""exp":0"#.to_owned(), Refused("token expired")),
        (r#""exp":1"#.to_owned(), Refused("token expired")),
        (format!(r#""exp":{}"#, u64::MAX), Accepted),
        (format!(r#""exp":{}"#, i64::MAX), Accepted),
        (format!(r#""exp":{}"#, i64::MAX as u64 + 1), Accepted),
        (format!(r#""exp":{}"#, u64::MAX - 29), Accepted),
        // The library reads an `exp` it cannot hold in a u64 as absent: still invalid_token.
        (r#""exp":-1"#.to_owned(), Refused("missing claim exp")),
        (
            format!(r#""exp":{}"#, i64::MIN),
            Refused("missing claim exp"),
        ),
        (r#""exp":1e20"#.to_owned(), Refused("missing claim exp")),
        (r#""exp":1e400"#.to_owned(), Refused("malformed token")),
        (format!(r#""exp":{later}.5"#), Refused("malformed token")),
        (
            r#""exp":18446744073709551616"#.to_owned(),
            Refused("missing claim exp"),
        ),
        (format!(r#""exp":{later},"nbf":0"#), Accepted),
        (
            format!(r#""exp":{later},"nbf":{}"#, u64::MAX),
            Refused("token not yet valid"),
        ),
        (
            format!(r#""exp":{later},"nbf":{}"#, i64::MAX as u64 + 1),
            Refused("token not yet valid"),
        ),
        (
            format!(r#""exp":{later},"nbf":-1"#),
            Refused("malformed token"),
        ),
        (
            format!(r#""exp":{later},"nbf":1e400"#),
            Refused("malformed token"),
        ),
        (format!(r#""exp":{later},"iat":0"#), Accepted),
        (format!(r#""exp":{later},"iat":{}"#, u64::MAX), Accepted),
        (
            format!(r#""exp":{later},"iat":-1"#),
            Refused("malformed token"),
        ),
        (
            format!(r#""exp":{later},"iat":1e20"#),
            Refused("malformed token"),
        ),
    ];
    for (time, want) in cases {
        let payload = format!(r#"{{"sub":"alice","projects":["chat"],{time}}}"#);
        match (verifier().verify(&sign_raw(&payload)), &want) {
            (Ok(claims), Accepted) => {
                let at = claims.expires_at();
                if let Some(at) = at {
                    let secs = at.duration_since(UNIX_EPOCH).unwrap().as_secs();
                    assert_eq!(secs, claims.exp, "{time}");
                }
                // What the server does with it: add the leeway, saturating to no deadline.
                let _ = at.and_then(|at| at.checked_add(DEFAULT_LEEWAY));
                if claims.exp == later {
                    assert!(at.is_some(), "{time}");
                }
            }
            (Err(err), Refused(reason)) => {
                assert!(err.is_invalid_token(), "{time}: {err:?}");
                assert_eq!(err.to_string(), *reason, "{time}");
            }
            (got, _) => panic!("{time}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn checks_issuer_when_configured() {
    let v = verifier().issuer(Some("backend".to_owned()));
    let mut c = claims(&["chat"]);
    assert!(matches!(v.verify(&token(&c)), Err(AuthError::WrongIssuer)));
    c.iss = Some("elsewhere".to_owned());
    assert!(matches!(v.verify(&token(&c)), Err(AuthError::WrongIssuer)));
    c.iss = Some("backend".to_owned());
    assert!(v.verify(&token(&c)).is_ok());
    // Not configured: any issuer passes.
    c.iss = Some("elsewhere".to_owned());
    assert!(verifier().verify(&token(&c)).is_ok());
}

#[test]
fn checks_audience_when_configured() {
    let v = verifier().audience(Some("wshub".to_owned()));
    let mut c = claims(&["chat"]);
    assert!(matches!(
        v.verify(&token(&c)),
        Err(AuthError::WrongAudience)
    ));
    c.aud = Some("billing".to_owned());
    assert!(matches!(
        v.verify(&token(&c)),
        Err(AuthError::WrongAudience)
    ));
    c.aud = Some("wshub".to_owned());
    assert!(v.verify(&token(&c)).is_ok());
    // Not configured: `aud` is not looked at.
    c.aud = Some("billing".to_owned());
    assert!(verifier().verify(&token(&c)).is_ok());
}

#[test]
fn rejects_alg_none() {
    let c = claims(&["*"]);
    let payload = b64(&serde_json::to_string(&c).unwrap());
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
    ] {
        let unsigned = format!("{}.{payload}.", b64(header));
        assert!(
            matches!(
                verifier().verify(&unsigned),
                Err(AuthError::AlgorithmNotAllowed)
            ),
            "{header}"
        );
    }
}

#[test]
fn rejects_other_hmac_algorithms() {
    let c = claims(&["chat"]);
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        assert!(matches!(
            verifier().verify(&sign_with(alg, &c)),
            Err(AuthError::AlgorithmNotAllowed)
        ));
    }
    let rs256 = format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"RS256"}"#),
        b64(&serde_json::to_string(&c).unwrap())
    );
    assert!(matches!(
        verifier().verify(&rs256),
        Err(AuthError::AlgorithmNotAllowed)
    ));
}

#[test]
fn rejects_crit_header() {
    let token = format!("{}.e30.sig", b64(r#"{"alg":"HS256","crit":["exp"]}"#));
    assert!(matches!(
        verifier().verify(&token),
        Err(AuthError::CriticalHeader)
    ));
}

#[test]
fn rotation_accepts_every_configured_secret() {
    let v = JwtVerifier::hs256(["new-secret", "old-secret"]);
    let c = claims(&["chat"]);
    for secret in ["new-secret", "old-secret"] {
        let token = JwtSigner::hs256(secret).sign(&c).unwrap();
        assert_eq!(v.verify(&token).unwrap(), c);
    }
    // Expired under the second secret: the reason is the expiry, not the signature.
    let mut expired = c;
    expired.exp = now() - 3600;
    let token = JwtSigner::hs256("old-secret").sign(&expired).unwrap();
    assert!(matches!(v.verify(&token), Err(AuthError::Expired)));
}

#[test]
fn no_secrets_refuses_everything() {
    let v = JwtVerifier::hs256(Vec::<Vec<u8>>::new());
    assert!(matches!(
        v.verify(&token(&claims(&["chat"]))),
        Err(AuthError::AlgorithmNotAllowed)
    ));
}

#[test]
fn oversized_token_is_not_parsed() {
    let huge = "a".repeat(20 * 1024);
    assert!(matches!(
        verifier().verify(&huge),
        Err(AuthError::TokenTooLarge)
    ));
}

#[test]
fn wrong_claim_shape_is_malformed() {
    let header = b64(r#"{"alg":"HS256"}"#);
    let payload = b64(&format!(r#"{{"projects":["chat"],"exp":{}}}"#, now() + 60));
    let message = format!("{header}.{payload}");
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    assert!(matches!(
        verifier().verify(&format!("{message}.{sig}")),
        Err(AuthError::Malformed)
    ));
}

#[test]
fn debug_never_shows_secrets() {
    let text = format!("{:?} {:?}", verifier(), JwtSigner::hs256(SECRET));
    assert!(!text.contains(SECRET), "{text}");
}

mod asymmetric {
    use super::*;
    use crate::key_files::tests::{ec_pair, ed_pair, jwk, rsa_pair, test_keys};

    fn signer(private_pem: &str, kid: Option<&str>) -> JwtSigner {
        JwtSigner::from_pem(private_pem.as_bytes())
            .unwrap()
            .kid(kid.map(str::to_owned))
    }

    fn with_public(pems: &[(&str, Option<&str>)]) -> JwtVerifier {
        let mut v = JwtVerifier::new();
        for (pem, kid) in pems {
            v.add_public_key_pem(pem.as_bytes(), kid.map(str::to_owned))
                .unwrap();
        }
        v
    }

    #[test]
    fn every_key_type_verifies_its_tokens() {
        let keys = test_keys();
        let c = claims(&["chat"]);
        for ((private, public), alg) in [
            (&keys.rsa, Algorithm::RS256),
            (&keys.ec, Algorithm::ES256),
            (&keys.ed, Algorithm::EdDSA),
        ] {
            let signer = signer(private, None);
            assert_eq!(signer.algorithm(), alg);
            let v = with_public(&[(public, None)]);
            assert_eq!(v.verify(&signer.sign(&c).unwrap()).unwrap(), c, "{alg:?}");
            // The same key type from another pair does not verify it.
            let mut other = claims(&["chat"]);
            other.sub = "mallory".to_owned();
            let forged = signer.sign(&other).unwrap();
            let wrong = match alg {
                Algorithm::RS256 => rsa_pair().1,
                Algorithm::ES256 => ec_pair().1,
                _ => ed_pair().1,
            };
            assert!(matches!(
                with_public(&[(&wrong, None)]).verify(&forged),
                Err(AuthError::BadSignature)
            ));
        }
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        let keys = test_keys();
        let c = claims(&["*"]);
        let forged = JwtSigner::hs256(keys.rsa.1.as_bytes()).sign(&c).unwrap();
        // Only the RSA key: no key accepts HS256 at all.
        assert!(matches!(
            with_public(&[(&keys.rsa.1, None)]).verify(&forged),
            Err(AuthError::AlgorithmNotAllowed)
        ));
        // With secrets beside it: the secrets do not verify it.
        let mut v = with_public(&[(&keys.rsa.1, None)]);
        v.add_hs256_secret(SECRET);
        assert!(matches!(v.verify(&forged), Err(AuthError::BadSignature)));
    }

    #[test]
    fn alg_of_another_key_type_is_refused() {
        let keys = test_keys();
        let es = signer(&keys.ec.0, None).sign(&claims(&["chat"])).unwrap();
        // Relabel an ES256 token as RS256: only the RSA key is tried, and it fails.
        let (_, rest) = es.split_once('.').unwrap();
        let relabelled = format!("{}.{rest}", b64(r#"{"alg":"RS256","typ":"JWT"}"#));
        let v = with_public(&[(&keys.rsa.1, None), (&keys.ec.1, None)]);
        assert!(matches!(
            v.verify(&relabelled),
            Err(AuthError::BadSignature)
        ));
        assert!(v.verify(&es).is_ok());
        // EdDSA is not configured here.
        let ed = signer(&keys.ed.0, None).sign(&claims(&["chat"])).unwrap();
        assert!(matches!(v.verify(&ed), Err(AuthError::AlgorithmNotAllowed)));
    }

    #[test]
    fn kid_chooses_the_key() {
        let keys = test_keys();
        let (old_private, old_public) = &keys.rsa;
        let (new_private, new_public) = rsa_pair();
        let v = with_public(&[(old_public, Some("old")), (&new_public, Some("new"))]);
        let c = claims(&["chat"]);
        for (private, kid) in [(old_private.as_str(), "old"), (new_private.as_str(), "new")] {
            assert!(
                v.verify(&signer(private, Some(kid)).sign(&c).unwrap())
                    .is_ok()
            );
        }
        let wrong_kid = signer(old_private, Some("new")).sign(&c).unwrap();
        assert!(matches!(v.verify(&wrong_kid), Err(AuthError::BadSignature)));
        let unknown = signer(old_private, Some("other")).sign(&c).unwrap();
        assert!(matches!(v.verify(&unknown), Err(AuthError::UnknownKey)));
        let no_kid = signer(old_private, None).sign(&c).unwrap();
        assert!(matches!(v.verify(&no_kid), Err(AuthError::MissingKeyId)));
        // One key per algorithm: no kid needed, and any kid reaches an unlabelled key.
        let single = with_public(&[(old_public, None), (&keys.ec.1, None)]);
        assert!(single.verify(&no_kid).is_ok());
        assert!(single.verify(&unknown).is_ok());
        // But a labelled key does not answer for another kid.
        let labelled = with_public(&[(old_public, Some("old"))]);
        assert!(matches!(
            labelled.verify(&unknown),
            Err(AuthError::UnknownKey)
        ));
        assert!(labelled.verify(&no_kid).is_ok());
    }

    #[test]
    fn duplicate_kid_is_a_configuration_error() {
        let keys = test_keys();
        let mut v = with_public(&[(&keys.rsa.1, Some("k"))]);
        assert!(matches!(
            v.add_public_key_pem(keys.ec.1.as_bytes(), Some("k".to_owned())),
            Err(ConfigError::DuplicateKeyId(kid)) if kid == "k"
        ));
    }

    #[test]
    fn jwks_keys_verify_by_kid() {
        let keys = test_keys();
        let doc = serde_json::json!({"keys": [
            jwk(&keys.rsa.1, "r1", Some("RS256")),
            jwk(&keys.ec.1, "e1", None),
            jwk(&keys.ed.1, "d1", Some("EdDSA")),
        ]});
        let mut v = JwtVerifier::new();
        assert_eq!(v.add_jwks(doc.to_string().as_bytes()).unwrap(), 3);
        let c = claims(&["chat"]);
        for (private, kid) in [(&keys.rsa.0, "r1"), (&keys.ec.0, "e1"), (&keys.ed.0, "d1")] {
            let token = signer(private, Some(kid)).sign(&c).unwrap();
            assert_eq!(v.verify(&token).unwrap(), c, "{kid}");
        }
        let ids: Vec<_> = v.key_ids().collect();
        assert_eq!(ids.len(), 3);
        assert!(format!("{v:?}").contains("r1"));
    }

    #[test]
    fn shared_verifier_swaps_keys() {
        let shared = SharedVerifier::new(JwtVerifier::hs256(["old-secret-0123456789"]));
        let clone = shared.clone();
        let old = JwtSigner::hs256("old-secret-0123456789")
            .sign(&claims(&["chat"]))
            .unwrap();
        assert!(clone.current().verify(&old).is_ok());
        let previous = shared.replace(JwtVerifier::hs256(["new-secret-0123456789"]));
        assert!(previous.verify(&old).is_ok());
        assert!(matches!(
            clone.current().verify(&old),
            Err(AuthError::BadSignature)
        ));
    }
}
