//! The routes of SPEC §2, as one tower `Service`: a match on method and path, nothing more.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::{Layer, Service, ServiceExt};
use ws_auth::{ApiKey, ApiKeyLayer, JwtAuth, JwtAuthLayer};
use ws_core::ProjectId;
use ws_transport::{Broker, SharedHub, Upgrader, json_error};

use crate::admin::AdminHandler;
use crate::api::ApiHandler;
use crate::websocket::{self, UpgradeHandler};

pub(crate) type Body = Full<Bytes>;
type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Every route of the server.
#[derive(Clone, Debug)]
pub struct Router {
    inner: Arc<Routes>,
}

#[derive(Debug)]
struct Routes {
    hub: SharedHub,
    /// Whether `/metrics` is served here (no `server.metrics_listen` of its own).
    serve_metrics: bool,
    broker: Arc<dyn Broker>,
    websocket: JwtAuth<UpgradeHandler>,
    admin: ApiKey<AdminHandler>,
    api: ApiKey<ApiHandler>,
    /// Whether the demo page (`/`, `/client.js`) is served (`server.demo`).
    demo: bool,
}

impl Router {
    pub fn new(
        upgrader: Upgrader,
        jwt: JwtAuthLayer,
        api_keys: ApiKeyLayer,
        admin_keys: ApiKeyLayer,
        expiry_leeway: Option<Duration>,
        max_message_bytes: usize,
        serve_metrics: bool,
    ) -> Self {
        let hub = upgrader.hub().clone();
        let broker = Arc::clone(upgrader.broker());
        Self {
            inner: Arc::new(Routes {
                websocket: jwt.layer(UpgradeHandler::new(upgrader, expiry_leeway)),
                admin: admin_keys.layer(AdminHandler::new(hub.clone())),
                api: api_keys.layer(ApiHandler::new(
                    hub.clone(),
                    Arc::clone(&broker),
                    max_message_bytes,
                )),
                broker,
                hub,
                serve_metrics,
                demo: false,
            }),
        }
    }

    /// Serves the demo page at `/` and the JS client at `/client.js` when `on`
    /// (`server.demo`). Call before the router is cloned.
    #[must_use]
    pub fn with_demo(mut self, on: bool) -> Self {
        if let Some(routes) = Arc::get_mut(&mut self.inner) {
            routes.demo = on;
        }
        self
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
    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method(), segments.as_slice()) {
            (&Method::GET, ["metrics"]) if self.serve_metrics => metrics(&self.hub),
            (&Method::GET, [""]) if self.demo => crate::demo::index(),
            (&Method::GET, ["client.js"]) if self.demo => crate::demo::client_js(),
            (&Method::GET, ["healthz"]) => json(StatusCode::OK, r#"{"status":"ok"}"#),
            (&Method::GET, ["readyz"]) => {
                if self.hub.is_draining() {
                    json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
                } else if !self.broker.is_ready() {
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"status":"broker_unavailable"}"#,
                    )
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
                websocket::handshake(&self.websocket, &self.hub, project, req).await
            }
            (_, ["api", "admin", ..]) => call(self.admin.clone(), req).await,
            // A bad project id is a 404 before the key is even looked at, as on /ws.
            (_, ["api", "projects", project, ..]) if ProjectId::parse(project).is_err() => {
                not_found()
            }
            (_, ["api", "projects", ..]) => call(self.api.clone(), req).await,
            _ => not_found(),
        }
    }
}

/// Calls a service that cannot fail.
pub(crate) async fn call<S>(service: S, req: Request<Incoming>) -> Response<Body>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    match service.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// `GET /metrics` in the Prometheus text format.
pub fn metrics(hub: &SharedHub) -> Response<Body> {
    let mut text = hub.encode_metrics(env!("CARGO_PKG_VERSION"));
    // Tasks of the runtime that are still alive: a leak of per-connection tasks shows here
    // (`cargo xtask soak` compares it before and after thousands of connections came and went).
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let tasks = runtime.metrics().num_alive_tasks();
        text.push_str(
            "# HELP wshub_runtime_tasks_alive Tasks of the tokio runtime not yet finished.\n\
             # TYPE wshub_runtime_tasks_alive gauge\n",
        );
        text.push_str(&format!("wshub_runtime_tasks_alive {tasks}\n"));
    }
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

pub(crate) fn json(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn not_found() -> Response<Body> {
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

/// Counts every answer on the WebSocket route by HTTP status, whichever layer gave it
/// (origin, rate limit, auth, upgrade): the outermost layer of the stack.
#[derive(Clone, Debug)]
pub struct CountHandshakes<S> {
    inner: S,
    hub: SharedHub,
}

impl<S> CountHandshakes<S> {
    pub fn new(inner: S, hub: SharedHub) -> Self {
        Self { inner, hub }
    }
}

impl<S, B> Service<Request<B>> for CountHandshakes<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> BoxFuture {
        let counted = req
            .uri()
            .path()
            .starts_with("/ws/")
            .then(|| self.hub.clone());
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            if let Some(hub) = counted {
                hub.metrics().handshake(response.status().as_u16());
            }
            Ok(response)
        })
    }
}
