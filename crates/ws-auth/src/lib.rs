//! Tower layers that authenticate and admit wshub requests before anything is upgraded.
//!
//! One layer per concern, tower-http style (a `Layer` holding a small configuration, a
//! `Service` doing the work in `call`, rejections answered at once without calling the inner
//! service):
//!
//! | layer | service | concern | refuses with |
//! |---|---|---|---|
//! | [`CheckOriginLayer`] | [`CheckOrigin`] | `Origin` allow-list (cross-site WebSocket hijacking) | `403 origin_not_allowed` |
//! | [`SetClientIpLayer`] | [`SetClientIp`] | who the client is: the peer, or `X-Forwarded-For` from [trusted proxies](TrustedProxies) | — (inserts [`ClientIp`]) |
//! | [`HandshakeRateLimitLayer`] | [`HandshakeRateLimit`] | handshakes per second per client address | `429 rate_limited` + `Retry-After` |
//! | [`JwtAuthLayer`] | [`JwtAuth`] | the user's JWT: carriers, signature, claims, project scope | `401 missing_token` / `401 invalid_token` / `403 forbidden` |
//! | [`ApiKeyLayer`] | [`ApiKey`] | static API keys for the HTTP API | `401 missing_api_key` / `401 invalid_api_key` |
//!
//! [`JwtAuth`] verifies with a [`JwtVerifier`] (HS256 secrets, RS256/ES256/EdDSA public keys in
//! PEM, JWKS documents; several at once, chosen by `kid`) behind a [`SharedVerifier`], whose
//! keys can be replaced while the server runs (a reload on SIGHUP). On success it inserts
//! [`Claims`] (for the upgrade handler) and [`TokenCarrier`] (where the token was found, for
//! logs and metrics) into the request extensions.
//! Failures are answered with a JSON body `{"error": code, "message": text}`
//! ([`error_response`]).
//!
//! What it never does: it performs no IO, spawns nothing and needs no runtime (every check is
//! CPU-only and runs synchronously in `call`; key files are read by the caller and handed over
//! as bytes); it never upgrades a connection; it never fetches keys over the network; it never
//! reads the transport's types (the client address comes through a function the caller gives
//! [`SetClientIpLayer`]); and it never logs or echoes a token or an API key — rejections are
//! logged at `debug` with the reason only.
//!
//! # Token carriers
//!
//! Tried in order, the first one found wins:
//!
//! 1. `Authorization: Bearer <jwt>`;
//! 2. `Sec-WebSocket-Protocol: wshub.v1, wshub.bearer.<jwt>` (browsers cannot set headers).
//!    The entry may come in any position and across several header lines. It is accepted even
//!    without `wshub.v1` beside it; the subprotocol answer is the transport's, from what the
//!    client offered (wshub's transport answers `wshub.v1` when it was offered);
//! 3. the query parameter `access_token=<jwt>`, unless [`JwtAuthLayer::allow_query_token`]
//!    turned it off.
//!
//! Tokens over [`MAX_TOKEN_BYTES`] are refused as `invalid_token` without being parsed.
//!
//! Tokens travel in headers and the URL, so wrap the stack in tower-http's
//! `SetSensitiveRequestHeadersLayer` for `Authorization` and `Sec-WebSocket-Protocol`, and log
//! URIs through [`redact_access_token`].
//!
//! # Rejections
//!
//! | when | status | `error` | `WWW-Authenticate` |
//! |---|---|---|---|
//! | no token | 401 | `missing_token` | `Bearer` |
//! | token fails verification | 401 | `invalid_token` | `Bearer error="invalid_token"` |
//! | token does not grant the [`ProjectScope`] | 403 | `forbidden` | `Bearer error="insufficient_scope"` |
//! | `Origin` not allowed, or missing when required | 403 | `origin_not_allowed` | — |
//! | too many handshakes from the client's address | 429 | `rate_limited` | — (`Retry-After: <s>`) |
//! | no API key | 401 | `missing_api_key` | `Bearer` |
//! | unknown API key | 401 | `invalid_api_key` | `Bearer` |
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//! use ws_auth::{Claims, JwtAuthLayer, JwtSigner, JwtVerifier, ProjectScope, TokenCarrier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two secrets: the current one and the one being rotated out.
//! let verifier = JwtVerifier::hs256(["current-secret", "previous-secret"])
//!     .issuer(Some("my-backend".to_owned()))
//!     .leeway(Duration::from_secs(30));
//!
//! let handshake = ServiceBuilder::new()
//!     // The router scopes the request to the project in its path...
//!     .map_request(|mut req: Request<()>| {
//!         req.extensions_mut().insert(ProjectScope("chat".to_owned()));
//!         req
//!     })
//!     // ...then the token is checked against it.
//!     .layer(JwtAuthLayer::new(verifier).allow_query_token(true))
//!     .service_fn(|req: Request<()>| async move {
//!         let claims = req.extensions().get::<Claims>().expect("inserted by JwtAuth");
//!         let carrier = req.extensions().get::<TokenCarrier>().expect("inserted by JwtAuth");
//!         assert_eq!(*carrier, TokenCarrier::AuthorizationHeader);
//!         Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(format!("hello {}", claims.sub))))
//!     });
//!
//! // What the application's backend would mint.
//! let mut claims = Claims::new("alice", ["chat"], Duration::from_secs(3600));
//! claims.iss = Some("my-backend".to_owned());
//! let token = JwtSigner::hs256("previous-secret").sign(&claims)?;
//!
//! let req = Request::get("/ws/projects/chat")
//!     .header("authorization", format!("Bearer {token}"))
//!     .body(())?;
//! let res = handshake.clone().oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//!
//! let res = handshake.oneshot(Request::get("/ws/projects/chat").body(())?).await?;
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(res.headers()["www-authenticate"], "Bearer");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
mod macros;

mod admit;
mod api_key;
mod claims;
mod client_ip;
mod error;
mod future;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz;
mod jwt_auth;
mod key_files;
mod origin;
mod rate_limit;
mod rejection;
mod signer;
mod token;
mod verifier;

pub use api_key::{ApiKey, ApiKeyLayer};
pub use claims::{Claims, ProjectScope, TokenCarrier};
pub use client_ip::{
    ClientIp, PeerIpFn, SetClientIp, SetClientIpLayer, TrustedProxies, X_FORWARDED_FOR, client_ip,
};
pub use error::{AuthError, ConfigError};
pub use future::ResponseFuture;
pub use jsonwebtoken::Algorithm;
pub use jwt_auth::{JwtAuth, JwtAuthLayer};
pub use origin::{CheckOrigin, CheckOriginLayer};
pub use rate_limit::{
    Decision, HandshakeRateLimit, HandshakeRateLimitLayer, RateLimited, RateLimiter,
};
pub use rejection::{error_response, json_error};
pub use signer::JwtSigner;
pub use token::{
    ACCESS_TOKEN_PARAM, BEARER_SUBPROTOCOL_PREFIX, MAX_TOKEN_BYTES, redact_access_token,
};
pub use verifier::{DEFAULT_LEEWAY, JwtVerifier, SharedVerifier};
