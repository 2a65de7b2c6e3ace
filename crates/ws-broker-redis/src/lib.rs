//! The Redis broker of wshub (SPEC §8): several `wshub` nodes on one Redis serve one set of
//! projects with one order, one history and one presence.
//!
//! ```text
//!  node A: Broker::publish ─► EVALSHA publish ─┐  one script, atomic in Redis:
//!                                              │  HINCRBY top → RPUSH history → PUBLISH channel
//!                                              ▼
//!  node B: one pub/sub connection ◄── "<epoch> <offset> <frame>" on wshub:{project}:messages
//!          (`"- - <frame>"` for an ephemeral message; `@<node>:<conn>` after the offset
//!          field names the one connection of `node` that must not receive it, echo: false)
//!          Subscriber task: de-duplicate, fill gaps from the history, SharedHub::deliver in order
//!
//!  connection: register → Broker::recover: SUBSCRIBE (first member on this node), then read
//!              the history; the connection's watermark removes the overlap
//!  presence:   every node announces its members per project (a hash with a TTL) and reads
//!              the other nodes' announcements
//! ```
//!
//! - Order: Redis runs a script atomically and a pub/sub connection delivers in the order
//!   messages were published, so every node sees a project's messages in offset order.
//! - Batches: every publish (`Broker::publish`, `Broker::publish_batch`) is queued to the
//!   publisher task (`publisher.rs`), which sends whatever is queued as one pipeline of the
//!   items' EVALSHA (or PUBLISH for an ephemeral item), one round trip, one pipeline at a
//!   time; Redis runs them in order, so each project's items, and each connection's, keep
//!   the order they were made in.
//! - History: a capped list per project (`history.size`, `history.max_bytes`,
//!   `history.ttl`), and a budget for the deployment (`history.max_total_bytes`, see
//!   `budget.rs`: the oldest idle projects are freed when over it); offsets and the
//!   epoch live in a hash. A Redis that lost its data starts a new epoch: clients get
//!   `recovered: false`, and connections open on that project are closed with 1013 so that
//!   they reconnect and learn it.
//! - Presence: each node's members live in a hash that expires `presence_ttl` after the
//!   node last refreshed it, so a crashed node's users leave within that time.
//! - Membership (`cluster.rs`): one script per change sums every node's members, so
//!   join/leave frames reach every node's members (at most one diff per project per
//!   second per node) and the webhook events are decided once for the cluster.
//! - Outage: publishes fail with [`BrokerError::Unavailable`], [`Broker::is_ready`] is
//!   false, open connections stay; once Redis answers again the node subscribes again and
//!   reads what it missed from the history.
//! - Where Redis is (`link`): one Redis (`url`), a Redis Cluster (`cluster`: a pipeline per
//!   hash slot, `SPUBLISH`/`SSUBSCRIBE` on the project's shard), or the master the sentinels
//!   name (`sentinels`: a publish is acknowledged once a replica has it). After any
//!   reconnect the subscriber checks that Redis still has the last message it delivered; a
//!   failover that dropped it gives the stream a new epoch (clients get `recovered: false`).
//!
//! This crate is IO: it sits beside `ws-transport` and decides nothing about the protocol;
//! the recovery decision is `ws_core::history::decide_recovery`, and what to do with each
//! message of the channel (deliver, drop, fill a gap, close the lost) is
//! `ws_core::follower::Follower`'s.
//!
//! Modules: `config` (the configuration, its validation, URL redaction), `link` (the
//! connections: standalone, cluster or Sentinel), `inner` (what the tasks share and every
//! Redis call), `key_layout` (the names of the keys and channels),
//! `scripts` (the Lua scripts), `frame` (the bytes in Redis), `subscriber` (the pub/sub
//! task), `publisher` (the publish queue and its task), `presence` and `budget` (their tasks); this file is the face: [`RedisBroker`] and
//! its [`Broker`] implementation.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod budget;
mod cluster;
mod config;
mod frame;
mod inner;
mod key_layout;
mod link;
mod presence;
mod publisher;
mod scripts;
mod subscriber;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::info;
use ws_core::{ProjectId, UserId};
use ws_transport::SharedHub;
use ws_transport::broker::{
    BoxFuture, Broker, BrokerError, HistoryPage, HistoryQuery, Position, Publication, Published,
    Replay,
};

