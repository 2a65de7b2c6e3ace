//! `GET /ws/projects/{project}` (v1), `GET /ws` (v2) and `GET /ws/check[/projects/{p}]`:
//! the checks of SPEC §3 in order, then the upgrade (or, for a check, `204`).
//!
//! The router parses the path and the project once and hands the request to
//! `WebSocketRoute::handshake` with its `Handshake`, which runs the route's own layer
//! stack. For a request that fails several checks, the public contract is the first failure
//! (docs/security.md):
//!
//! 1. not a WebSocket upgrade, bad version or key → `426`/`400` ([`Upgrader::check`]; not
//!    for a check, which is a plain `GET`);
//! 2. the server is draining → `503 draining` with `Retry-After` (the one draining check
//!    of a handshake in this crate);
//! 3. the client's address is set, from `X-Forwarded-For` behind a trusted proxy
//!    ([`SetClientIp`]);
//! 4. `Origin` not allowed → `403 origin_not_allowed` ([`CheckOrigin`]);
//! 5. the request counts against its client's bucket ([`HandshakeRateLimit`], deferred):
//!    over the limit it is only marked, unless it is a whole burst beyond, then `429` at
//!    once — a flood never reaches the signature check (docs/decisions.md);
//! 6. no token, bad token (a `caps` claim of the wrong shape included), wrong project →
//!    `401`/`401`/`403` ([`JwtAuth`], with the keys of [`token_keys`]); v2 has no project
//!    here: a valid token is enough to connect;
//! 7. marked over the limit → `429` with `Retry-After` (`UpgradeHandler`);
//! 8. a bad `since`/`epoch` query → `400 invalid_query`; on v2, a bad `subscribe` query →
//!    `400 invalid_query`, a listed project the token may not subscribe to → `403 forbidden`
//!    naming it; then the `101` (`UpgradeHandler`), or `204` for a check.
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
use ws_core::envelope::v2::{MAX_LAST, Recover, Target};
use ws_core::sse::EventId;
use ws_core::{Operation, Ops, ProjectId, UserId};
use ws_transport::{
    Admitted, AdmittedSession, Reauthorize, RemoteAddr, Renewed, SharedHub, Upgrader, json_error,
};

use crate::config::Settings;
use crate::http::{Body, call, percent_decode};

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
            .service(UpgradeHandler::new(
                upgrader,
                leeway,
                settings.limits.max_subscriptions,
            ));
        Ok(Self { hub, stack })
    }

    /// Runs the handshake of one request for `target`, which the router parsed from the path
    /// of a `GET`.
    pub(crate) async fn handshake(
        &self,
        target: Handshake,
        mut req: Request<Incoming>,
    ) -> Response<Body> {
        if target.is_upgrade()
            && let Err(refusal) = Upgrader::check(&req)
        {
            return refusal.map(Body::from);
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
        if let Handshake::V1(project) | Handshake::CheckV1(project) | Handshake::Sse(project) =
            &target
        {
            req.extensions_mut()
                .insert(ProjectScope(project.to_string()));
        }
        req.extensions_mut().insert(target);
        call(self.stack.clone(), req).await
    }
}

/// What a request on the WebSocket routes asks for, as the router parsed it.
#[derive(Debug, Clone)]
pub(crate) enum Handshake {
    /// `GET /ws/projects/{project}`: a v1 connection.
    V1(ProjectId),
    /// `GET /ws`: a v2 connection.
    V2,
    /// `GET /ws/check/projects/{project}`: would a v1 handshake pass?
    CheckV1(ProjectId),
    /// `GET /ws/check`: would a v2 handshake pass?
    CheckV2,
    /// `GET /sse/projects/{project}`: a server-sent event stream (SPEC §14), checked as a
    /// v1 handshake but for the upgrade.
    Sse(ProjectId),
}

impl Handshake {
    /// Whether the request must be a WebSocket upgrade (SPEC §3 step 1).
    fn is_upgrade(&self) -> bool {
        matches!(self, Self::V1(_) | Self::V2)
    }
}

/// The end of the WebSocket route: the request is authenticated and scoped.
#[derive(Clone, Debug)]
pub(crate) struct UpgradeHandler {
    upgrader: Upgrader,
    /// `Some(leeway)` when `exp` is enforced on open connections.
    expiry_leeway: Option<Duration>,
    /// `limits.max_subscriptions`: the most a v2 query may list.
    max_subscriptions: usize,
}

impl UpgradeHandler {
    pub(crate) fn new(
        upgrader: Upgrader,
        expiry_leeway: Option<Duration>,
        max_subscriptions: usize,
    ) -> Self {
        Self {
            upgrader,
            expiry_leeway,
            max_subscriptions,
        }
    }
}

/// Verifies the token of a v2 `refresh` as the handshake verified the first one: the same
/// keys (reloaded on SIGHUP), the same claims checks, the same grants.
#[derive(Debug)]
pub(crate) struct TokenRenewal {
    verifier: SharedVerifier,
    /// `Some(leeway)` when `exp` is enforced on open connections.
    expiry_leeway: Option<Duration>,
}

