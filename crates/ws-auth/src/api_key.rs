//! The HTTP API middleware: [`ApiKeyLayer`] and [`ApiKey`].

use std::fmt;
use std::sync::Arc;

use http::Request;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use tower::Layer;

use crate::admit::Admit;
use crate::error::{AuthError, ConfigError};
use crate::token::bearer_token;

/// Prefix of a configured key given as the SHA-256 hash of the real key.
const HASH_PREFIX: &str = "sha256:";

type KeyDigest = [u8; 32];

/// Applies [`ApiKey`] to a service: every request must carry `Authorization: Bearer <key>` with
/// one of the configured keys.
///
/// Keys are configured either in plain text or as `sha256:<64 hex digits>`, the SHA-256 of the
/// key (so the configuration file need not hold the key itself; see [`ApiKeyLayer::hash_key`]).
/// Only digests are kept in memory. A presented key is hashed and compared with every
/// configured digest in constant time.
///
/// With no keys configured every request is refused.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt};
/// use ws_auth::ApiKeyLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hashed = ApiKeyLayer::hash_key("backend-key-2");
/// let api = ServiceBuilder::new()
///     .layer(ApiKeyLayer::new(["backend-key-1".to_owned(), hashed])?)
///     .service_fn(|_req: Request<()>| async {
///         Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("accepted")))
///     });
///
/// let req = Request::post("/api/projects/chat/messages")
///     .header("authorization", "Bearer backend-key-2")
///     .body(())?;
/// assert_eq!(api.clone().oneshot(req).await?.status(), StatusCode::OK);
///
/// let req = Request::post("/api/projects/chat/messages").body(())?;
/// assert_eq!(api.oneshot(req).await?.status(), StatusCode::UNAUTHORIZED);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ApiKeyLayer {
    digests: Arc<[KeyDigest]>,
}

impl ApiKeyLayer {
    /// A layer accepting any of `keys`, each plain text or `sha256:<64 hex digits>`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::EmptyApiKey`] for an empty key, [`ConfigError::BadApiKeyHash`] for a
    /// `sha256:` key that is not followed by exactly 64 hex digits.
    pub fn new<I>(keys: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let digests = keys
            .into_iter()
            .enumerate()
            .map(|(index, key)| parse_key(index, key.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            digests: digests.into(),
        })
    }

    /// The `sha256:<hex>` form of `key`, to put in the configuration instead of the key.
    ///
    /// ```
    /// assert_eq!(
    ///     ws_auth::ApiKeyLayer::hash_key("abc"),
    ///     "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    /// );
    /// ```
    pub fn hash_key(key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        let mut out = String::with_capacity(HASH_PREFIX.len() + 64);
        out.push_str(HASH_PREFIX);
        for byte in digest {
            out.push(hex_digit(byte >> 4));
            out.push(hex_digit(byte & 0x0f));
        }
        out
    }
}

impl fmt::Debug for ApiKeyLayer {
    // Digests are not secret in the cryptographic sense, but there is no reason to print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyLayer")
            .field("keys", &self.digests.len())
            .finish()
    }
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKey {
            inner,
            digests: Arc::clone(&self.digests),
        }
    }
}

/// Requires `Authorization: Bearer <key>` with a configured API key.
///
/// No key: `401 missing_api_key`; a key that matches none: `401 invalid_api_key`; both with
/// `WWW-Authenticate: Bearer` and a JSON body. Rejections do not call the inner service.
#[derive(Clone)]
pub struct ApiKey<S> {
    inner: S,
    digests: Arc<[KeyDigest]>,
}

impl<S> ApiKey<S> {
    define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for ApiKey<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("inner", &self.inner)
            .field("keys", &self.digests.len())
            .finish()
    }
}

impl_admitting_service!(ApiKey);

impl<S> Admit for ApiKey<S> {
    fn admit<B>(&self, req: &mut Request<B>) -> Result<(), AuthError> {
        let key = bearer_token(req.headers()).ok_or(AuthError::MissingApiKey)?;
        let presented: KeyDigest = Sha256::digest(key.as_bytes()).into();
        // Compare against every digest without stopping early, so timing reveals neither which
        // key matched nor how much of a digest did.
        let matched = self.digests.iter().fold(Choice::from(0), |acc, digest| {
            acc | digest[..].ct_eq(&presented[..])
        });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(AuthError::InvalidApiKey)
        }
    }
}