pub use crate::config::{ConfigError, Field, RedisConfig, redact};
use crate::inner::Inner;
use crate::publisher::Publisher;
use crate::subscriber::Subscriber;
/// The broker. Starting it connects nothing yet: it is not ready (readiness 503, publishes
/// refused) until Redis answers, and it keeps trying in the background.
pub struct RedisBroker {
    inner: Arc<Inner>,
    publisher: Publisher,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node", &self.inner.node)
            .field("config", &self.inner.config)
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RedisBroker {
    /// A broker for the members of `hub`. Must be called within a tokio runtime: it spawns
    /// the pub/sub task and the presence task.
    pub fn start(hub: SharedHub, config: RedisConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let (requests, receiver) = mpsc::unbounded_channel();
        let (reports, report_receiver) = mpsc::unbounded_channel();
        hub.enable_cluster_presence();
        let inner = Arc::new(Inner::new(hub, config, requests, reports)?);
        info!(
            redis = %inner.config.describe(),
            prefix = %inner.config.key_prefix,
            node = %inner.node,
            "redis broker starting"
        );
        let (publisher, publishing) = Publisher::start(Arc::clone(&inner));
        let tasks = vec![
            publishing,
            tokio::spawn(Subscriber::new(Arc::clone(&inner), receiver).run()),
            tokio::spawn(presence::maintain(Arc::clone(&inner))),
            tokio::spawn(budget::account(Arc::clone(&inner), report_receiver)),
            tokio::spawn(budget::sweep(Arc::clone(&inner))),
            tokio::spawn(link::watch_sentinels(Arc::clone(&inner))),
        ];
        Ok(Self {
            inner,
            publisher,
            tasks,
        })
    }

    /// Reports the membership changes decided for the whole cluster (SPEC §14's events)
    /// to `sink`: each change reaches the sink of exactly one node, the one whose script
    /// decided it. Once; later calls change nothing.
    pub fn report_membership(&self, sink: Arc<dyn ws_transport::MembershipSink>) {
        self.inner.cluster.report_to(sink);
    }

    /// This node's id in Redis (presence announcements).
    pub fn node(&self) -> &str {
        &self.inner.node
    }
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        project: &'a ProjectId,
        publication: Publication,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        // Queued here, when called: a caller's publishes keep the order it made them in.
        Box::pin(self.publisher.publish(project.clone(), publication))
    }

    /// Every item queued at once, in order: they go out in the same pipeline (or, behind a
    /// full one, the next), with whatever else is queued.
    fn publish_batch<'a>(
        &'a self,
        items: Vec<(ProjectId, Publication)>,
    ) -> BoxFuture<'a, Vec<Result<Published, BrokerError>>> {
        let answers: Vec<_> = items
            .into_iter()
            .map(|(project, publication)| self.publisher.publish(project, publication))
            .collect();
        Box::pin(futures_util::future::join_all(answers))
    }

    fn recover<'a>(
        &'a self,
        project: &'a ProjectId,
        position: Position<'a>,
    ) -> BoxFuture<'a, Result<Replay, BrokerError>> {
        Box::pin(self.inner.recover(project, position))
    }

    fn history<'a>(
        &'a self,
        project: &'a ProjectId,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        Box::pin(self.inner.history(project, query))
    }

    fn is_ready(&self) -> bool {
        self.inner.commands_up.load(Ordering::SeqCst)
            && self.inner.subscribed_up.load(Ordering::SeqCst)
    }

    fn presence<'a>(
        &'a self,
        project: &'a ProjectId,
        local: Vec<(UserId, u32)>,
    ) -> BoxFuture<'a, Result<Vec<(UserId, u32)>, BrokerError>> {
        Box::pin(self.inner.cluster_presence(project, local))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.inner.withdraw_presence())
    }
}