impl TokenRenewal {
    pub(crate) fn new(verifier: SharedVerifier, expiry_leeway: Option<Duration>) -> Self {
        Self {
            verifier,
            expiry_leeway,
        }
    }
}

impl Reauthorize for TokenRenewal {
    fn reauthorize(&self, token: &str) -> Result<Renewed, String> {
        let claims = self
            .verifier
            .current()
            .verify(token)
            .map_err(|e| e.to_string())?;
        let grants = claims
            .grants()
            .map_err(|e| format!("invalid caps claim: {e}"))?;
        Ok(Renewed {
            expires_at: self
                .expiry_leeway
                .and_then(|leeway| claims.expires_at()?.checked_add(leeway)),
            exp: claims.exp,
            user: UserId::new(claims.sub),
            grants,
        })
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
        let target = req.extensions().get::<Handshake>().cloned();
        let (Some(claims), Some(target)) = (claims, target) else {
            // Only reachable by wiring the router wrong: say so instead of panicking.
            return std::future::ready(Ok(json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "request reached the upgrade unauthenticated",
            )));
        };
        let query = req.uri().query().unwrap_or("");
        // An `exp` (plus leeway) beyond what the clock can hold never passes: no deadline,
        // rather than the panic of `SystemTime + Duration` on a validly signed token.
        let expires_at: Option<SystemTime> = self
            .expiry_leeway
            .and_then(|leeway| claims.expires_at()?.checked_add(leeway));
        let remote = req.extensions().get::<RemoteAddr>().map(|r| r.0);
        let response = match target {
            Handshake::V1(project) => match recovery_query(query) {
                Ok(since) => {
                    // JwtAuth checked `subscribe` (and the shape of `caps`); the other
                    // operations are the connection's to check.
                    let ops = match claims.caps {
                        None => Ops::ALL,
                        Some(_) => claims.grants().map_or(Ops::NONE, |g| g.ops(&project)),
                    };
                    let who = Admitted {
                        user: UserId::new(claims.sub),
                        project,
                        expires_at,
                        since,
                        remote,
                        ops,
                    };
                    self.upgrader.upgrade(req, who).map(Body::from)
                }
                Err(message) => invalid_query(message),
            },
            Handshake::Sse(project) => match last_event_id(&req) {
                Ok(since) => {
                    let who = Admitted {
                        user: UserId::new(claims.sub),
                        project,
                        expires_at,
                        since,
                        remote,
                        // A stream only receives: subscribe is all it does, and JwtAuth
                        // checked it.
                        ops: Ops::NONE,
                    };
                    self.upgrader.event_stream(who)
                }
                Err(message) => invalid_query(&message),
            },
            Handshake::CheckV1(_) => match recovery_query(query) {
                Ok(_) => no_content(),
                Err(message) => invalid_query(message),
            },
            Handshake::V2 | Handshake::CheckV2 => {
                let subscribe = match session_query(query, self.max_subscriptions) {
                    Ok(subscribe) => subscribe,
                    Err(message) => return std::future::ready(Ok(invalid_query(&message))),
                };
                // JwtAuth refused a `caps` claim of the wrong shape already.
                let grants = match claims.grants() {
                    Ok(grants) => grants,
                    Err(e) => {
                        let message = format!("invalid caps claim: {e}");
                        return std::future::ready(Ok(json_error(
                            StatusCode::UNAUTHORIZED,
                            "invalid_token",
                            &message,
                        )));
                    }
                };
                let session = ws_core::Session::new(UserId::new(claims.sub.clone()), grants);
                if let Some((target, _)) = subscribe
                    .iter()
                    .find(|(target, _)| session.check(target, Operation::Subscribe).is_err())
                {
                    let message =
                        format!("the token does not grant subscribe on {}", target.as_str());
                    return std::future::ready(Ok(json_error(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        &message,
                    )));
                }
                if matches!(target, Handshake::CheckV2) {
                    no_content()
                } else {
                    let who = AdmittedSession {
                        user: UserId::new(claims.sub),
                        grants: session.grants().clone(),
                        expires_at,
                        subscribe,
                        remote,
                    };
                    self.upgrader.upgrade_session(req, who).map(Body::from)
                }
            }
        };
        std::future::ready(Ok(response))
    }
}

/// `204`: a check whose handshake would have passed.
fn no_content() -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn invalid_query(message: &str) -> Response<Body> {
    json_error(StatusCode::BAD_REQUEST, "invalid_query", message)
}

