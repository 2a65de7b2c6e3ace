//! The `wshub` server as a library, so the binary stays a thin `main` and tests can reach
//! the configuration types. It wires configuration, logging, routes and shutdown; the
//! WebSocket work is `ws-transport`'s, the decisions `ws-core`'s, authentication `ws-auth`'s.

pub mod admin;
pub mod admin_page;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dev;
pub mod http;
pub mod rlimit;
pub mod routes;
pub mod runtime;
pub mod signal;
pub mod telemetry;
pub mod webhooks;
pub mod websocket;

/// The configuration reference, at its former path.
pub use config::reference;
