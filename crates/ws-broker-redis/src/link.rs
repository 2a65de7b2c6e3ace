//! How the broker reaches Redis: one standalone server, or a Redis Cluster. The rest of the
//! crate talks to a [`Backend`] and to the [`Conn`] it lends, and never asks which it is
//! except where the cluster needs something else (one pipeline per hash slot, sharded
//! pub/sub).
//!
//! ```text
//!  standalone:  pool of ConnectionManager (multiplexed, reconnecting)   PUBLISH / SUBSCRIBE
//!  cluster:     two ClusterConnection (slot routing, MOVED/ASK,          SPUBLISH / SSUBSCRIBE
//!               topology refresh): `commands` (the library retries),    one pipeline per slot
//!               `publishes` (no library retry; see below)
//! ```
//!
//! A publish is not idempotent: the cluster client's own retry, which also follows a dropped
//! connection, could store it twice. So publishes go on a cluster connection that retries
//! nothing, and [`retryable`] names the answers after which the script surely did not run
//! (a redirect, `TRYAGAIN`, `CLUSTERDOWN`, `READONLY`, …): those are sent again, after the
//! client refreshed its slot map; a dropped connection is not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, Slot};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use crate::config::{ConfigError, RedisConfig};

/// The broker's command connections.
pub(crate) enum Backend {
    /// One Redis: a pool of multiplexed connections, used in turn.
    Standalone {
        /// Boxed: the client is large, and the variants should weigh alike.
        client: Box<redis::Client>,
        pool: Box<[ConnectionManager]>,
        next: AtomicUsize,
    },
    /// A Redis Cluster: every key of a project is in its slot (`{project}` hash tag).
    Cluster {
        /// The seed URLs, for the pub/sub task's own connection.
        seeds: Vec<String>,
        /// Reads, presence, the budget: the client follows redirects and reconnects.
        commands: ClusterConnection,
        /// Publishes: the client retries nothing (see the module's comment).
        publishes: ClusterConnection,
    },
}

/// A connection lent for one call.
#[derive(Clone)]
pub(crate) enum Conn {
    Plain(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Plain(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Plain(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl Backend {
    /// The connections for `config`, lazy: nothing connects yet.
    pub(crate) fn open(config: &RedisConfig) -> Result<Self, ConfigError> {
        if !config.sentinels.is_empty() {
            return Err(ConfigError::Sentinel(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "Redis Sentinel is not supported by this build yet",
            ))));
        }
        if !config.cluster.is_empty() {
            let builder = |retries: u32| {
                ClusterClientBuilder::new(config.cluster.iter().map(String::as_str))
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.command_timeout)
                    .retries(retries)
                    .min_retry_wait(20)
                    .max_retry_wait(500)
                    .build()
                    .map_err(ConfigError::Cluster)
            };
            let commands = builder(8)?;
            let publishes = builder(0)?;
            let cluster_config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(config.connect_timeout)
                .set_response_timeout(config.command_timeout);
            return Ok(Self::Cluster {
                seeds: config.cluster.clone(),
                commands: commands.get_pending_async_connection_with_config(cluster_config.clone()),
                publishes: publishes.get_pending_async_connection_with_config(cluster_config),
            });
        }
        let client = redis::Client::open(config.url.as_str()).map_err(ConfigError::Url)?;
        let manager = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let pool = (0..config.pool_size)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), manager.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::Url)?;
        Ok(Self::Standalone {
            client: Box::new(client),
            pool: pool.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// A connection for reads, presence and the budget.
    pub(crate) fn connection(&self) -> Conn {
        match self {
            Self::Standalone { pool, next, .. } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % pool.len();
                Conn::Plain(pool[i].clone())
            }
            Self::Cluster { commands, .. } => Conn::Cluster(commands.clone()),
        }
    }

    /// A connection for publishes.
    pub(crate) fn publish_connection(&self) -> Conn {
        match self {
            Self::Cluster { publishes, .. } => Conn::Cluster(publishes.clone()),
            Self::Standalone { .. } => self.connection(),
        }
    }

    /// The connections a health check must reach, each with the PING that reaches it: every
    /// pooled connection, or every primary of the cluster.
    pub(crate) fn health_probes(&self) -> Vec<(Conn, Probe)> {
        match self {
            Self::Standalone { pool, .. } => pool
                .iter()
                .map(|c| (Conn::Plain(c.clone()), Probe::Plain))
                .collect(),
            Self::Cluster {
                commands,
                publishes,
                ..
            } => vec![
                (Conn::Cluster(commands.clone()), Probe::AllPrimaries),
                (Conn::Cluster(publishes.clone()), Probe::AllPrimaries),
            ],
        }
    }

    /// The single Redis' client (the standalone pub/sub connection).
    pub(crate) fn client(&self) -> Option<&redis::Client> {
        match self {
            Self::Standalone { client, .. } => Some(client),
            Self::Cluster { .. } => None,
        }
    }

    /// The cluster's seed URLs.
    pub(crate) fn seeds(&self) -> &[String] {
        match self {
            Self::Cluster { seeds, .. } => seeds,
            Self::Standalone { .. } => &[],
        }
    }
}

/// How a health check pings one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Probe {
    Plain,
    AllPrimaries,
}

