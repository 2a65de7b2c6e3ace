//! The sans-IO core of wshub: the state machines of one WebSocket client and of the hub
//! that fans messages out to a project's members.
//!
//! This crate performs no IO, spawns no task and never reads a clock. Time enters as
//! `now: Instant` arguments; decisions leave as values the caller polls. Everything hard
//! (the close handshake, heartbeats and deadlines, limits, who receives what, who must go)
//! is decided here and tested without a network; `ws-transport` only moves bytes between
//! a socket and these machines.
//!
//! ```text
//!   socket frames ──► Client::handle_*(now, ..) ──► poll_transmit() ──► frames to write
//!   timers ─────────► Client::handle_timeout(now)   poll_event()    ──► publish, closed
//!                                                   poll_timeout()  ──► next wake-up
//!
//!   publish ────────► Hub::recipients(project)  ──► (conn, value) to enqueue to
//!   queue depth ────► Hub::handle_queue_depth   ──► poll_action(): close 4008
//!   shutdown ───────► Hub::handle_shutdown      ──► poll_action(): drain 1001 at t
//! ```
//!
//! - [`client`]: one connection: open → closing → closed.
//! - [`subscriptions`]: one v2 connection's projects: recovering → live, no gap, no duplicate.
//! - [`hub`]: one shard of projects → members; fan-out and verdicts.
//! - [`Admission`]: connection limits across shards.
//! - [`history`]: a project's stream: offsets, epoch, retained messages, recovery.
//! - [`follower`]: following a stream kept elsewhere (Redis): deliver, duplicate, gap, lost.
//! - [`dedupe`]: exact publishing: the idempotency keys a stream remembers.
//! - [`retention`]: the budget of all streams' history: which to free or trim.
//! - [`grants`]: what a token allows: operations per project pattern, the personal stream.
//! - [`session`]: what one v2 connection may do: grants, namespaces, the personal stream.
//! - [`namespace`]: per-namespace policy: history, presence events, client publishing.
//! - [`webhook`]: the webhook events and their delivery: batches, retries, a bounded backlog.
//! - [`cluster_presence`]: presence across nodes: who is told of whom, diffs at most once a second.
//! - [`sse`]: server-sent events: the event id, its parser, the events, a stream's timers.
//! - [`envelope`]: the JSON frames of the v1 protocol, its subprotocol and error codes;
//!   [`envelope::v2`]: the requests and frames of the v2 protocol.
//! - [`CloseCode`] and [`Close`]: every close carries a code and a reason.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod client;
pub mod close_code;
pub mod cluster_presence;
pub mod dedupe;
pub mod envelope;
pub mod follower;
pub mod grants;
pub mod history;
pub mod hub;
pub mod ids;
pub mod namespace;
pub mod retention;
pub mod session;
pub mod sse;
pub mod subscriptions;
pub mod webhook;

pub use admission::{Admission, AdmissionConfig};
pub use client::{Client, ClientConfig};
pub use close_code::{Close, CloseCode};
pub use dedupe::{DedupeWindow, IdempotencyKey, InvalidKey};
pub use follower::Follower;
pub use grants::{Grants, GrantsError, Operation, Ops};
pub use hub::{Hub, HubConfig};
pub use ids::{ConnId, InvalidProjectId, ProjectId, UserId};
pub use namespace::{NamespaceOverrides, NamespacePolicy, Namespaces};
pub use session::Session;
pub use subscriptions::{Subscriptions, SubscriptionsConfig};
