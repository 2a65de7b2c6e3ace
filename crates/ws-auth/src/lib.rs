//! Tower layers that authenticate wshub requests before anything is upgraded.
//!
//! - [`JwtAuthLayer`] / [`JwtAuth`] guard the WebSocket handshake (`GET /ws/projects/{project}`):
//!   they find the user's JWT, verify it with a [`JwtVerifier`], check the project when the
//!   router scoped the request with [`ProjectScope`], and insert [`Claims`] and
//!   [`TokenCarrier`] into the request extensions for the upgrade handler.
//! - [`ApiKeyLayer`] / [`ApiKey`] guard the HTTP API with static keys
//!   (`Authorization: Bearer <key>`).
//! - Failures are answered at once with `401`/`403` and a JSON body
//!   `{"error": code, "message": text}` ([`error_response`]); [`json_error`] builds the same
//!   shape for the server's other errors.
//!
//! What it never does: it performs no IO, spawns nothing and needs no runtime (verification is
//! CPU-only and runs synchronously in `call`); it never upgrades a connection, checks `Origin`
//! or rate-limits (those are the server's and `ws-transport`'s); it never fetches keys over
//! the network; and it never logs or echoes a token or an API key — rejections are logged at
//! `debug` with the reason only.
//!
//! # Token carriers
//!
//! Tried in order, the first one found wins:
//!
//! 1. `Authorization: Bearer <jwt>`;
//! 2. `Sec-WebSocket-Protocol: wshub.v1, wshub.bearer.<jwt>` (browsers cannot set headers).
//!    The entry may come in any position and across several header lines. It is accepted even
//!    without `wshub.v1` beside it, and the handler answers `wshub.v1` either way (check
//!    [`TokenCarrier::requires_subprotocol_answer`] or [`offers_subprotocol`]);
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

mod api_key;
mod claims;
mod error;
mod jwt_auth;
mod rejection;
mod token;
mod verifier;

pub use api_key::{ApiKey, ApiKeyLayer};
pub use claims::{Claims, ProjectScope, TokenCarrier};
pub use error::{AuthError, ConfigError};
pub use jwt_auth::{JwtAuth, JwtAuthLayer, ResponseFuture};
pub use rejection::{error_response, json_error};
pub use token::{
    ACCESS_TOKEN_PARAM, BEARER_SUBPROTOCOL_PREFIX, MAX_TOKEN_BYTES, SUBPROTOCOL,
    offers_subprotocol, redact_access_token,
};
pub use verifier::{DEFAULT_LEEWAY, JwtSigner, JwtVerifier};
