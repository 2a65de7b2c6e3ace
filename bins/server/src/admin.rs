//! `/api/admin/...`: operator actions on live connections, behind API keys.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tower::Service;
use ws_core::{Close, CloseCode, ConnId, ProjectId, UserId};
use ws_transport::SharedHub;
use ws_transport::json_error;

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
            (&Method::GET, ["api", "admin", "projects", project, "connections"]) => {
                match ProjectId::parse(project) {
                    Ok(project) => {
                        let connections: Vec<serde_json::Value> = self
                            .hub
                            .connections_of(&project)
                            .into_iter()
                            .map(|c| {
                                serde_json::json!({
                                    "conn": c.conn.0,
                                    "user": c.user.as_str(),
                                    "age_ms": c.age.as_millis() as u64,
                                    "queue_frames": c.queue.frames,
                                    "queue_bytes": c.queue.bytes,
                                    "remote": c.remote.map(|r| r.to_string()),
                                })
                            })
                            .collect();
                        json(
                            StatusCode::OK,
                            &serde_json::json!({ "connections": connections }).to_string(),
                        )
                    }
                    Err(_) => not_found(),
                }
            }
            (&Method::POST, ["api", "admin", "connections", conn, "disconnect"]) => {
                match conn.parse::<u64>() {
                    Ok(conn) => {
                        let close = Close::new(CloseCode::NORMAL, "disconnected by an operator");
                        if self.hub.close_conn(ConnId(conn), &close) {
                            json(StatusCode::OK, r#"{"closed":1}"#)
                        } else {
                            json_error(StatusCode::NOT_FOUND, "not_found", "no such connection")
                        }
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