impl Probe {
    pub(crate) async fn ping(self, connection: Conn) -> redis::RedisResult<()> {
        match (self, connection) {
            (Self::AllPrimaries, Conn::Cluster(mut c)) => c
                .route_command(
                    redis::cmd("PING"),
                    RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        Some(ResponsePolicy::AllSucceeded),
                    )),
                )
                .await
                .map(drop),
            (_, mut c) => redis::cmd("PING").query_async::<()>(&mut c).await,
        }
    }
}

/// The hash slot of `key` (its `{…}` tag), for grouping a cluster's commands per slot.
pub(crate) fn slot(key: &str) -> Slot {
    Slot::for_key(key)
}

/// Whether a publish answered with `e` surely did not run, so sending it again cannot store
/// it twice: the server refused it before running anything (a redirect, a slot being moved,
/// the cluster or the node not serving writes), or the client found no connection for it.
pub(crate) fn retryable(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::BusyLoading
        ),
        ErrorKind::ClusterConnectionNotFound => true,
        _ => e.is_connection_refusal(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_keys_and_channel_share_one_slot() {
        let keys = crate::key_layout::KeyLayout::new("wshub");
        let p = ws_core::ProjectId::parse("shop:eu").unwrap();
        let s = slot(&keys.meta(&p));
        for key in [
            keys.history(&p),
            keys.keys(&p),
            keys.key_order(&p),
            keys.channel(&p),
            keys.presence(&p),
            keys.presence_of(&p, "n1"),
        ] {
            assert_eq!(slot(&key), s, "{key}");
        }
        assert_eq!(slot(&keys.streams()), slot(&keys.total_bytes()));
        assert_eq!(slot(&keys.streams()), slot(&keys.sweeper()));
    }

    #[test]
    fn only_answers_that_ran_nothing_are_retried() {
        let server = |kind: ServerErrorKind| RedisError::from((ErrorKind::Server(kind), "x"));
        assert!(retryable(&server(ServerErrorKind::Moved)));
        assert!(retryable(&server(ServerErrorKind::Ask)));
        assert!(retryable(&server(ServerErrorKind::TryAgain)));
        assert!(retryable(&server(ServerErrorKind::ClusterDown)));
        assert!(retryable(&server(ServerErrorKind::ReadOnly)));
        // A script error ran (part of) the script; an I/O error may have run it all.
        assert!(!retryable(&server(ServerErrorKind::ResponseError)));
        assert!(!retryable(&RedisError::from((ErrorKind::Io, "reset"))));
        assert!(!retryable(&server(ServerErrorKind::NoScript)));
    }
}
