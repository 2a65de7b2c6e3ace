//! Why a request was refused, and why a configuration was refused.

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
    /// The token is valid but its `projects` claim does not include the requested project; the
    /// client should not retry with the same token.
    #[error("token does not grant access to project {project}")]
    Forbidden {
        /// The project the request was scoped to.
        project: String,
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
    /// The HTTP status of the rejection: `401`, or `403` for [`AuthError::Forbidden`], or `500`
    /// for [`AuthError::Signing`].
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Signing(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The machine-readable `error` code of the rejection body.
    ///
    /// One of `missing_token`, `invalid_token`, `forbidden`, `missing_api_key`,
    /// `invalid_api_key`, `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Forbidden { .. } => "forbidden",
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidApiKey => "invalid_api_key",
            Self::Signing(_) => "internal",
            Self::TokenTooLarge
            | Self::Malformed
            | Self::AlgorithmNotAllowed
            | Self::UnknownKey
            | Self::CriticalHeader
            | Self::BadSignature
            | Self::Expired
            | Self::NotYetValid
            | Self::WrongIssuer
            | Self::WrongAudience
            | Self::MissingClaim(_) => "invalid_token",
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

/// Why an [`ApiKeyLayer`](crate::ApiKeyLayer) could not be built from its configured keys.
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
    }
}
