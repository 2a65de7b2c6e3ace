//! `GET /ws/projects/{project}`: the checks of SPEC §3 in order, then the upgrade.
//!
//! The Origin check and the rate limit run in front of the router ([`guard`]); the token is
//! checked by the router's `JwtAuth`, with the keys of [`token_keys`]; a request the rate limit only
//! marked is refused here, after authentication.

pub mod guard;
pub mod token_keys;

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tower::Service;
use ws_auth::{Claims, JwtAuth, ProjectScope, RateLimited};
use ws_core::{ProjectId, UserId};
use ws_transport::{Admitted, RemoteAddr, SharedHub, Upgrader, json_error};

use crate::routes::{Body, call};

/// Runs the handshake of one WebSocket request for `project` (already validated).
pub(crate) async fn handshake(
    auth: &JwtAuth<UpgradeHandler>,
    hub: &SharedHub,
    project: ProjectId,
    mut req: Request<Incoming>,
) -> Response<Body> {
    if let Err(refusal) = Upgrader::check(&req) {
        return refusal;
    }
    if hub.is_draining() {
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
    call(auth.clone(), req).await
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