fn parse_key(index: usize, key: &str) -> Result<KeyDigest, ConfigError> {
    if key.is_empty() {
        return Err(ConfigError::EmptyApiKey { index });
    }
    let Some(hex) = key.strip_prefix(HASH_PREFIX) else {
        return Ok(Sha256::digest(key.as_bytes()).into());
    };
    let bad = || ConfigError::BadApiKeyHash { index };
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        let high = hex_value(pair[0]).ok_or_else(bad)?;
        let low = hex_value(pair[1]).ok_or_else(bad)?;
        *byte = (high << 4) | low;
    }
    Ok(digest)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::header::AUTHORIZATION;
    use http::{Response, StatusCode};
    use http_body_util::Full;
    use tower::{Service, ServiceBuilder, ServiceExt};

    use super::*;
    use crate::rejection::tests::read;

    type Body = Full<Bytes>;

    async fn send(layer: ApiKeyLayer, auth: Option<&str>) -> Response<Body> {
        let mut builder = Request::post("/api/projects/chat/messages");
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth);
        }
        let mut service =
            ServiceBuilder::new()
                .layer(layer)
                .service_fn(|_req: Request<()>| async {
                    Ok::<_, Infallible>(Response::new(Body::from("ok")))
                });
        service
            .ready()
            .await
            .unwrap()
            .call(builder.body(()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn plain_key() {
        let layer = ApiKeyLayer::new(["k1", "k2"]).unwrap();
        for key in ["k1", "k2"] {
            let res = send(layer.clone(), Some(&format!("Bearer {key}"))).await;
            assert_eq!(res.status(), StatusCode::OK, "{key}");
        }
    }

    #[tokio::test]
    async fn sha256_key() {
        // sha256("abc"), upper-case hex accepted too.
        let layer = ApiKeyLayer::new([
            "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
        ])
        .unwrap();
        let res = send(layer.clone(), Some("Bearer abc")).await;
        assert_eq!(res.status(), StatusCode::OK);
        // The hash itself is not a key.
        let res = send(
            layer,
            Some("Bearer sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"),
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn missing_key() {
        let layer = ApiKeyLayer::new(["k1"]).unwrap();
        for auth in [None, Some("Basic azE6"), Some("Bearer ")] {
            let (status, challenge, json) = read(send(layer.clone(), auth).await).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(challenge.as_deref(), Some("Bearer"));
            assert_eq!(json["error"], "missing_api_key");
        }
    }

    #[tokio::test]
    async fn wrong_key() {
        let layer = ApiKeyLayer::new(["k1", ApiKeyLayer::hash_key("k2").as_str()]).unwrap();
        let (status, challenge, json) = read(send(layer, Some("Bearer wrong-key")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        assert_eq!(json["error"], "invalid_api_key");
        assert!(!json.to_string().contains("wrong-key"));
    }

    #[tokio::test]
    async fn no_keys_refuses_everything() {
        let layer = ApiKeyLayer::new(Vec::<String>::new()).unwrap();
        let (status, _, json) = read(send(layer, Some("Bearer anything")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["error"], "invalid_api_key");
    }

    #[test]
    fn config_errors() {
        assert!(matches!(
            ApiKeyLayer::new(["ok", ""]),
            Err(ConfigError::EmptyApiKey { index: 1 })
        ));
        for bad in [
            "sha256:abc",
            "sha256:",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(
                matches!(
                    ApiKeyLayer::new([bad]),
                    Err(ConfigError::BadApiKeyHash { index: 0 })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn hash_round_trip_and_debug() {
        let layer = ApiKeyLayer::new([ApiKeyLayer::hash_key("secret-key")]).unwrap();
        let digest: KeyDigest = Sha256::digest(b"secret-key").into();
        assert_eq!(&*layer.digests, &[digest]);
        assert_eq!(format!("{layer:?}"), "ApiKeyLayer { keys: 1 }");
    }
}
