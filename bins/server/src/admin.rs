//! `/api/admin/...`: operator actions on live connections, behind API keys.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tower::Service;
use ws_core::{Close, CloseCode, ProjectId, UserId};
use ws_transport::SharedHub;

use crate::routes::{Body, json, not_found};

/// `/api/admin/...`: operator actions on live connections.
#[derive(Clone, Debug)]
pub(crate) struct AdminHandler {
    hub: SharedHub,
}

impl AdminHandler {
    pub(crate) fn new(hub: SharedHub) -> Self {
        Self { hub }
    }
}

impl Service<Request<Incoming>> for AdminHandler {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let path = req.uri().path();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let response = match (req.method(), &segments[..]) {
            (&Method::POST, ["api", "admin", "projects", project, "close"]) => {
                match ProjectId::parse(project) {
                    Ok(project) => {
                        let close = Close::new(CloseCode::NORMAL, "project closed");
                        let closed = self.hub.close_project(&project, &close);
                        json(StatusCode::OK, &format!(r#"{{"closed":{closed}}}"#))
                    }
                    Err(_) => not_found(),
                }
            }
            (&Method::GET, ["api", "admin", "stats"]) => json(
                StatusCode::OK,
                &format!(r#"{{"connections":{}}}"#, self.hub.connections()),
            ),
            (&Method::POST, ["api", "admin", "users", user, "disconnect"]) => {
                let close = Close::new(CloseCode::ACCESS_REVOKED, "access revoked");
                let closed = self.hub.close_user(&UserId::new(*user), &close);
                json(StatusCode::OK, &format!(r#"{{"closed":{closed}}}"#))
            }
            _ => not_found(),
        };
        std::future::ready(Ok(response))
    }
}
