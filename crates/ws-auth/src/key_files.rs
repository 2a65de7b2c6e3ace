//! Parsing key files: PEM public keys and JWKS documents (for [`JwtVerifier`]) and PEM private
//! keys (for [`JwtSigner`]), each turned into a key that accepts exactly one algorithm. The
//! caller reads the files; this module only sees their bytes.
//!
//! [`JwtVerifier`]: crate::JwtVerifier
//! [`JwtSigner`]: crate::JwtSigner
//!
//! The algorithm always follows from the key's type and nothing else: an RSA key verifies
//! RS256, a P-256 key ES256, an Ed25519 key EdDSA, a shared secret HS256. That is what makes the
//! HS/RS confusion attack impossible: a token's `alg` only selects among keys of that type, so a
//! token "signed" HS256 with an RSA public key as the secret finds no RSA key to be checked
//! against.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _, EncodeRsaPrivateKey as _};
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use rsa::traits::PublicKeyParts as _;
use serde::Deserialize;

use crate::error::ConfigError;

/// The smallest RSA modulus accepted, in bits.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// A public key parsed from PEM, with the one algorithm it verifies.
pub(crate) fn public_key_from_pem(pem: &[u8]) -> Result<(Algorithm, DecodingKey), ConfigError> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| ConfigError::PublicKey("the file is not PEM text"))?
        .trim();
    if text.contains("PRIVATE KEY-----") {
        return Err(ConfigError::PublicKey(
            "this is a private key; configure its public half (`openssl pkey -pubout`)",
        ));
    }
    if text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::PublicKey(
            "this is a certificate; extract its public key (`openssl x509 -pubkey -noout`)",
        ));
    }
    if let Ok(key) = rsa::RsaPublicKey::from_public_key_pem(text)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(text))
    {
        if key.size() * 8 < MIN_RSA_BITS {
            return Err(ConfigError::PublicKey(
                "RSA keys must have 2048 bits or more",
            ));
        }
        let n = key.n().to_bytes_be();
        let e = key.e().to_bytes_be();
        return Ok((
            Algorithm::RS256,
            DecodingKey::from_rsa_raw_components(&n, &e),
        ));
    }
    if let Ok(key) = p256::PublicKey::from_public_key_pem(text) {
        let point = key.to_encoded_point(false);
        return Ok((Algorithm::ES256, DecodingKey::from_ec_der(point.as_bytes())));
    }
    if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(text) {
        return Ok((Algorithm::EdDSA, DecodingKey::from_ed_der(key.as_bytes())));
    }
    if !text.starts_with("-----BEGIN ") {
        return Err(ConfigError::PublicKey("the file is not PEM"));
    }
    Err(ConfigError::PublicKey(
        "expected an RSA (2048 bits or more), P-256 or Ed25519 public key",
    ))
}

/// A private key parsed from PEM, with the one algorithm it signs.
pub(crate) fn private_key_from_pem(pem: &[u8]) -> Result<(Algorithm, EncodingKey), ConfigError> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| ConfigError::PrivateKey("the file is not PEM text"))?
        .trim();
    if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(text)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(text))
    {
        if key.size() * 8 < MIN_RSA_BITS {
            return Err(ConfigError::PrivateKey(
                "RSA keys must have 2048 bits or more",
            ));
        }
        // jsonwebtoken signs RS256 with a PKCS#1 DER key.
        let der = key
            .to_pkcs1_der()
            .map_err(|_| ConfigError::PrivateKey("the RSA key cannot be encoded"))?;
        return Ok((Algorithm::RS256, EncodingKey::from_rsa_der(der.as_bytes())));
    }
    if let Ok(key) =
        p256::SecretKey::from_pkcs8_pem(text).or_else(|_| p256::SecretKey::from_sec1_pem(text))
    {
        // ... and ES256 and EdDSA with PKCS#8 DER keys.
        let der = key
            .to_pkcs8_der()
            .map_err(|_| ConfigError::PrivateKey("the P-256 key cannot be encoded"))?;
        return Ok((Algorithm::ES256, EncodingKey::from_ec_der(der.as_bytes())));
    }
    if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
        let der = key
            .to_pkcs8_der()
            .map_err(|_| ConfigError::PrivateKey("the Ed25519 key cannot be encoded"))?;
        return Ok((Algorithm::EdDSA, EncodingKey::from_ed_der(der.as_bytes())));
    }
    if text.contains("PUBLIC KEY-----") {
        return Err(ConfigError::PrivateKey(
            "this is a public key; signing needs the private key",
        ));
    }
    Err(ConfigError::PrivateKey(
        "expected an RSA (2048 bits or more), P-256 or Ed25519 private key",
    ))
}

