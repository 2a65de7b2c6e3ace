//! The IO shell of wshub: hyper serves HTTP and upgrades to WebSocket, tungstenite frames
//! messages, and a read pump and a write pump per connection move them between the socket
//! and the `ws-core` state machines.
//!
//! This crate decides nothing about the protocol: heartbeats, deadlines, limits, close
//! codes and who receives what are `ws-core`'s. It never authenticates either: put
//! `ws-auth` in front of [`Upgrader::upgrade`].
//!
//! ```text
//!  TcpListener ─► serve() ─► your tower Service ─► Upgrader::check ─► (auth) ─► Upgrader::upgrade ─► 101
//!                                                                               │ spawn
//!                      socket ◄─ write pump ◄─ Outbox ◄─ SharedHub::deliver     ▼
//!                      socket ─► read pump ─► ws_core::Client ─► Broker::publish ─► SharedHub
//! ```
//!
//! The pumps are generic over the application they serve: the hub's, or the echo of
//! [`EchoUpgrader`], which exists to hold the same upgrade, core and pumps to the Autobahn
//! TestSuite (`examples/echo.rs`, `cargo xtask conformance`, `docs/conformance.md`).
//!
//! ```no_run
//! use std::convert::Infallible;
//! use std::time::{Duration, SystemTime};
//! use ws_transport::{serve, Admitted, MemoryBroker, SharedHub, TransportConfig, Upgrader};
//! use ws_core::{AdmissionConfig, HubConfig, ProjectId, UserId};
//!
//! # async fn run() -> std::io::Result<()> {
//! let hub = SharedHub::new(HubConfig::default(), AdmissionConfig::default(), 16);
//! let broker = std::sync::Arc::new(MemoryBroker::new(hub.clone(), Default::default(), 16));
//! let upgrader = Upgrader::new(hub, broker, TransportConfig::default());
//! let service = tower::service_fn(move |req| {
//!     let upgrader = upgrader.clone();
//!     async move {
//!         if let Err(refusal) = Upgrader::check(&req) {
//!             return Ok::<_, Infallible>(refusal);
//!         }
//!         // Authenticate here (see ws-auth); this example lets everyone in.
//!         let who = Admitted {
//!             user: UserId::new("anonymous"),
//!             project: ProjectId::parse("lobby").unwrap(),
//!             expires_at: None,
//!             since: None,
//!             remote: None,
//!             ops: ws_core::Ops::ALL,
//!         };
//!         Ok(upgrader.upgrade(req, who))
//!     }
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! serve(listener, service, shutdown, Duration::from_secs(10), Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
pub mod broker;
mod config;
mod connection;
mod echo;
mod hub;
pub mod membership;
pub mod metrics;
mod outbox;
pub mod publish;
mod pump;
mod serve;
mod session;
mod socket;
mod sse;
#[cfg(test)]
mod testing;
mod tls;
mod traffic;
mod upgrade;
mod wire;

pub use body::Body;
pub use broker::{Broker, MemoryBroker};
pub use config::TransportConfig;
pub use connection::Admitted;
pub use echo::EchoUpgrader;
pub use hub::{ConnectionInfo, Refused, SharedHub};
pub use hyper_tungstenite::tungstenite;
pub use membership::MembershipSink;
pub use metrics::{Metrics, Totals};
pub use serve::{RemoteAddr, serve, serve_tls};
pub use session::{AdmittedSession, Reauthorize, Renewed};
pub use tls::{TlsConfig, TlsError};
pub use upgrade::{SUBPROTOCOL, SUBPROTOCOL_V2, Upgrader, json_error};
