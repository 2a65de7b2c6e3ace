//! `/api/admin/...`: operator actions on live connections, behind API keys.

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use ws_core::{Close, CloseCode, ConnId, ProjectId, UserId};
use ws_transport::json_error;
use ws_transport::{RemoteAddr, SharedHub, Upgrader};

use crate::http::{Body, Handle, json, not_found, percent_decode};

/// `/api/admin/...`: operator actions on live connections.
#[derive(Debug)]
pub(crate) struct AdminHandler {
    hub: SharedHub,
    /// Starts the event streams of `GET /api/admin/projects/{project}/tail`.
    upgrader: Upgrader,
}

impl AdminHandler {
    pub(crate) fn new(upgrader: Upgrader) -> Self {
        Self {
            hub: upgrader.hub().clone(),
            upgrader,
        }
    }
}

impl Handle for AdminHandler {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        // The one route with a body.
        if req.method() == Method::POST && req.uri().path() == "/api/admin/users/disconnect" {
            return match user_from_body(req.into_body()).await {
                Ok(user) => revoke(&self.hub, &user),
                Err(refusal) => refusal,
            };
        }
        let path = req.uri().path();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method(), &segments[..]) {
            // The operator's page reads these four (admin_page.rs).
            (&Method::GET, ["api", "admin", "projects"]) => {
                crate::admin_page::projects(&self.hub, req.uri().query().unwrap_or(""))
            }
            (&Method::GET, ["api", "admin", "projects", project, "tail"]) => {
                let remote = req.extensions().get::<RemoteAddr>();
                crate::admin_page::tail(&self.upgrader, project, remote)
            }
            (&Method::GET, ["api", "admin", "projects", project, "presence"]) => {
                crate::admin_page::presence(&self.upgrader, project).await
            }
            (&Method::GET, ["api", "admin", "stats"]) => crate::admin_page::stats(&self.hub),
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
            // The segment is percent-decoded: a `sub` may hold `|`, spaces, `/` (as `%2F`, which
            // the router leaves inside the one segment) or any UTF-8.
            (&Method::POST, ["api", "admin", "users", user, "disconnect"]) => {
                match percent_decode(user) {
                    Ok(user) => revoke(&self.hub, &user),
                    Err(message) => json_error(StatusCode::BAD_REQUEST, "invalid_path", message),
                }
            }
            _ => not_found(),
        }
    }
}

/// The most a `POST /api/admin/users/disconnect` body may hold; a `sub` is far shorter.
const MAX_USER_BODY: usize = 16 * 1024;

/// The body of `POST /api/admin/users/disconnect`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    user: String,
}

/// Closes every connection of `user` with 4003 and says how many closed.
fn revoke(hub: &SharedHub, user: &str) -> Response<Body> {
    let close = Close::new(CloseCode::ACCESS_REVOKED, "access revoked");
    let closed = hub.close_user(&UserId::new(user), &close);
    json(StatusCode::OK, &format!(r#"{{"closed":{closed}}}"#))
}

/// The `user` of a `{"user": "..."}` body, or the `400` to answer.
async fn user_from_body(body: Incoming) -> Result<String, Response<Body>> {
    let bytes = match Limited::new(body, MAX_USER_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            let message = if e.is::<http_body_util::LengthLimitError>() {
                format!("the body is over {MAX_USER_BODY} bytes; send {{\"user\": \"...\"}}")
            } else {
                format!("could not read the body: {e}")
            };
            return Err(json_error(StatusCode::BAD_REQUEST, "bad_body", &message));
        }
    };
    serde_json::from_slice::<UserBody>(&bytes)
        .map(|body| body.user)
        .map_err(|e| {
            json_error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                &format!("expected {{\"user\": \"<sub>\"}} and nothing else: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use crate::http::percent_decode;

    #[test]
    fn percent_decoding_is_strict() {
        for (segment, user) in [
            ("alice", "alice"),
            ("auth0%7C5f7c", "auth0|5f7c"),
            ("auth0|5f7c", "auth0|5f7c"),
            ("org%2F42", "org/42"),
            ("org%2f42", "org/42"),
            ("Jos%C3%A9", "José"),
            ("a%20b", "a b"),
            ("a+b", "a+b"),
            ("100%25", "100%"),
            ("", ""),
        ] {
            assert_eq!(percent_decode(segment).as_deref(), Ok(user), "{segment}");
        }
        for bad in [
            "%", "%2", "a%2", "%ZZ", "a%2Gb", "%FF", "%C3", "%C3%28", "%+1",
        ] {
            assert!(percent_decode(bad).is_err(), "{bad}");
        }
    }
}