/// The name of the key type an algorithm needs, for messages.
pub(crate) fn key_kind(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "shared secret",
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => "RSA",
        Algorithm::ES256 => "P-256",
        Algorithm::ES384 => "P-384",
        Algorithm::EdDSA => "Ed25519",
        _ => "other",
    }
}

/// One usable key of a JWKS.
#[derive(Debug)]
pub(crate) struct JwksKey {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    pub(crate) key: DecodingKey,
}

/// What reading a JWKS gave: the usable keys, and why the others were skipped.
#[derive(Debug)]
pub(crate) struct JwksKeys {
    pub(crate) keys: Vec<JwksKey>,
    pub(crate) skipped: Vec<(usize, String)>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// Reads a JWKS document (`{"keys": [...]}`).
///
/// Keys for encryption (`use: enc`), symmetric keys and keys of algorithms other than RS256,
/// ES256 and EdDSA are skipped, so the JWKS of an identity provider can be used as published.
/// A key whose parameters are broken or contradict its `alg` is an error, and so is a document
/// with no usable key at all.
pub(crate) fn jwks(json: &[u8]) -> Result<JwksKeys, ConfigError> {
    let raw: RawJwks = serde_json::from_slice(json).map_err(ConfigError::Jwks)?;
    let mut out = JwksKeys {
        keys: Vec::new(),
        skipped: Vec::new(),
    };
    for (index, value) in raw.keys.into_iter().enumerate() {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            out.skipped
                .push((index, "unsupported key type or curve".to_owned()));
            continue;
        };
        match jwk_key(&jwk) {
            Ok(Some((alg, key))) => out.keys.push(JwksKey {
                alg,
                kid: jwk.common.key_id.clone(),
                key,
            }),
            Ok(None) => out.skipped.push((index, skip_reason(&jwk))),
            Err(BrokenJwk { reason, source }) => {
                return Err(ConfigError::JwksKey {
                    index,
                    reason,
                    source,
                });
            }
        }
    }
    if out.keys.is_empty() {
        return Err(ConfigError::NoUsableJwk);
    }
    Ok(out)
}

fn skip_reason(jwk: &Jwk) -> String {
    match (&jwk.common.public_key_use, &jwk.algorithm) {
        (Some(PublicKeyUse::Encryption), _) => "an encryption key (use: enc)".to_owned(),
        (_, AlgorithmParameters::OctetKey(_)) => {
            "a symmetric key (put HS256 secrets in the configuration instead)".to_owned()
        }
        _ => format!(
            "algorithm {:?} is not one of RS256, ES256, EdDSA",
            jwk.common.key_algorithm
        ),
    }
}

