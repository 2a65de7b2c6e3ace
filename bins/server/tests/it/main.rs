//! Black-box tests: each starts the real `wshub` binary on an ephemeral loopback port and
//! talks to it with real WebSocket clients.

mod harness;

mod admin_page;
mod auth;
mod chaos;
mod config;
mod demo;
mod exact;
mod hardening;
mod hardening_auth;
mod hardening_startup;
mod lifecycle;
mod limits;
mod messaging;
mod namespaces;
mod ops;
mod pipeline;
mod redis;
mod redis_cluster;
mod redis_sentinel;
mod redis_server;
mod retention;
mod scale;
mod security;
mod shutdown;
mod sse;
mod tls;
mod v2;
mod webhooks;
