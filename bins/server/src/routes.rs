//! The routes of SPEC §2, as one tower `Service`: the path is parsed once into a `Route`,
//! and each route has its own stack.
//!
//! ```text
//! Router (counts every answer under /ws/ by status: wshub_handshakes_total)
//! ├─ GET /metrics            (unless server.metrics_listen)   metrics
//! ├─ GET / , GET /client.js  (server.demo)                    demo
//! ├─ GET /admin, /admin/{asset} (server.admin_page)          the operator's page
//! ├─ GET /healthz, GET /readyz
//! ├─ GET /ws/projects/{id}, GET /ws (v2), GET /ws/check[/projects/{id}] (no upgrade: 204)
//! │                          WebSocketRoute: Upgrader::check (not for checks) → draining
//! │                          → SetClientIp → CheckOrigin → HandshakeRateLimit (deferred)
//! │                          → JwtAuth → UpgradeHandler (deferred 429, query, 101)
//! ├─ GET /sse/projects/{id}  the same WebSocketRoute, without the upgrade check: 200
//! │                          text/event-stream (Last-Event-ID: 400 invalid_query if bad);
//! │                          CORS for any origin, as the checks (OPTIONS: the preflight)
//! ├─ /api/admin/...          ApiKey (admin keys) → AdminHandler
//! ├─ /api/projects/{id}/..., POST /api/users/{sub}/messages, POST /api/messages
//! │                          ApiKey → ApiHandler (the ApiPath the router parsed)
//! └─ anything else, or a bad {id}: 404; another method on /ws/projects/{id} or /sse/projects/{id}: 405
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tower::Layer;
use ws_auth::{ApiKey, SharedVerifier};
use ws_core::{ProjectId, UserId};
use ws_transport::{Broker, SharedHub, Upgrader, json_error};

use crate::admin::AdminHandler;
use crate::api::{ApiHandler, ApiPath};
use crate::config::Settings;
use crate::http::{
    Body, Endpoint, Handle, call, json, method_not_allowed, not_found, percent_decode,
};
use crate::websocket::{Handshake, WebSocketRoute};

/// Every route of the server.
pub(crate) type Router = Endpoint<Routes>;