/// The v2 query (SPEC §10): `subscribe=p1,p2`, each with its own recovery through
/// `since.<p>=<offset>&epoch.<p>=<epoch>` or `last.<p>=<n>`. Values are percent-decoded
/// strictly; at most `max` subscriptions.
fn session_query(query: &str, max: usize) -> Result<Vec<(Target, Recover)>, String> {
    let mut targets: Vec<Target> = Vec::new();
    let mut since: Vec<(String, u64)> = Vec::new();
    let mut epochs: Vec<(String, String)> = Vec::new();
    let mut last: Vec<(String, u32)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key).map_err(str::to_owned)?;
        let value = percent_decode(value).map_err(str::to_owned)?;
        if key == "subscribe" {
            for name in value.split(',').filter(|n| !n.is_empty()) {
                let target = Target::parse(name)
                    .map_err(|e| format!("subscribe: {name:?} is not a project id: {e}"))?;
                if !targets.contains(&target) {
                    targets.push(target);
                }
            }
        } else if let Some(name) = key.strip_prefix("since.") {
            let offset = value
                .parse()
                .map_err(|_| format!("since.{name} must be an offset (an unsigned integer)"))?;
            since.push((name.to_owned(), offset));
        } else if let Some(name) = key.strip_prefix("epoch.") {
            if value.is_empty() || value.len() > 128 {
                return Err(format!("epoch.{name} must be 1 to 128 characters"));
            }
            epochs.push((name.to_owned(), value));
        } else if let Some(name) = key.strip_prefix("last.") {
            let n: u32 = value
                .parse()
                .ok()
                .filter(|n| *n <= MAX_LAST)
                .ok_or_else(|| format!("last.{name} must be 0 to {MAX_LAST}"))?;
            last.push((name.to_owned(), n));
        }
    }
    if targets.len() > max {
        return Err(format!(
            "at most {max} subscriptions per connection (limits.max_subscriptions)"
        ));
    }
    let recovering = (since.iter().map(|(n, _)| n))
        .chain(epochs.iter().map(|(n, _)| n))
        .chain(last.iter().map(|(n, _)| n));
    for name in recovering {
        if !targets.iter().any(|t| t.as_str() == name) {
            return Err(format!("{name} has a recovery but is not in subscribe"));
        }
    }
    targets
        .into_iter()
        .map(|target| {
            let name = target.as_str();
            let offset = since.iter().find(|(n, _)| n == name).map(|(_, o)| *o);
            let epoch = epochs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| e.clone());
            let recovery = match (offset, epoch, last.iter().find(|(n, _)| n == name)) {
                (None, None, None) => Recover::Latest,
                (Some(offset), Some(epoch), None) => Recover::Since { offset, epoch },
                (None, None, Some((_, n))) => Recover::Last(*n),
                (_, _, Some(_)) => {
                    return Err(format!("{name}: last goes without since and epoch"));
                }
                _ => {
                    return Err(format!(
                        "{name}: since and epoch go together: pass both to recover, or neither"
                    ));
                }
            };
            Ok((target, recovery))
        })
        .collect()
}

/// The position an event stream recovers from (SPEC §14): the `Last-Event-ID` header, or
/// for clients that cannot set it the `last_event_id` query (percent-decoded); the header
/// wins. Either must be `<epoch>:<offset>` exactly ([`EventId`]); an empty header is none,
/// as the SSE spec lets a client reset it.
fn last_event_id<B>(req: &Request<B>) -> Result<Option<(u64, String)>, String> {
    let header = match req.headers().get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| "Last-Event-ID must be <epoch>:<offset>".to_owned())?
                .to_owned(),
        ),
        None => None,
    };
    let query = req.uri().query().unwrap_or("");
    let from_query = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("last_event_id="))
        .next_back()
        .map(|v| percent_decode(v).map_err(|e| format!("last_event_id: {e}")))
        .transpose()?;
    let Some(id) = header.or(from_query).filter(|id| !id.is_empty()) else {
        return Ok(None);
    };
    let id: EventId = id
        .parse()
        .map_err(|e: ws_core::sse::InvalidEventId| e.to_string())?;
    Ok(Some((id.offset, id.epoch)))
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
    use super::{last_event_id, recovery_query};

    fn last(header: Option<&str>, uri: &str) -> Result<Option<(u64, String)>, String> {
        let mut req = http::Request::builder().uri(uri);
        if let Some(h) = header {
            req = req.header("last-event-id", h);
        }
        last_event_id(&req.body(()).unwrap())
    }

    #[test]
    fn last_event_id_from_the_header_or_the_query() {
        assert_eq!(last(None, "/sse/projects/p"), Ok(None));
        assert_eq!(last(Some(""), "/sse/projects/p"), Ok(None));
        assert_eq!(
            last(Some("e1:5"), "/sse/projects/p?last_event_id=e2:9"),
            Ok(Some((5, "e1".to_owned())))
        );
        assert_eq!(
            last(None, "/sse/projects/p?access_token=t&last_event_id=e%3A1:9"),
            Ok(Some((9, "e:1".to_owned())))
        );
        assert!(last(Some("garbage"), "/sse/projects/p").is_err());
        assert!(last(Some("e:-1"), "/sse/projects/p").is_err());
        assert!(last(None, "/sse/projects/p?last_event_id=e:x").is_err());
        assert!(last(None, "/sse/projects/p?last_event_id=%zz").is_err());
    }

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
