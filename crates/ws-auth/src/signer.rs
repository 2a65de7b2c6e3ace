//! Minting JWTs: [`JwtSigner`], the counterpart of [`JwtVerifier`](crate::JwtVerifier) for
//! tests, development and the `wshub token` command.

use std::fmt;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::claims::Claims;
use crate::error::{AuthError, ConfigError};
use crate::key_files;

/// Mints tokens, for tests, development and the `wshub token` command.
///
/// Production tokens are minted by the application's backend; this type exists so wshub can
/// produce tokens its own [`JwtVerifier`](crate::JwtVerifier) accepts: HS256 with a shared
/// secret, or RS256, ES256 or EdDSA with a private key in PEM ([`JwtSigner::from_pem`]).
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
        let (alg, key) = key_files::private_key_from_pem(pem)?;
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
