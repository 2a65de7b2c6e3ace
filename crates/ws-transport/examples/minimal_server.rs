//! A WebSocket hub of your own from the three library crates, in one file: `ws-transport`
//! serves and pumps, `ws-auth` checks HS256 tokens, `ws-core` decides everything else.
//!
//! ```sh
//! MINIMAL_SERVER_SECRET=a-secret-of-16-bytes-or-more \
//!     cargo run -p ws-transport --example minimal_server -- 127.0.0.1:8080
//! ```
//!
//! Clients connect to `ws://ADDR/ws/projects/{id}` with `Authorization: Bearer <jwt>` (or
//! `?access_token=<jwt>`), signed with the secret and granting the project (`projects` claim).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tower::{Layer, ServiceExt};
use ws_auth::{Claims, JwtAuthLayer, JwtVerifier, ProjectScope};
use ws_core::{AdmissionConfig, HubConfig, ProjectId, UserId};
use ws_transport::json_error;
use ws_transport::{Admitted, MemoryBroker, RemoteAddr, SharedHub, TransportConfig, Upgrader};

/// The secret when `MINIMAL_SERVER_SECRET` is not set: fine for a demo, never for production.
const DEMO_SECRET: &str = "minimal-server-demo-secret";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let secret = std::env::var("MINIMAL_SERVER_SECRET").unwrap_or_else(|_| DEMO_SECRET.to_owned());

    let hub = SharedHub::new(HubConfig::default(), AdmissionConfig::default(), 4);
    let broker = Arc::new(MemoryBroker::new(hub.clone(), Default::default(), 4));
    let upgrader = Upgrader::new(hub, broker, TransportConfig::default());

    // Innermost: the request is a checked upgrade, its token verified for its project.
    let upgrade = tower::service_fn(move |req: Request<Incoming>| {
        let claims = req
            .extensions()
            .get::<Claims>()
            .expect("inserted by JwtAuth");
        let user = UserId::new(claims.sub.as_str());
        let project = req.extensions().get::<ProjectId>().cloned();
        let project = project.expect("inserted by the router");
        let who = Admitted {
            user,
            project: project.clone(),
            expires_at: None,
            since: None,
            remote: req.extensions().get::<RemoteAddr>().map(|r| r.0),
            // JwtAuth checked `subscribe`; the token's other operations on the project.
            ops: claims
                .grants()
                .map_or(ws_core::Ops::NONE, |g| g.ops(&project)),
        };
        std::future::ready(Ok::<_, Infallible>(upgrader.upgrade(req, who)))
    });
    let authenticated = JwtAuthLayer::new(JwtVerifier::hs256([secret])).layer(upgrade);

    // The router: `/ws/projects/{id}` only, checked as an upgrade before the token is.
    let router = tower::service_fn(move |mut req: Request<Incoming>| {
        let authenticated = authenticated.clone();
        async move {
            let path = req.uri().path().strip_prefix("/ws/projects/");
            let Some(project) = path.and_then(|id| ProjectId::parse(id).ok()) else {
                return Ok(json_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such route",
                ));
            };
            if let Err(refusal) = Upgrader::check(&req) {
                return Ok(refusal);
            }
            req.extensions_mut()
                .insert(ProjectScope(project.to_string()));
            req.extensions_mut().insert(project);
            authenticated.oneshot(req).await
        }
    });

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    // Ctrl-C ends the process; a real server drains first (see bins/server/src/app.rs).
    let shutdown = CancellationToken::new();
    let (handshake_timeout, grace) = (Duration::from_secs(10), Duration::from_secs(1));
    ws_transport::serve(listener, router, shutdown, handshake_timeout, grace).await;
    Ok(())
}
