//! Why a request was refused, and why a configuration was refused.

use std::time::Duration;

use http::StatusCode;

/// Why a request failed authentication or authorisation.
///
/// The [`Display`](std::fmt::Display) text is the `message` of the JSON rejection body, so it is
/// written for the client: it names the reason and never contains the token or the key.
/// [`AuthError::code`] and [`AuthError::status`] give the rest of the rejection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request carried no token at all; the client should obtain one and send it as
    /// `Authorization: Bearer`, the `wshub.bearer.<jwt>` subprotocol or `access_token`.
    #[error("no bearer token in the request")]
    MissingToken,
    /// The token is larger than [`MAX_TOKEN_BYTES`](crate::MAX_TOKEN_BYTES) and was not parsed;
    /// the client should send a real token.
    #[error("token too large")]
    TokenTooLarge,
    /// The token is not a well-formed JWT (three base64url parts, JSON header and claims of the
    /// expected shape); the client should send the token its backend minted, unmodified.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm no configured key accepts (this includes `alg: none`);
    /// the issuer must sign with an accepted algorithm.
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The header names a `kid` no configured key carries; the verifier's key set is out of date
    /// or the token comes from another issuer.
    #[error("unknown key id")]
    UnknownKey,
    /// The header has no `kid` but several asymmetric keys accept its algorithm, so the token
    /// does not say which one signed it; the issuer must set `kid`.
    #[error("token has no kid and several keys could have signed it")]
    MissingKeyId,
    /// The header lists `crit` extensions, which this verifier does not understand; the issuer
    /// must not mark extensions critical.
    #[error("critical header extensions are not supported")]
    CriticalHeader,
    /// No configured key verifies the signature; the token was forged, corrupted or signed with
    /// a secret this server does not have.
    #[error("signature does not match")]
    BadSignature,
    /// The `exp` claim (plus leeway) has passed; the client should refresh its token.
    #[error("token expired")]
    Expired,
    /// The `nbf` claim (minus leeway) is still in the future; the issuer's clock is ahead, or the
    /// client used the token too early.
    #[error("token not yet valid")]
    NotYetValid,
    /// The `iss` claim is absent or differs from the configured issuer; the token was minted for
    /// another service.
    #[error("wrong issuer")]
    WrongIssuer,
    /// The `aud` claim is absent or differs from the configured audience; the token was minted
    /// for another service.
    #[error("wrong audience")]
    WrongAudience,
    /// A registered claim the verifier needs (such as `exp`) is absent; the issuer must include it.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// The `caps` claim is not of the documented shape (an object from project patterns to
    /// lists of operations, SPEC §12); the issuer must fix the grants it mints.
    #[error("invalid caps claim: {0}")]
    InvalidGrants(#[source] ws_core::GrantsError),
    /// The token is valid but its `projects` claim does not include the requested project; the
    /// client should not retry with the same token.
    #[error("token does not grant access to project {project}")]
    Forbidden {
        /// The project the request was scoped to.
        project: String,
    },
    /// The handshake's `Origin` is not in the allow-list (or there are several `Origin`
    /// headers); a page on another site tried to open the WebSocket.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The handshake has no `Origin` header and the server requires one; non-browser clients
    /// must send the `Origin` of the application.
    #[error("an Origin header is required")]
    OriginRequired,
    /// Too many handshakes from the client's address; the client should wait `retry_after`
    /// before trying again (the `Retry-After` header says the same in whole seconds).
    #[error("too many handshakes from this address")]
    RateLimited {
        /// How long until a handshake from this address would be accepted.
        retry_after: Duration,
    },
    /// The request carried no API key; the caller should send `Authorization: Bearer <key>`.
    #[error("no api key in the request")]
    MissingApiKey,
    /// The API key matches none of the configured keys; the caller should check its key.
    #[error("api key not recognised")]
    InvalidApiKey,
    /// Signing a token failed (only [`JwtSigner`](crate::JwtSigner) returns this); the secret or
    /// the claims cannot be encoded, so fix the configuration.
    #[error("could not sign token")]
    Signing(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl AuthError {
    /// The HTTP status of the rejection: `401`; `403` for [`AuthError::Forbidden`] and the
    /// origin refusals; `429` for [`AuthError::RateLimited`]; `500` for [`AuthError::Signing`].
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden { .. } | Self::OriginNotAllowed | Self::OriginRequired => {
                StatusCode::FORBIDDEN
            }
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Signing(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The machine-readable `error` code of the rejection body.
    ///
    /// One of `missing_token`, `invalid_token`, `forbidden`, `origin_not_allowed`,
    /// `rate_limited`, `missing_api_key`, `invalid_api_key`, `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Forbidden { .. } => "forbidden",
            Self::OriginNotAllowed | Self::OriginRequired => "origin_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidApiKey => "invalid_api_key",
            Self::Signing(_) => "internal",
            Self::TokenTooLarge
            | Self::Malformed
            | Self::AlgorithmNotAllowed
            | Self::UnknownKey
            | Self::MissingKeyId
            | Self::CriticalHeader
            | Self::BadSignature
            | Self::Expired
            | Self::NotYetValid
            | Self::WrongIssuer
            | Self::WrongAudience
            | Self::MissingClaim(_)
            | Self::InvalidGrants(_) => "invalid_token",
        }
    }

    /// Whether the client presented a token that failed verification (`401 invalid_token`).
    pub fn is_invalid_token(&self) -> bool {
        self.code() == "invalid_token"
    }

    /// Maps a `jsonwebtoken` failure onto the reason we report.
    pub(crate) fn from_jwt(err: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match err.kind() {
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::MissingAlgorithm => Self::AlgorithmNotAllowed,
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "iss" => Self::WrongIssuer,
                "aud" => Self::WrongAudience,
                "exp" => Self::MissingClaim("exp"),
                "nbf" => Self::MissingClaim("nbf"),
                "sub" => Self::MissingClaim("sub"),
                _ => Self::Malformed,
            },
            _ => Self::Malformed,
        }
    }
}

