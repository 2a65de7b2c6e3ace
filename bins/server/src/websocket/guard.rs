//! The checks of SPEC §3 that come before the token: the `Origin` allow-list and the
//! handshake rate limit, wrapped around the router so that they see WebSocket handshakes only.
//!
//! Order, for a request that fails several checks (the public contract is the first failure):
//!
//! 1. not a WebSocket upgrade, bad version or key → `426`/`400` (the router, unguarded);
//! 2. `Origin` not allowed → `403 origin_not_allowed` ([`CheckOrigin`]);
//! 3. the request counts against its client's bucket ([`HandshakeRateLimit`], deferred):
//!    over the limit it is only marked, unless it is a whole burst beyond, then
//!    `429` at once — a flood never reaches the signature check (docs/decisions.md);
//! 4. no token, bad token, wrong project → `401`/`401`/`403` (the router's [`JwtAuth`]);
//! 5. marked over the limit → `429` with `Retry-After` (the upgrade handler).
//!
//! [`CheckOrigin`]: ws_auth::CheckOrigin
//! [`HandshakeRateLimit`]: ws_auth::HandshakeRateLimit
//! [`JwtAuth`]: ws_auth::JwtAuth

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tower::util::Either;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use ws_auth::{
    CheckOrigin, CheckOriginLayer, HandshakeRateLimit, HandshakeRateLimitLayer, SetClientIp,
    SetClientIpLayer, TrustedProxies,
};
use ws_core::ProjectId;
use ws_transport::{RemoteAddr, SharedHub, Upgrader};

use crate::config::Settings;
use crate::routes::Body;

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Applies [`HandshakeGuard`].
#[derive(Clone, Debug)]
pub struct HandshakeGuardLayer {
    client_ip: SetClientIpLayer,
    origin: CheckOriginLayer,
    rate_limit: Option<HandshakeRateLimitLayer>,
    hub: SharedHub,
}

impl HandshakeGuardLayer {
    /// The guard `[auth]` and `limits.handshake_rate_per_ip` describe (0: no rate limit).
    ///
    /// # Errors
    ///
    /// An allowed origin or a trusted proxy that cannot be parsed (configuration validation
    /// reports those first).
    pub fn new(settings: &Settings, hub: SharedHub) -> anyhow::Result<Self> {
        let auth = &settings.auth;
        let trusted = TrustedProxies::parse(&auth.trusted_proxies)?;
        let client_ip = SetClientIpLayer::new(|ext| ext.get::<RemoteAddr>().map(|a| a.0.ip()))
            .trusted_proxies(trusted);
        let origin =
            CheckOriginLayer::allow(&auth.allowed_origins)?.require_origin(auth.require_origin);
        let rate = settings.limits.handshake_rate_per_ip;
        let rate_limit =
            (rate > 0).then(|| HandshakeRateLimitLayer::new(rate).defer_rejection(true));
        Ok(Self {
            client_ip,
            origin,
            rate_limit,
            hub,
        })
    }
}

type Guarded<S> = SetClientIp<CheckOrigin<Either<HandshakeRateLimit<S>, S>>>;

impl<S: Clone> Layer<S> for HandshakeGuardLayer {
    type Service = HandshakeGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let guarded = ServiceBuilder::new()
            .layer(self.client_ip.clone())
            .layer(self.origin.clone())
            .option_layer(self.rate_limit.clone())
            .service(inner.clone());
        HandshakeGuard {
            inner,
            guarded,
            hub: self.hub.clone(),
        }
    }
}

/// Sends WebSocket handshakes through the Origin check and the rate limit before `S`, and every
/// other request straight to `S`.
#[derive(Clone, Debug)]
pub struct HandshakeGuard<S> {
    inner: S,
    guarded: Guarded<S>,
    hub: SharedHub,
}

impl<S> Service<Request<Incoming>> for HandshakeGuard<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call drives a clone to readiness with `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> BoxFuture {
        // While draining the router answers 503 before anything else.
        if is_handshake(&req) && !self.hub.is_draining() {
            Box::pin(self.guarded.clone().oneshot(req))
        } else {
            Box::pin(self.inner.clone().oneshot(req))
        }
    }
}

/// Whether the router will treat `req` as a WebSocket handshake that passes SPEC §3 step 1:
/// `GET /ws/projects/{valid id}` with a usable upgrade.
fn is_handshake<B>(req: &Request<B>) -> bool {
    let segments: Vec<&str> = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    req.method() == Method::GET
        && matches!(segments.as_slice(), ["ws", "projects", project] if ProjectId::parse(project).is_ok())
        && Upgrader::check(req).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str, upgrade: bool) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(path);
        if upgrade {
            builder = builder
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_valid_handshakes_are_guarded() {
        assert!(is_handshake(&request(
            Method::GET,
            "/ws/projects/chat",
            true
        )));
        assert!(is_handshake(&request(
            Method::GET,
            "/ws/projects/chat?since=1",
            true
        )));
        assert!(!is_handshake(&request(
            Method::GET,
            "/ws/projects/chat",
            false
        )));
        assert!(!is_handshake(&request(
            Method::POST,
            "/ws/projects/chat",
            true
        )));
        assert!(!is_handshake(&request(
            Method::GET,
            "/ws/projects/bad%20id",
            true
        )));
        assert!(!is_handshake(&request(
            Method::GET,
            "/ws/projects/a/b",
            true
        )));
        assert!(!is_handshake(&request(
            Method::GET,
            "/api/projects/chat/messages",
            true
        )));
        assert!(!is_handshake(&request(Method::GET, "/healthz", false)));
    }
}
