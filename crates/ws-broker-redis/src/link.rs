//! How the broker reaches Redis: one standalone server, a Redis Cluster, or the master a
//! set of sentinels names. The rest of the crate talks to a [`Backend`] and to the [`Conn`]
//! it lends, and never asks which it is except where the cluster needs something else (one
//! pipeline per hash slot, sharded pub/sub).
//!
//! ```text
//!  standalone:  pool of ConnectionManager (multiplexed, reconnecting)   PUBLISH / SUBSCRIBE
//!  cluster:     two ClusterConnection (slot routing, MOVED/ASK,          SPUBLISH / SSUBSCRIBE
//!               topology refresh): `commands` (the library retries),    one pipeline per slot
//!               `publishes` (no library retry; see below)
//!  sentinel:    the standalone pool, on the master the sentinels name;   PUBLISH / SUBSCRIBE,
//!               `watch_sentinels` asks them every 500 ms and at once     a publish is acked once
//!               after a lost connection or READONLY, and swaps the pool  a replica has it (WAIT)
//! ```
//!
//! Sentinel: a failover promotes a replica while the old master may still take writes for
//! a moment, which the new master never sees. So a publish is acknowledged only once a
//! replica has it (`WAIT 1`): what the old master took after the replica left it answers
//! 503 instead, and nothing acknowledged is lost. The price: a master without a reachable
//! replica refuses publishes (503) until one is back.
//!
//! A publish is not idempotent: the cluster client's own retry, which also follows a dropped
//! connection, could store it twice. So publishes go on a cluster connection that retries
//! nothing, and [`retryable`] names the answers after which the script surely did not run
//! (a redirect, `TRYAGAIN`, `CLUSTERDOWN`, `READONLY`, …): those are sent again, after the
//! client refreshed its slot map; a dropped connection is not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, Slot};
use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};

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
    /// The master the sentinels name, re-asked when it stops answering as one.
    Sentinel(Box<Sentinel>),
}

/// The sentinels and the master they named last.
pub(crate) struct Sentinel {
    sentinels: Vec<redis::Client>,
    name: String,
    /// The master's `requirepass`, if any.
    password: Option<String>,
    pool_size: usize,
    manager: ConnectionManagerConfig,
    connect_timeout: Duration,
    command_timeout: Duration,
    master: RwLock<Option<Arc<Master>>>,
    /// Bumped whenever the master changes: the pub/sub task starts a new session.
    moved: watch::Sender<u64>,
    /// Ask the sentinels now (a connection was lost, or the master answered READONLY).
    ask: Notify,
}

/// One master's connections.
struct Master {
    address: (String, u16),
    client: redis::Client,
    pool: Box<[ConnectionManager]>,
    next: AtomicUsize,
}

/// A connection lent for one call.
#[derive(Clone)]
pub(crate) enum Conn {
    Plain(ConnectionManager),
    Cluster(ClusterConnection),
    /// No master known yet (Sentinel): every command fails as refused.
    Down,
}

fn no_master() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "the sentinels named no master yet",
    ))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Plain(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Down => Box::pin(async { Err(no_master()) }),
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
            Self::Down => Box::pin(async { Err(no_master()) }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Plain(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Down => 0,
        }
    }
}