/// Why a layer, a [`JwtVerifier`](crate::JwtVerifier) or a [`JwtSigner`](crate::JwtSigner)
/// could not be built from its configuration.
///
/// The text never contains key material; it names the entry and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A configured key is empty; remove it or give it a value.
    #[error("api key #{index} is empty")]
    EmptyApiKey {
        /// Position of the key in the configured list, from 0.
        index: usize,
    },
    /// A `sha256:` key is not followed by exactly 64 hex digits; re-hash the key with
    /// `printf %s "$KEY" | sha256sum`.
    #[error("api key #{index} starts with `sha256:` but is not followed by 64 hex digits")]
    BadApiKeyHash {
        /// Position of the key in the configured list, from 0.
        index: usize,
    },
    /// A public key is not a PEM public key of a supported type; give an RSA (2048 bits or
    /// more), P-256 or Ed25519 public key as `-----BEGIN PUBLIC KEY-----` (or PKCS#1
    /// `-----BEGIN RSA PUBLIC KEY-----`).
    #[error("not a supported public key: {0}")]
    PublicKey(&'static str),
    /// A private key is not a PEM private key of a supported type; give an RSA (2048 bits or
    /// more), P-256 or Ed25519 key in PKCS#8 (`-----BEGIN PRIVATE KEY-----`), or RSA PKCS#1 /
    /// SEC1 EC.
    #[error("not a supported private key: {0}")]
    PrivateKey(&'static str),
    /// The JWKS document is not JSON of the shape `{"keys": [...]}`.
    #[error("not a JWKS document")]
    Jwks(#[source] serde_json::Error),
    /// A key of the JWKS is unusable: its parameters are broken or contradict its `alg`.
    #[error("JWKS key #{index}: {reason}")]
    JwksKey {
        /// Position of the key in the `keys` array, from 0.
        index: usize,
        /// What is wrong with it.
        reason: String,
        /// The parser's error, when one said what is wrong (base64, RSA, P-256, Ed25519).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The JWKS holds no key this verifier can use (RS256, ES256 or EdDSA signing keys).
    #[error("the JWKS holds no RS256, ES256 or EdDSA signing key")]
    NoUsableJwk,
    /// Two asymmetric keys carry the same `kid`, so a token's `kid` cannot choose between them.
    #[error("two keys have the kid {0:?}")]
    DuplicateKeyId(String),
    /// The algorithm asked for does not fit the key (an HS256 secret cannot sign RS256 tokens).
    #[error("algorithm {requested:?} does not fit a {key} key")]
    AlgorithmMismatch {
        /// The algorithm asked for.
        requested: jsonwebtoken::Algorithm,
        /// The kind of key given.
        key: &'static str,
    },
    /// An allowed origin cannot be parsed; write it as `https://app.example.com`,
    /// `https://*.example.com` or `*.example.com`.
    #[error("allowed origin {pattern:?}: {reason}")]
    OriginPattern {
        /// The configured entry.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A trusted proxy is neither an IP address nor a CIDR range like `10.0.0.0/8`.
    #[error("trusted proxy {0:?} is not an IP address or a CIDR range")]
    TrustedProxy(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let errors = [
            AuthError::MissingToken,
            AuthError::TokenTooLarge,
            AuthError::Malformed,
            AuthError::AlgorithmNotAllowed,
            AuthError::UnknownKey,
            AuthError::MissingKeyId,
            AuthError::CriticalHeader,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::MissingClaim("exp"),
            AuthError::Forbidden {
                project: "p".to_owned(),
            },
            AuthError::OriginNotAllowed,
            AuthError::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            AuthError::MissingApiKey,
            AuthError::InvalidApiKey,
        ];
        for err in errors {
            let msg = err.to_string();
            assert!(!msg.ends_with('.'), "{msg}");
            assert!(msg.starts_with(|c: char| c.is_lowercase()), "{msg}");
        }
        let cfg = ConfigError::BadApiKeyHash { index: 1 }.to_string();
        assert!(!cfg.ends_with('.'));
        let cfg = ConfigError::PublicKey("a private key").to_string();
        assert!(cfg.starts_with("not a supported public key"), "{cfg}");
    }

    #[test]
    fn codes_and_statuses() {
        assert_eq!(AuthError::MissingToken.code(), "missing_token");
        assert_eq!(AuthError::MissingToken.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(AuthError::Expired.code(), "invalid_token");
        assert!(AuthError::Expired.is_invalid_token());
        let forbidden = AuthError::Forbidden {
            project: "p".to_owned(),
        };
        assert_eq!(forbidden.code(), "forbidden");
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(AuthError::InvalidApiKey.code(), "invalid_api_key");
        assert_eq!(AuthError::MissingKeyId.code(), "invalid_token");
        assert_eq!(AuthError::OriginRequired.code(), "origin_not_allowed");
        assert_eq!(AuthError::OriginNotAllowed.status(), StatusCode::FORBIDDEN);
        let limited = AuthError::RateLimited {
            retry_after: Duration::from_secs(2),
        };
        assert_eq!(limited.code(), "rate_limited");
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