/// The algorithm and key of one JWK; `Ok(None)` for a key to skip, `Err` for a broken one.
fn jwk_key(jwk: &Jwk) -> Result<Option<(Algorithm, DecodingKey)>, BrokenJwk> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return Ok(None);
    }
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        Some(_) => return Ok(None),
    };
    let (alg, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(params) => {
            let n =
                base64url(&params.n).map_err(|e| BrokenJwk::because("n is not base64url", e))?;
            let e =
                base64url(&params.e).map_err(|e| BrokenJwk::because("e is not base64url", e))?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return Err(BrokenJwk::new("RSA keys must have 2048 bits or more"));
            }
            rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(&n),
                rsa::BigUint::from_bytes_be(&e),
            )
            .map_err(|e| BrokenJwk::because("not a valid RSA public key", e))?;
            (
                Algorithm::RS256,
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        AlgorithmParameters::EllipticCurve(params) => {
            if params.curve != EllipticCurve::P256 {
                return match declared {
                    Some(_) => Err(BrokenJwk::new(format!(
                        "curve {:?} does not fit its alg; ES256 needs P-256",
                        params.curve
                    ))),
                    None => Ok(None),
                };
            }
            let x =
                base64url(&params.x).map_err(|e| BrokenJwk::because("x is not base64url", e))?;
            let y =
                base64url(&params.y).map_err(|e| BrokenJwk::because("y is not base64url", e))?;
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            p256::PublicKey::from_sec1_bytes(&point)
                .map_err(|e| BrokenJwk::because("x and y are not a point of P-256", e))?;
            (Algorithm::ES256, DecodingKey::from_ec_der(&point))
        }
        AlgorithmParameters::OctetKeyPair(params) => {
            if params.curve != EllipticCurve::Ed25519 {
                return Ok(None);
            }
            let x =
                base64url(&params.x).map_err(|e| BrokenJwk::because("x is not base64url", e))?;
            let bytes: [u8; 32] = x
                .as_slice()
                .try_into()
                .map_err(|e| BrokenJwk::because("an Ed25519 key has 32 bytes", e))?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|e| BrokenJwk::because("not a valid Ed25519 public key", e))?;
            (Algorithm::EdDSA, DecodingKey::from_ed_der(&bytes))
        }
        // Symmetric keys, unknown key types.
        _ => return Ok(None),
    };
    match declared {
        Some(declared) if declared != alg => Err(BrokenJwk::new(format!(
            "alg {declared:?} does not fit a {} key",
            key_kind(alg)
        ))),
        _ => Ok(Some((alg, key))),
    }
}

/// Why one JWK cannot be used: what is wrong with it, for the message, and the parser's error
/// when one said so, kept as the source of [`ConfigError::JwksKey`].
struct BrokenJwk {
    reason: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl BrokenJwk {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            source: None,
        }
    }

    fn because(reason: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            reason: reason.to_owned(),
            source: Some(Box::new(source)),
        }
    }
}

fn base64url(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('='))
}