impl Backend {
    /// The connections for `config`, lazy: nothing connects yet.
    pub(crate) fn open(config: &RedisConfig) -> Result<Self, ConfigError> {
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
        let manager = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        if !config.sentinels.is_empty() {
            let sentinels = config
                .sentinels
                .iter()
                .map(|url| redis::Client::open(url.as_str()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ConfigError::Sentinel)?;
            return Ok(Self::Sentinel(Box::new(Sentinel {
                sentinels,
                name: config.sentinel_master.clone(),
                password: Some(config.sentinel_master_password.clone()).filter(|p| !p.is_empty()),
                pool_size: config.pool_size,
                manager,
                connect_timeout: config.connect_timeout,
                command_timeout: config.command_timeout,
                master: RwLock::new(None),
                moved: watch::Sender::new(0),
                ask: Notify::new(),
            })));
        }
        let client = redis::Client::open(config.url.as_str()).map_err(ConfigError::Url)?;
        let pool = pool_of(&client, config.pool_size, &manager).map_err(ConfigError::Url)?;
        Ok(Self::Standalone {
            client: Box::new(client),
            pool,
            next: AtomicUsize::new(0),
        })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// Whether publishes wait for a replica (`WAIT 1`): with Sentinel.
    pub(crate) fn waits_for_replica(&self) -> bool {
        matches!(self, Self::Sentinel(_))
    }

    /// The sentinels' side, if any.
    pub(crate) fn sentinel(&self) -> Option<&Sentinel> {
        match self {
            Self::Sentinel(s) => Some(s),
            _ => None,
        }
    }

    /// Told of every failed call: with Sentinel, a lost connection or a READONLY answer
    /// (the master became a replica) makes the watcher ask the sentinels at once. Returns
    /// whether the error means the master is gone (READONLY counts: no write will pass).
    pub(crate) fn failed(&self, e: &RedisError) -> bool {
        let Self::Sentinel(sentinel) = self else {
            return false;
        };
        let readonly = e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
        if readonly || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            sentinel.ask.notify_one();
        }
        readonly
    }

    /// A connection for reads, presence and the budget.
    pub(crate) fn connection(&self) -> Conn {
        match self {
            Self::Standalone { pool, next, .. } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % pool.len();
                Conn::Plain(pool[i].clone())
            }
            Self::Cluster { commands, .. } => Conn::Cluster(commands.clone()),
            Self::Sentinel(sentinel) => match sentinel.current() {
                Some(master) => {
                    let i = master.next.fetch_add(1, Ordering::Relaxed) % master.pool.len();
                    Conn::Plain(master.pool[i].clone())
                }
                None => Conn::Down,
            },
        }
    }

    /// A connection for publishes.
    pub(crate) fn publish_connection(&self) -> Conn {
        match self {
            Self::Cluster { publishes, .. } => Conn::Cluster(publishes.clone()),
            Self::Standalone { .. } | Self::Sentinel(_) => self.connection(),
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
            Self::Sentinel(sentinel) => match sentinel.current() {
                Some(master) => master
                    .pool
                    .iter()
                    .map(|c| (Conn::Plain(c.clone()), Probe::Plain))
                    .collect(),
                None => vec![(Conn::Down, Probe::Plain)],
            },
        }
    }

    /// The client of the one Redis the pub/sub connection goes to: the standalone one, or
    /// the master the sentinels named last (none yet: an error, retried).
    pub(crate) fn client(&self) -> Option<RedisResult<redis::Client>> {
        match self {
            Self::Standalone { client, .. } => Some(Ok((**client).clone())),
            Self::Cluster { .. } => None,
            Self::Sentinel(sentinel) => Some(
                sentinel
                    .current()
                    .map(|m| m.client.clone())
                    .ok_or_else(no_master),
            ),
        }
    }

    /// The cluster's seed URLs.
    pub(crate) fn seeds(&self) -> &[String] {
        match self {
            Self::Cluster { seeds, .. } => seeds,
            Self::Standalone { .. } | Self::Sentinel(_) => &[],
        }
    }

    /// Changes whenever the master moves (Sentinel); never otherwise.
    pub(crate) fn moves(&self) -> Option<watch::Receiver<u64>> {
        self.sentinel().map(|s| s.moved.subscribe())
    }
}

fn pool_of(
    client: &redis::Client,
    size: usize,
    manager: &ConnectionManagerConfig,
) -> RedisResult<Box<[ConnectionManager]>> {
    (0..size)
        .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), manager.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map(Vec::into_boxed_slice)
}

