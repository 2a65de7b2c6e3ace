//! The routes of SPEC §2, as one tower `Service`: a match on method and path, nothing more.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::{Layer, Service, ServiceExt};
use ws_auth::{ApiKey, ApiKeyLayer, Claims, JwtAuth, JwtAuthLayer, ProjectScope};
use ws_core::{Close, CloseCode, ProjectId, UserId};
use ws_transport::{Admitted, SharedHub, Upgrader, json_error};

type Body = Full<Bytes>;
type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Every route of the server.
#[derive(Clone, Debug)]
pub struct Router {
    inner: Arc<Routes>,
}

#[derive(Debug)]
struct Routes {
    hub: SharedHub,
    websocket: JwtAuth<UpgradeHandler>,
    admin: ApiKey<AdminHandler>,
}

impl Router {
    pub fn new(
        upgrader: Upgrader,
        jwt: JwtAuthLayer,
        api_keys: ApiKeyLayer,
        expiry_leeway: Option<Duration>,
    ) -> Self {
        let hub = upgrader.hub().clone();
        Self {
            inner: Arc::new(Routes {
                websocket: jwt.layer(UpgradeHandler {
                    upgrader,
                    expiry_leeway,
                }),
                admin: api_keys.layer(AdminHandler { hub: hub.clone() }),
                hub,
            }),
        }
    }
}

impl Service<Request<Incoming>> for Router {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> BoxFuture {
        let routes = Arc::clone(&self.inner);
        Box::pin(async move { Ok(routes.route(req).await) })
    }
}

impl Routes {
    async fn route(&self, mut req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method(), segments.as_slice()) {
            (&Method::GET, ["healthz"]) => json(StatusCode::OK, r#"{"status":"ok"}"#),
            (&Method::GET, ["readyz"]) => {
                if self.hub.is_draining() {
                    json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
                } else {
                    json(StatusCode::OK, r#"{"status":"ready"}"#)
                }
            }
            (_, ["ws", "projects", project]) => {
                let Ok(project) = ProjectId::parse(project) else {
                    return not_found();
                };
                if req.method() != Method::GET {
                    return method_not_allowed("GET");
                }
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
                call(self.websocket.clone(), req).await
            }
            (_, ["api", "admin", ..]) => call(self.admin.clone(), req).await,
            _ => not_found(),
        }
    }
}

/// Calls a service that cannot fail.
async fn call<S>(service: S, req: Request<Incoming>) -> Response<Body>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    match service.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The end of the WebSocket route: the request is authenticated and scoped.
#[derive(Clone, Debug)]
struct UpgradeHandler {
    upgrader: Upgrader,
    /// `Some(leeway)` when `exp` is enforced on open connections.
    expiry_leeway: Option<Duration>,
}

impl Service<Request<Incoming>> for UpgradeHandler {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
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
        let expires_at: Option<SystemTime> = self
            .expiry_leeway
            .map(|leeway| claims.expires_at() + leeway);
        let who = Admitted {
            user: UserId::new(claims.sub),
            project,
            expires_at,
        };
        std::future::ready(Ok(self.upgrader.upgrade(req, who)))
    }
}

/// `/api/admin/...`: operator actions on live connections.
#[derive(Clone, Debug)]
struct AdminHandler {
    hub: SharedHub,
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

fn json(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found() -> Response<Body> {
    json_error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
