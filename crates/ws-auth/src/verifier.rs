//! Verifying and minting JWTs.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;

use crate::claims::Claims;
use crate::error::{AuthError, ConfigError};
use crate::keys;
use crate::token::MAX_TOKEN_BYTES;

/// The default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Verifies user tokens: signature, algorithm, `exp`, `nbf`, and `iss`/`aud` when configured.
///
/// A verifier holds a set of keys. Each key accepts exactly one algorithm, which follows from
/// its type (a secret: HS256; RSA: RS256; P-256: ES256; Ed25519: EdDSA), and may carry a key id
/// (`kid`):
///
/// - HS256 secrets: a token is checked against every secret (they carry no `kid`), so several
///   secrets may be configured at once, which is how secrets rotate: add the new one, move
///   issuers over, drop the old one;
/// - public keys ([PEM](JwtVerifier::add_public_key_pem) or [JWKS](JwtVerifier::add_jwks)):
///   a token is checked against exactly one key: the key of its `alg` whose `kid` equals the
///   token's, else the one key of its `alg` without a `kid`. A token without `kid` is refused
///   ([`AuthError::MissingKeyId`]) when several keys of its `alg` exist, and a `kid` that
///   names no key is [`AuthError::UnknownKey`]. So public keys rotate by `kid`.
///
/// A token whose `alg` no key accepts is refused, and that always includes `alg: none` and a
/// token signed HS256 with a public key as the secret when no secret is configured (when
/// secrets are, it fails their signature check instead): the HS/RS confusion attack.
///
/// Checks, in order: size (at most [`MAX_TOKEN_BYTES`](crate::MAX_TOKEN_BYTES)), shape, header
/// (`alg`, `kid`, no `crit`), signature, then the claims: `exp` is required and must not have
/// passed, `nbf` must have passed when present (both with [leeway](JwtVerifier::leeway)),
/// `iss` and `aud` must be present and equal when an issuer or audience is configured. When no
/// audience is configured, `aud` is not looked at.
///
/// To swap the keys of a running server (on SIGHUP, say), share the verifier through a
/// [`SharedVerifier`].
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

