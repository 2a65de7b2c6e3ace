//! Verifying JWTs: [`JwtVerifier`] and the [`SharedVerifier`] whose keys can be replaced while
//! it is in use. Minting is [`JwtSigner`](crate::JwtSigner)'s, in `signer.rs`.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::claims::Claims;
use crate::error::{AuthError, ConfigError};
use crate::key_files;
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
        let (alg, key) = key_files::public_key_from_pem(pem)?;
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
        let read = key_files::jwks(json)?;
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

#[cfg(test)]
pub(crate) mod tests;