/// What a request asks for, from its method and path alone.
#[derive(Debug)]
enum Route {
    Metrics,
    DemoIndex,
    DemoClient,
    /// `GET /admin` (`""`) and its assets.
    AdminPage(String),
    Healthz,
    Readyz,
    /// `GET /ws/projects/{project}`, `GET /ws`, `GET /ws/check[/projects/{project}]`.
    WebSocket(Handshake),
    /// `GET /sse/projects/{project}`: a server-sent event stream, through the WebSocket
    /// route's checks but the upgrade's.
    Sse(ProjectId),
    /// Another method on `/ws/projects/{project}` or `/sse/projects/{project}`.
    WebSocketMethod,
    /// `OPTIONS /ws/check[/projects/{project}]`: a browser's CORS preflight, since a check
    /// carries its token in `Authorization`.
    CheckPreflight,
    /// `OPTIONS /sse/projects/{project}`: the preflight of a page reading the stream with
    /// `fetch`, which sends `Authorization` and `Last-Event-ID`.
    SsePreflight,
    Admin,
    /// `/api/projects/{project}/...`; `None` when the API has no such resource, which the
    /// handler answers with 404 once the key has been checked.
    Api(Option<ApiPath>),
    /// A path whose segment cannot be read (a bad percent-encoding): `400 invalid_path`.
    BadPath(&'static str),
    NotFound,
}

impl Route {
    fn parse(method: &Method, path: &str) -> Self {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let get = method == Method::GET;
        match segments.as_slice() {
            ["metrics"] if get => Self::Metrics,
            [""] if get => Self::DemoIndex,
            ["client.js"] if get => Self::DemoClient,
            ["admin"] if get => Self::AdminPage(String::new()),
            ["admin", asset] if get => Self::AdminPage((*asset).to_owned()),
            ["healthz"] if get => Self::Healthz,
            ["readyz"] if get => Self::Readyz,
            // A bad project id is a 404 before the method, the upgrade or the token are looked
            // at, on /ws and on /api alike.
            ["ws", "projects", project] => match ProjectId::parse(project) {
                Ok(project) if get => Self::WebSocket(Handshake::V1(project)),
                Ok(_) => Self::WebSocketMethod,
                Err(_) => Self::NotFound,
            },
            ["ws"] if get => Self::WebSocket(Handshake::V2),
            ["ws"] => Self::WebSocketMethod,
            ["ws", "check"] if get => Self::WebSocket(Handshake::CheckV2),
            ["ws", "check"] if method == Method::OPTIONS => Self::CheckPreflight,
            ["ws", "check"] => Self::WebSocketMethod,
            ["ws", "check", "projects", project] => match ProjectId::parse(project) {
                Ok(project) if get => Self::WebSocket(Handshake::CheckV1(project)),
                Ok(_) if method == Method::OPTIONS => Self::CheckPreflight,
                Ok(_) => Self::WebSocketMethod,
                Err(_) => Self::NotFound,
            },
            ["sse", "projects", project] => match ProjectId::parse(project) {
                Ok(project) if get => Self::Sse(project),
                Ok(_) if method == Method::OPTIONS => Self::SsePreflight,
                Ok(_) => Self::WebSocketMethod,
                Err(_) => Self::NotFound,
            },
            ["api", "admin", ..] => Self::Admin,
            ["api", "projects", project, rest @ ..] => match ProjectId::parse(project) {
                Ok(project) => Self::Api(ApiPath::new(project, rest)),
                Err(_) => Self::NotFound,
            },
            ["api", "projects"] => Self::Api(None),
            ["api", "messages"] => Self::Api(Some(ApiPath::batch())),
            // Any `sub`, percent-encoded (SPEC §11): `auth0%7C5f7c`, `alice%40example.com`.
            ["api", "users", user, "messages"] => match percent_decode(user) {
                Ok(user) if !user.is_empty() => {
                    Self::Api(Some(ApiPath::personal(&UserId::new(user))))
                }
                Ok(_) => Self::BadPath("the user segment is empty"),
                Err(message) => Self::BadPath(message),
            },
            _ => Self::NotFound,
        }
    }
}

/// The state behind [`Router`].
#[derive(Debug)]
pub(crate) struct Routes {
    hub: SharedHub,
    /// Whether `/metrics` is served here (no `server.metrics_listen` of its own).
    serve_metrics: bool,
    /// Whether the demo page (`/`, `/client.js`) is served (`server.demo`).
    demo: bool,
    /// Whether the operator's page (`/admin`) is served (`server.admin_page`).
    admin_page: bool,
    broker: Arc<dyn Broker>,
    websocket: WebSocketRoute,
    admin: ApiKey<Endpoint<AdminHandler>>,
    api: ApiKey<Endpoint<ApiHandler>>,
}

/// The router `settings` describe, upgrading with `upgrader` and verifying tokens with
/// `verifier`.
///
/// # Errors
///
/// A key, an allowed origin or a trusted proxy that cannot be parsed (configuration
/// validation reports those first).
pub(crate) fn router(
    settings: &Settings,
    upgrader: Upgrader,
    verifier: SharedVerifier,
) -> anyhow::Result<Router> {
    let hub = upgrader.hub().clone();
    let broker = Arc::clone(upgrader.broker());
    let (api_keys, admin_keys) = settings.api_key_layers()?;
    Ok(Endpoint::new(Routes {
        admin: admin_keys.layer(Endpoint::new(AdminHandler::new(upgrader.clone()))),
        api: api_keys.layer(Endpoint::new(ApiHandler::new(
            hub.clone(),
            Arc::clone(&broker),
            settings.limits.max_message_bytes,
        ))),
        websocket: WebSocketRoute::new(settings, upgrader, verifier)?,
        serve_metrics: settings.server.metrics_listen.is_none(),
        demo: settings.server.demo,
        admin_page: settings.server.admin_page,
        broker,
        hub,
    }))
}

impl Handle for Routes {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        // Every answer on the WebSocket routes counts, whichever check gave it (a check is
        // not a handshake).
        let path = req.uri().path();
        let handshake =
            (path == "/ws" || path.starts_with("/ws/")) && !path.starts_with("/ws/check");
        let check_origin = (path.starts_with("/ws/check") || path.starts_with("/sse/"))
            .then(|| req.headers().get(header::ORIGIN).cloned())
            .flatten();
        let response = match Route::parse(req.method(), req.uri().path()) {
            Route::Metrics if self.serve_metrics => metrics(&self.hub),
            Route::DemoIndex if self.demo => crate::demo::index(),
            Route::DemoClient if self.demo => crate::demo::client_js(),
            Route::AdminPage(asset) if self.admin_page => {
                crate::admin_page::asset(&asset).unwrap_or_else(not_found)
            }
            Route::Healthz => json(StatusCode::OK, r#"{"status":"ok"}"#),
            Route::Readyz => self.readyz(),
            Route::WebSocket(target) => self.websocket.handshake(target, req).await,
            Route::Sse(project) => self.websocket.handshake(Handshake::Sse(project), req).await,
            Route::WebSocketMethod => method_not_allowed("GET", "method not allowed"),
            Route::CheckPreflight => preflight("authorization"),
            Route::SsePreflight => preflight("authorization, last-event-id"),
            Route::Admin => call(self.admin.clone(), req).await,
            Route::Api(path) => {
                if let Some(path) = path {
                    req.extensions_mut().insert(path);
                }
                call(self.api.clone(), req).await
            }
            Route::BadPath(message) => json_error(StatusCode::BAD_REQUEST, "invalid_path", message),
            Route::Metrics
            | Route::DemoIndex
            | Route::DemoClient
            | Route::AdminPage(_)
            | Route::NotFound => not_found(),
        };
        if handshake {
            self.hub.metrics().handshake(response.status().as_u16());
        }
        let mut response = response;
        if let Some(origin) = check_origin {
            allow_origin(&mut response, origin);
        }
        response
    }
}

impl Routes {
    /// `GET /readyz`: 503 while draining or while the broker is not ready.
    fn readyz(&self) -> Response<Body> {
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
}

/// The answer to the CORS preflight of a check or an event stream: `GET` with `headers`
/// may follow.
fn preflight(allow_headers: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(allow_headers),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// Lets a page of `origin` read a check's answer (SPEC §13: a browser client asks why its
/// handshakes fail) or an event stream. A check answers only a status and a refusal's
/// reason, a stream only what the token the page itself sent may read (no cookies:
/// `Access-Control-Allow-Credentials` is never set), so any origin may read them;
/// `auth.allowed_origins` still refuses a disallowed one with 403, which the page can then
/// read too.
fn allow_origin(response: &mut Response<Body>, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// The service of `server.metrics_listen`: `/metrics`, and 404 for anything else.
pub(crate) fn metrics_only(
    hub: SharedHub,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Body>, Infallible>>,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |req: Request<Incoming>| {
        let response = if req.uri().path() == "/metrics" {
            metrics(&hub)
        } else {
            json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "only /metrics is served here",
            )
        };
        std::future::ready(Ok(response))
    })
}

/// `GET /metrics` in the Prometheus text format.
pub(crate) fn metrics(hub: &SharedHub) -> Response<Body> {
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
    let mut response = Response::new(Body::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the router sends `req` through the WebSocket stack past SPEC §3 step 1:
    /// `GET /ws/projects/{valid id}` with a usable upgrade.
    fn is_handshake<B>(req: &Request<B>) -> bool {
        matches!(
            Route::parse(req.method(), req.uri().path()),
            Route::WebSocket(_)
        ) && Upgrader::check(req).is_ok()
    }

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