impl Default for JwtVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl JwtVerifier {
    /// A verifier with no keys, which refuses every token until keys are added.
    ///
    /// Leeway defaults to [`DEFAULT_LEEWAY`]; no issuer or audience is checked.
    pub fn new() -> Self {
        Self {
            keys: Vec::new(),
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// A verifier accepting HS256 tokens signed with any of `secrets`.
    ///
    /// With no secrets, every token is refused (`algorithm not allowed`); configuration should
    /// reject that before building the verifier. Leeway defaults to [`DEFAULT_LEEWAY`]; no
    /// issuer or audience is checked.
    pub fn hs256(secrets: impl IntoIterator<Item = impl Into<Vec<u8>>>) -> Self {
        let mut verifier = Self::new();
        for secret in secrets {
            verifier.add_hs256_secret(secret);
        }
        verifier
    }

    /// Adds an HS256 shared secret.
    pub fn add_hs256_secret(&mut self, secret: impl Into<Vec<u8>>) -> &mut Self {
        self.keys.push(VerifyingKey {
            alg: Algorithm::HS256,
            kid: None,
            key: DecodingKey::from_secret(&secret.into()),
        });
        self
    }

    /// Adds a public key in PEM (SPKI `PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`), and returns the
    /// algorithm it verifies: RS256 for RSA (2048 bits or more), ES256 for P-256, EdDSA for
    /// Ed25519.
    ///
    /// With `kid`, tokens naming that `kid` are checked with this key; without, the key checks
    /// tokens of its algorithm whose `kid` names no other key.
    ///
    /// # Errors
    ///
    /// [`ConfigError::PublicKey`] when `pem` is not such a key (the message says why, e.g. that
    /// it is the private key), [`ConfigError::DuplicateKeyId`] when `kid` is taken.
    pub fn add_public_key_pem(
        &mut self,
        pem: &[u8],
        kid: Option<String>,
    ) -> Result<Algorithm, ConfigError> {
        let (alg, key) = keys::public_key_from_pem(pem)?;
        self.push_public(alg, kid, key)?;
        Ok(alg)
    }

    /// Adds the keys of a JWKS document (`{"keys": [...]}`), and returns how many were added.
    ///
    /// RS256, ES256 and EdDSA signing keys are added with their `kid`; the algorithm is the
    /// key's `alg` or follows from its type. Encryption keys, symmetric keys and other
    /// algorithms are skipped (logged at `warn`), so an identity provider's JWKS can be used as
    /// published.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Jwks`] for a document that is not a JWKS, [`ConfigError::JwksKey`] for a
    /// key whose parameters are broken or contradict its `alg`, [`ConfigError::NoUsableJwk`]
    /// when nothing is left, [`ConfigError::DuplicateKeyId`] when a `kid` is taken.
    pub fn add_jwks(&mut self, json: &[u8]) -> Result<usize, ConfigError> {
        let read = keys::jwks(json)?;
        for (index, reason) in &read.skipped {
            tracing::warn!(index, reason = %reason, "JWKS key skipped");
        }
        let added = read.keys.len();
        for key in read.keys {
            self.push_public(key.alg, key.kid, key.key)?;
        }
        Ok(added)
    }

    fn push_public(
        &mut self,
        alg: Algorithm,
        kid: Option<String>,
        key: DecodingKey,
    ) -> Result<(), ConfigError> {
        if let Some(kid) = &kid
            && self.keys.iter().any(|k| k.kid.as_ref() == Some(kid))
        {
            return Err(ConfigError::DuplicateKeyId(kid.clone()));
        }
        self.keys.push(VerifyingKey { alg, kid, key });
        Ok(())
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

    /// Whether no key is configured (every token would be refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The configured keys as `(algorithm, kid)`, for logs; never the key material.
    pub fn key_ids(&self) -> impl Iterator<Item = (Algorithm, Option<&str>)> {
        self.keys.iter().map(|k| (k.alg, k.kid.as_deref()))
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
        let candidates = self.candidates(alg, header.kid.as_deref())?;

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

    /// The keys a token of `alg` naming `kid` is checked against (see the type's docs).
    fn candidates(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Vec<&VerifyingKey>, AuthError> {
        let same_alg: Vec<&VerifyingKey> = self.keys.iter().filter(|k| k.alg == alg).collect();
        if same_alg.is_empty() {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        if alg == Algorithm::HS256 {
            let keys: Vec<&VerifyingKey> = same_alg
                .into_iter()
                .filter(|k| k.kid.is_none() || k.kid.as_deref() == kid)
                .collect();
            return if keys.is_empty() {
                Err(AuthError::UnknownKey)
            } else {
                Ok(keys)
            };
        }
        // Asymmetric: exactly one key, or nothing. Trying several would multiply the cost of
        // every forged token and hide which key an issuer really used.
        let unlabelled = || {
            let mut it = same_alg.iter().filter(|k| k.kid.is_none());
            match (it.next(), it.next()) {
                (Some(only), None) => Some(*only),
                _ => None,
            }
        };
        match kid {
            Some(kid) => same_alg
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .copied()
                .or_else(unlabelled)
                .map(|k| vec![k])
                .ok_or(AuthError::UnknownKey),
            None if same_alg.len() == 1 => Ok(same_alg),
            None => Err(AuthError::MissingKeyId),
        }
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

/// A [`JwtVerifier`] that can be replaced while it is in use: how keys are reloaded without
/// dropping connections.
///
/// Cheap to clone; every clone sees a [`replace`](SharedVerifier::replace) at once. A request
/// being verified keeps the verifier it started with, and connections already open are not
/// verified again, so replacing the keys never closes anything: tokens signed with a removed
/// key are refused from the next handshake on.
///
/// ```
/// use std::time::Duration;
/// use ws_auth::{Claims, JwtSigner, JwtVerifier, SharedVerifier};
///
/// let shared = SharedVerifier::new(JwtVerifier::hs256(["old-secret-0123456"]));
/// let claims = Claims::new("alice", ["chat"], Duration::from_secs(60));
/// let old = JwtSigner::hs256("old-secret-0123456").sign(&claims)?;
/// assert!(shared.current().verify(&old).is_ok());
///
/// shared.replace(JwtVerifier::hs256(["new-secret-0123456"]));
/// assert!(shared.current().verify(&old).is_err());
/// # Ok::<(), ws_auth::AuthError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SharedVerifier {
    current: Arc<RwLock<Arc<JwtVerifier>>>,
}

impl SharedVerifier {
    /// Shares `verifier`.
    pub fn new(verifier: impl Into<Arc<JwtVerifier>>) -> Self {
        Self {
            current: Arc::new(RwLock::new(verifier.into())),
        }
    }

    /// The verifier in use now.
    pub fn current(&self) -> Arc<JwtVerifier> {
        // The lock only guards a pointer swap, so a poisoned lock still holds a whole verifier.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `verifier` in use for every clone, and returns the one it replaces.
    pub fn replace(&self, verifier: impl Into<Arc<JwtVerifier>>) -> Arc<JwtVerifier> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, verifier.into())
    }
}

impl From<JwtVerifier> for SharedVerifier {
    fn from(verifier: JwtVerifier) -> Self {
        Self::new(verifier)
    }
}

impl From<Arc<JwtVerifier>> for SharedVerifier {
    fn from(verifier: Arc<JwtVerifier>) -> Self {
        Self::new(verifier)
    }
}

/// Mints tokens, for tests, development and the `wshub token` command.
///
/// Production tokens are minted by the application's backend; this type exists so wshub can
/// produce tokens its own [`JwtVerifier`] accepts: HS256 with a shared secret, or RS256, ES256
/// or EdDSA with a private key in PEM ([`JwtSigner::from_pem`]).
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

    /// A signer with a private key in PEM (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or
    /// SEC1 `EC PRIVATE KEY`); the algorithm follows from the key: RS256 for RSA (2048 bits or
    /// more), ES256 for P-256, EdDSA for Ed25519.
    ///
    /// # Errors
    ///
    /// [`ConfigError::PrivateKey`] when `pem` is not such a key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        let (alg, key) = keys::private_key_from_pem(pem)?;
        Ok(Self {
            header: Header::new(alg),
            key,
        })
    }

    /// Sets the `kid` header (`None` leaves it out).
    #[must_use]
    pub fn kid(mut self, kid: Option<String>) -> Self {
        self.header.kid = kid;
        self
    }

    /// The algorithm of the tokens this signer makes.
    pub fn algorithm(&self) -> Algorithm {
        self.header.alg
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
        use crate::keys::tests::{ec_pair, ed_pair, jwk, rsa_pair, test_keys};

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
}
