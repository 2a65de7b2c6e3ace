//! `GET /ws/projects/{project}`: the checks of SPEC §3 in order, then the upgrade.
//!
//! The router parses the path and the project once and hands the request to
//! `WebSocketRoute::handshake`, which runs the route's own layer stack. For a request that
//! fails several checks, the public contract is the first failure (docs/security.md):
//!
//! 1. not a WebSocket upgrade, bad version or key → `426`/`400` ([`Upgrader::check`]);
//! 2. the server is draining → `503 draining` with `Retry-After` (the one draining check
//!    of a handshake in this crate);
//! 3. the client's address is set, from `X-Forwarded-For` behind a trusted proxy
//!    ([`SetClientIp`]);
//! 4. `Origin` not allowed → `403 origin_not_allowed` ([`CheckOrigin`]);
//! 5. the request counts against its client's bucket ([`HandshakeRateLimit`], deferred):
//!    over the limit it is only marked, unless it is a whole burst beyond, then `429` at
//!    once — a flood never reaches the signature check (docs/decisions.md);
//! 6. no token, bad token, wrong project → `401`/`401`/`403` ([`JwtAuth`], with the keys of
//!    [`token_keys`]);
//! 7. marked over the limit → `429` with `Retry-After` (`UpgradeHandler`);
//! 8. a bad `since`/`epoch` query → `400 invalid_query`, then the `101` (`UpgradeHandler`).
//!
//! [`SetClientIp`]: ws_auth::SetClientIp
//! [`CheckOrigin`]: ws_auth::CheckOrigin
//! [`HandshakeRateLimit`]: ws_auth::HandshakeRateLimit
//! [`JwtAuth`]: ws_auth::JwtAuth

pub mod token_keys;

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tower::util::Either;
use tower::{Service, ServiceBuilder};
use ws_auth::{
    CheckOrigin, Claims, HandshakeRateLimit, JwtAuth, JwtAuthLayer, ProjectScope, RateLimited,
    SetClientIp, SharedVerifier,
};
use ws_core::{ProjectId, UserId};
use ws_transport::{Admitted, RemoteAddr, SharedHub, Upgrader, json_error};

use crate::config::Settings;
use crate::http::{Body, call};

/// Steps 3 to 8 of the handshake, outermost first.
type Stack = SetClientIp<
    CheckOrigin<Either<HandshakeRateLimit<JwtAuth<UpgradeHandler>>, JwtAuth<UpgradeHandler>>>,
>;

/// The WebSocket route: the checks before any layer, then the layer stack.
#[derive(Clone, Debug)]
pub(crate) struct WebSocketRoute {
    hub: SharedHub,
    stack: Stack,
}

impl WebSocketRoute {
    /// The route `[auth]` and `limits.handshake_rate_per_ip` describe, verifying tokens with
    /// `verifier`.
    ///
    /// # Errors
    ///
    /// An allowed origin or a trusted proxy that cannot be parsed (configuration validation
    /// reports those first).
    pub(crate) fn new(
        settings: &Settings,
        upgrader: Upgrader,
        verifier: SharedVerifier,
    ) -> anyhow::Result<Self> {
        let auth = &settings.auth;
        let jwt = JwtAuthLayer::new(verifier).allow_query_token(auth.allow_query_token);
        let leeway = auth.enforce_expiry.then_some(auth.leeway);
        let hub = upgrader.hub().clone();
        let stack = ServiceBuilder::new()
            .layer(settings.client_ip_layer()?)
            .layer(settings.origin_layer()?)
            .option_layer(settings.handshake_rate_limit_layer())
            .layer(jwt)
            .service(UpgradeHandler::new(upgrader, leeway));
        Ok(Self { hub, stack })
    }

    /// Runs the handshake of one request for `project`, which the router parsed from the path
    /// of a `GET`.
    pub(crate) async fn handshake(
        &self,
        project: ProjectId,
        mut req: Request<Incoming>,
    ) -> Response<Body> {
        if let Err(refusal) = Upgrader::check(&req) {
            return refusal;
        }
        if self.hub.is_draining() {
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "the server is shutting down; reconnect to another node",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        req.extensions_mut()
            .insert(ProjectScope(project.to_string()));
        req.extensions_mut().insert(project);
        call(self.stack.clone(), req).await
    }
}

/// The end of the WebSocket route: the request is authenticated and scoped.
#[derive(Clone, Debug)]
pub(crate) struct UpgradeHandler {
    upgrader: Upgrader,
    /// `Some(leeway)` when `exp` is enforced on open connections.
    expiry_leeway: Option<Duration>,
}

impl UpgradeHandler {
    pub(crate) fn new(upgrader: Upgrader, expiry_leeway: Option<Duration>) -> Self {
        Self {
            upgrader,
            expiry_leeway,
        }
    }
}

impl Service<Request<Incoming>> for UpgradeHandler {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        // SPEC §3 step 6: over the handshake rate, answered after authentication.
        if let Some(limited) = req.extensions().get::<RateLimited>() {
            return std::future::ready(Ok(limited.response()));
        }
        let claims = req.extensions().get::<Claims>().cloned();
        let project = req.extensions().get::<ProjectId>().cloned();
        let (Some(claims), Some(project)) = (claims, project) else {
            // Only reachable by wiring the router wrong: say so instead of panicking.
            return std::future::ready(Ok(json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "request reached the upgrade unauthenticated",
            )));
        };
        let since = match recovery_query(req.uri().query().unwrap_or("")) {
            Ok(since) => since,
            Err(message) => {
                return std::future::ready(Ok(json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    message,
                )));
            }
        };
        // An `exp` (plus leeway) beyond what the clock can hold never passes: no deadline,
        // rather than the panic of `SystemTime + Duration` on a validly signed token.
        let expires_at: Option<SystemTime> = self
            .expiry_leeway
            .and_then(|leeway| claims.expires_at()?.checked_add(leeway));
        let who = Admitted {
            user: UserId::new(claims.sub),
            project,
            expires_at,
            since,
            remote: req.extensions().get::<RemoteAddr>().map(|r| r.0),
        };
        std::future::ready(Ok(self.upgrader.upgrade(req, who)))
    }
}

/// `since=<offset>&epoch=<epoch>` from the query: both, or neither.
fn recovery_query(query: &str) -> Result<Option<(u64, String)>, &'static str> {
    let mut since = None;
    let mut epoch = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("since", v)) => {
                let offset = v.parse::<u64>();
                since = Some(offset.map_err(|_| "since must be an offset (an unsigned integer)")?);
            }
            Some(("epoch", v)) if !v.is_empty() && v.len() <= 128 => epoch = Some(v.to_owned()),
            Some(("epoch", _)) => return Err("epoch must be 1 to 128 characters"),
            _ => {}
        }
    }
    match (since, epoch) {
        (Some(since), Some(epoch)) => Ok(Some((since, epoch))),
        (None, None) => Ok(None),
        _ => Err("since and epoch go together: pass both to recover, or neither"),
    }
}

#[cfg(test)]
mod tests {
    use super::recovery_query;

    #[test]
    fn recovery_needs_both_since_and_epoch() {
        assert_eq!(recovery_query(""), Ok(None));
        assert_eq!(recovery_query("access_token=x"), Ok(None));
        assert_eq!(
            recovery_query("since=5&epoch=e1"),
            Ok(Some((5, "e1".to_owned())))
        );
        assert!(recovery_query("since=5").is_err());
        assert!(recovery_query("epoch=e1").is_err());
        assert!(recovery_query("since=-1&epoch=e").is_err());
        assert!(recovery_query("since=1&epoch=").is_err());
    }
}
