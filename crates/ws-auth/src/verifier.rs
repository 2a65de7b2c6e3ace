//! Verifying and minting JWTs.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;

use crate::claims::Claims;
use crate::error::AuthError;
use crate::token::MAX_TOKEN_BYTES;

/// The default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Verifies user tokens: signature, algorithm, `exp`, `nbf`, and `iss`/`aud` when configured.
///
/// A verifier holds a list of keys. Each key accepts exactly one algorithm and may carry a key
/// id (`kid`); a token is checked against the keys whose algorithm equals the token's `alg` and
/// whose `kid` is unset or equals the token's `kid`, and it verifies if any of them verifies its
/// signature. So several secrets may be configured at once, which is how secrets rotate: add
/// the new one, move issuers over, drop the old one.
///
/// Only HS256 keys can be configured for now ([`JwtVerifier::hs256`]); public keys (RS256,
/// ES256, EdDSA) and JWKS will be added as further constructors. A token whose `alg` no key
/// accepts is refused, and that always includes `alg: none`.
///
/// Checks, in order: size (at most [`MAX_TOKEN_BYTES`](crate::MAX_TOKEN_BYTES)), shape, header
/// (`alg`, `kid`, no `crit`), signature, then the claims: `exp` is required and must not have
/// passed, `nbf` must have passed when present (both with [leeway](JwtVerifier::leeway)),
/// `iss` and `aud` must be present and equal when an issuer or audience is configured. When no
/// audience is configured, `aud` is not looked at.
///
/// ```
/// use std::time::Duration;
/// use ws_auth::{AuthError, Claims, JwtSigner, JwtVerifier};
///
/// let verifier = JwtVerifier::hs256(["new-secret", "old-secret"])
///     .issuer(Some("backend".to_owned()))
///     .leeway(Duration::from_secs(5));
///
/// let mut claims = Claims::new("alice", ["chat"], Duration::from_secs(600));
/// claims.iss = Some("backend".to_owned());
/// let token = JwtSigner::hs256("old-secret").sign(&claims)?;
/// assert_eq!(verifier.verify(&token)?.sub, "alice");
///
/// claims.iss = Some("someone-else".to_owned());
/// let token = JwtSigner::hs256("new-secret").sign(&claims)?;
/// assert!(matches!(verifier.verify(&token), Err(AuthError::WrongIssuer)));
/// # Ok::<(), AuthError>(())
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Vec<VerifyingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

/// One configured key: the algorithm it accepts, its optional `kid`, and the key material.
#[derive(Clone)]
struct VerifyingKey {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

/// The part of a JOSE header we inspect before trusting anything.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

impl JwtVerifier {
    /// A verifier accepting HS256 tokens signed with any of `secrets`.
    ///
    /// With no secrets, every token is refused (`algorithm not allowed`); configuration should
    /// reject that before building the verifier. Leeway defaults to [`DEFAULT_LEEWAY`]; no
    /// issuer or audience is checked.
    pub fn hs256(secrets: impl IntoIterator<Item = impl Into<Vec<u8>>>) -> Self {
        let keys = secrets
            .into_iter()
            .map(|secret| VerifyingKey {
                alg: Algorithm::HS256,
                kid: None,
                key: DecodingKey::from_secret(&secret.into()),
            })
            .collect();
        Self {
            keys,
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// Requires `iss` to be present and equal to `issuer`; `None` turns the check off.
    #[must_use]
    pub fn issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// Requires `aud` to be present and equal to `audience`; `None` turns the check off.
    #[must_use]
    pub fn audience(mut self, audience: Option<String>) -> Self {
        self.audience = audience;
        self
    }

    /// Clock-skew allowance for `exp` and `nbf`, in whole seconds (default 30 s).
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Verifies `token` and returns its claims.
    ///
    /// # Errors
    ///
    /// Any of the `invalid_token` variants of [`AuthError`]; never
    /// [`AuthError::MissingToken`] or [`AuthError::Forbidden`].
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TokenTooLarge);
        }
        let header = parse_header(token)?;
        if header.crit.is_some() {
            return Err(AuthError::CriticalHeader);
        }
        let alg: Algorithm = header
            .alg
            .parse()
            .map_err(|_| AuthError::AlgorithmNotAllowed)?;
        if !self.keys.iter().any(|k| k.alg == alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.alg == alg)
            .filter(|k| k.kid.is_none() || k.kid == header.kid)
            .peekable();
        if candidates.peek().is_none() {
            return Err(AuthError::UnknownKey);
        }

        let validation = self.validation(alg);
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
                Ok(data) => {
                    // Claims are shaped only after the registered claims were validated, so an
                    // expired token says "token expired" even if its other claims are odd.
                    return serde_json::from_value(data.claims).map_err(|_| AuthError::Malformed);
                }
                Err(err) => match AuthError::from_jwt(&err) {
                    AuthError::BadSignature => continue,
                    other => return Err(other),
                },
            }
        }
        Err(AuthError::BadSignature)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

fn parse_header(token: &str) -> Result<RawHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl fmt::Debug for VerifyingKey {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Mints HS256 tokens, for tests, development and the `wshub token` command.
///
/// Production tokens are minted by the application's backend; this type exists so wshub can
/// produce tokens its own [`JwtVerifier`] accepts.
///
/// ```
/// use std::time::Duration;
/// use ws_auth::{Claims, JwtSigner, JwtVerifier};
///
/// let token = JwtSigner::hs256("dev-secret")
///     .sign(&Claims::new("bob", ["*"], Duration::from_secs(60)))?;
/// let claims = JwtVerifier::hs256(["dev-secret"]).verify(&token)?;
/// assert!(claims.allows("any-project"));
/// # Ok::<(), ws_auth::AuthError>(())
/// ```
#[derive(Clone)]
pub struct JwtSigner {
    header: Header,
    key: EncodingKey,
}

impl JwtSigner {
    /// A signer producing HS256 tokens with `secret`.
    pub fn hs256(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            header: Header::new(Algorithm::HS256),
            key: EncodingKey::from_secret(&secret.into()),
        }
    }

    /// Signs `claims` into a compact JWT.
    ///
    /// # Errors
    ///
    /// [`AuthError::Signing`] if the claims cannot be encoded or the key cannot sign.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&self.header, claims, &self.key)
            .map_err(|err| AuthError::Signing(Box::new(err)))
    }
}

impl fmt::Debug for JwtSigner {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSigner")
            .field("alg", &self.header.alg)
            .field("kid", &self.header.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

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
}