#[cfg(test)]
pub(crate) mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use rsa::pkcs8::{EncodePublicKey as _, LineEnding};

    use super::*;

    /// Fresh key pairs of every supported type, as PEM `(private, public)`; RSA is 2048 bits.
    pub(crate) struct TestKeys {
        pub(crate) rsa: (String, String),
        pub(crate) ec: (String, String),
        pub(crate) ed: (String, String),
    }

    pub(crate) fn rsa_pair() -> (String, String) {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        (
            key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            key.to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
    }

    pub(crate) fn ec_pair() -> (String, String) {
        let key = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
        (
            key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            key.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        )
    }

    pub(crate) fn ed_pair() -> (String, String) {
        let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
        (
            key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            key.verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
    }

    /// One set per test binary: RSA key generation takes a while.
    pub(crate) fn test_keys() -> &'static TestKeys {
        static KEYS: std::sync::OnceLock<TestKeys> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| TestKeys {
            rsa: rsa_pair(),
            ec: ec_pair(),
            ed: ed_pair(),
        })
    }

    /// The JWK of a public PEM key.
    pub(crate) fn jwk(public_pem: &str, kid: &str, alg: Option<&str>) -> serde_json::Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut jwk = if let Ok(key) = rsa::RsaPublicKey::from_public_key_pem(public_pem) {
            serde_json::json!({"kty": "RSA", "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())})
        } else if let Ok(key) = p256::PublicKey::from_public_key_pem(public_pem) {
            let point = key.to_encoded_point(false);
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())})
        } else {
            let key = ed25519_dalek::VerifyingKey::from_public_key_pem(public_pem).unwrap();
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.as_bytes())})
        };
        jwk["kid"] = kid.into();
        if let Some(alg) = alg {
            jwk["alg"] = alg.into();
        }
        jwk
    }

    #[test]
    fn public_pem_of_every_type() {
        let keys = test_keys();
        assert_eq!(
            public_key_from_pem(keys.rsa.1.as_bytes()).unwrap().0,
            Algorithm::RS256
        );
        assert_eq!(
            public_key_from_pem(keys.ec.1.as_bytes()).unwrap().0,
            Algorithm::ES256
        );
        assert_eq!(
            public_key_from_pem(keys.ed.1.as_bytes()).unwrap().0,
            Algorithm::EdDSA
        );
        // PKCS#1 RSA public keys too.
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        let pkcs1 = rsa::RsaPublicKey::from_public_key_pem(&keys.rsa.1)
            .unwrap()
            .to_pkcs1_pem(LineEnding::LF)
            .unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
        assert_eq!(
            public_key_from_pem(pkcs1.as_bytes()).unwrap().0,
            Algorithm::RS256
        );
    }

    #[test]
    fn private_pem_of_every_type() {
        let keys = test_keys();
        assert_eq!(
            private_key_from_pem(keys.rsa.0.as_bytes()).unwrap().0,
            Algorithm::RS256
        );
        assert_eq!(
            private_key_from_pem(keys.ec.0.as_bytes()).unwrap().0,
            Algorithm::ES256
        );
        assert_eq!(
            private_key_from_pem(keys.ed.0.as_bytes()).unwrap().0,
            Algorithm::EdDSA
        );
    }

    #[test]
    fn wrong_files_say_what_is_wrong() {
        let keys = test_keys();
        let err = public_key_from_pem(keys.ec.0.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("private key"), "{err}");
        let err = private_key_from_pem(keys.ec.1.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("public key"), "{err}");
        let err = public_key_from_pem(b"hello").unwrap_err().to_string();
        assert!(err.contains("not PEM"), "{err}");
        let err = public_key_from_pem(&[0xff, 0xfe]).unwrap_err().to_string();
        assert!(err.contains("not PEM"), "{err}");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let err = public_key_from_pem(cert.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate"), "{err}");
        // Error texts never carry the key.
        assert!(!err.contains("MIIB"));
    }

    #[test]
    fn small_rsa_keys_are_refused() {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let public = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let err = public_key_from_pem(public.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("2048"), "{err}");
        let private = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert!(private_key_from_pem(private.as_bytes()).is_err());
    }

    #[test]
    fn jwks_of_every_type_with_and_without_alg() {
        let keys = test_keys();
        let doc = serde_json::json!({"keys": [
            jwk(&keys.rsa.1, "r", Some("RS256")),
            jwk(&keys.ec.1, "e", None),
            jwk(&keys.ed.1, "d", Some("EdDSA")),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "s"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "enc"},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "kid": "p384"},
            {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA", "kid": "k1"},
        ]});
        let read = jwks(doc.to_string().as_bytes()).unwrap();
        let got: Vec<(Algorithm, Option<&str>)> = read
            .keys
            .iter()
            .map(|k| (k.alg, k.kid.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (Algorithm::RS256, Some("r")),
                (Algorithm::ES256, Some("e")),
                (Algorithm::EdDSA, Some("d"))
            ]
        );
        let skipped: Vec<usize> = read.skipped.iter().map(|(i, _)| *i).collect();
        assert_eq!(skipped, [3, 4, 5, 6]);
    }

    #[test]
    fn broken_jwks_are_errors() {
        let keys = test_keys();
        let mismatch = serde_json::json!({"keys": [jwk(&keys.rsa.1, "r", Some("ES256"))]});
        let err = jwks(mismatch.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("#0") && err.contains("ES256"), "{err}");

        let off_curve = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])}]});
        let err = jwks(off_curve.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("P-256"), "{err}");

        let only_secret = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert!(matches!(
            jwks(only_secret.to_string().as_bytes()),
            Err(ConfigError::NoUsableJwk)
        ));
        assert!(matches!(jwks(b"[]"), Err(ConfigError::Jwks(_))));
        assert!(matches!(jwks(b"{\"keys\": 5}"), Err(ConfigError::Jwks(_))));
    }

    #[test]
    fn a_broken_jwk_keeps_the_parsers_error_as_its_source() {
        use std::error::Error as _;
        let off_curve = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])}]});
        let err = jwks(off_curve.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(err, ConfigError::JwksKey { index: 0, .. }),
            "{err}"
        );
        assert!(err.source().is_some(), "{err:?}");
        let bad_base64 = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "!!"}]});
        let err = jwks(bad_base64.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "JWKS key #0: x is not base64url");
        assert!(err.source().is_some(), "{err:?}");
        // Our own findings have no parser error behind them.
        let keys = test_keys();
        let mismatch = serde_json::json!({"keys": [jwk(&keys.rsa.1, "r", Some("ES256"))]});
        assert!(
            jwks(mismatch.to_string().as_bytes())
                .unwrap_err()
                .source()
                .is_none()
        );
    }
}