impl Sentinel {
    fn current(&self) -> Option<Arc<Master>> {
        self.master
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The master's address as the first sentinel that answers names it, once that
    /// address says it is a master (a sentinel may lag behind a failover).
    async fn ask(&self) -> Result<(String, u16), String> {
        let mut last = "no sentinel answered".to_owned();
        let within = self.command_timeout + self.connect_timeout;
        for sentinel in &self.sentinels {
            let address = async {
                let mut c = sentinel.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.name)
                    .query_async::<Option<(String, u16)>>(&mut c)
                    .await
            };
            let address = match tokio::time::timeout(within, address).await {
                Ok(Ok(Some(address))) => address,
                Ok(Ok(None)) => {
                    last = format!("a sentinel knows no master named {:?}", self.name);
                    continue;
                }
                Ok(Err(e)) => {
                    last = format!("a sentinel failed: {e}");
                    continue;
                }
                Err(_) => {
                    last = "a sentinel did not answer in time".to_owned();
                    continue;
                }
            };
            let role = async {
                let client = redis::Client::open(self.master_info(&address)?)?;
                let mut c = client.get_multiplexed_async_connection().await?;
                redis::cmd("ROLE").query_async::<Vec<Value>>(&mut c).await
            };
            let (host, port) = (&address.0, address.1);
            match tokio::time::timeout(within, role).await {
                Ok(Ok(role)) if matches!(role.first(), Some(Value::BulkString(r)) if r == b"master") =>
                {
                    return Ok(address);
                }
                Ok(Ok(_)) => last = format!("{host}:{port} is not a master (yet)"),
                Ok(Err(e)) => last = format!("{host}:{port} failed: {e}"),
                Err(_) => last = format!("{host}:{port} did not answer in time"),
            }
        }
        Err(last)
    }

    /// Uses the master at `address` from now on; true if it changed.
    fn settle(&self, address: (String, u16)) -> RedisResult<bool> {
        if self.current().is_some_and(|m| m.address == address) {
            return Ok(false);
        }
        let client = redis::Client::open(self.master_info(&address)?)?;
        let pool = pool_of(&client, self.pool_size, &self.manager)?;
        let master = Master {
            address,
            client,
            pool,
            next: AtomicUsize::new(0),
        };
        *self.master.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(master));
        self.moved.send_modify(|n| *n += 1);
        Ok(true)
    }
}

impl Sentinel {
    /// How to reach the master at `address`: plain TCP, with its password if configured
    /// (set as a field: no URL to escape it in).
    fn master_info(&self, (host, port): &(String, u16)) -> RedisResult<redis::ConnectionInfo> {
        use redis::IntoConnectionInfo;
        let info = redis::ConnectionAddr::Tcp(host.clone(), *port).into_connection_info()?;
        Ok(match &self.password {
            Some(password) => {
                let settings = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(settings)
            }
            None => info,
        })
    }
}

/// With Sentinel: asks the sentinels for the master every 500 ms, and at once when told
/// (`Backend::failed`), and moves the broker's connections when it changed.
pub(crate) async fn watch_sentinels(inner: Arc<crate::inner::Inner>) {
    const EVERY: Duration = Duration::from_millis(500);
    let Some(sentinel) = inner.link.sentinel() else {
        return;
    };
    let mut failing = false;
    loop {
        match sentinel.ask().await {
            Ok(address) => {
                failing = false;
                let shown = format!("{}:{}", address.0, address.1);
                match sentinel.settle(address) {
                    Ok(true) => {
                        info!(master = %shown, name = %sentinel.name, "redis master (from the sentinels)");
                        inner.presence.refresh_all();
                    }
                    Ok(false) => {}
                    Err(e) => {
                        warn!(master = %shown, error = %e, "cannot use the master the sentinels named")
                    }
                }
            }
            Err(why) => {
                if !failing {
                    warn!(name = %sentinel.name, error = %why, "cannot learn the redis master from the sentinels; asking again");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = sentinel.ask.notified() => {}
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
    pub(crate) async fn ping(self, connection: Conn) -> RedisResult<()> {
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
