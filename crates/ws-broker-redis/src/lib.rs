//! The Redis broker of wshub (SPEC §8): several `wshub` nodes on one Redis serve one set of
//! projects with one order, one history and one presence.
//!
//! ```text
//!  node A: Broker::publish ─► EVALSHA publish ─┐  one script, atomic in Redis:
//!                                              │  HINCRBY top → RPUSH history → PUBLISH channel
//!                                              ▼
//!  node B: one pub/sub connection ◄── "<epoch> <offset> <frame>" on wshub:{project}:messages
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
//! - History: a capped list per project (`history.size`, `history.max_bytes`,
//!   `history.ttl`), and a budget for the deployment (`history.max_total_bytes`, see
//!   `budget.rs`: the oldest idle projects are freed when over it); offsets and the
//!   epoch live in a hash. A Redis that lost its data starts a new epoch: clients get
//!   `recovered: false`, and connections open on that project are closed with 1013 so that
//!   they reconnect and learn it.
//! - Presence: each node's members live in a hash that expires `presence_ttl` after the
//!   node last refreshed it, so a crashed node's users leave within that time.
//! - Outage: publishes fail with [`BrokerError::Unavailable`], [`Broker::is_ready`] is
//!   false, open connections stay; once Redis answers again the node subscribes again and
//!   reads what it missed from the history.
//!
//! This crate is IO: it sits beside `ws-transport` and decides nothing about the protocol;
//! the recovery decision is `ws_core::history::decide_recovery`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod budget;
mod frame;
mod keys;
mod presence;
mod scripts;
mod subscriber;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use ws_core::history::{HistoryConfig, decide_recovery, retains_after};
use ws_core::{ProjectId, UserId};
use ws_transport::SharedHub;
use ws_transport::broker::{
    BoxFuture, Broker, BrokerError, HistoryPage, Publication, Replay, StoredMessage,
};

use crate::keys::Keys;
use crate::presence::Presence;
use crate::scripts::Scripts;
use crate::subscriber::{Request, Subscriber};

/// How the broker reaches Redis and what it keeps there.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, or `rediss://…` for TLS (checked against the
    /// system's root certificates; `SSL_CERT_FILE` names another bundle).
    pub url: String,
    /// Prefixes every key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Multiplexed connections for commands (the pub/sub connection comes on top).
    pub pool_size: usize,
    /// How long connecting to Redis may take.
    pub connect_timeout: Duration,
    /// How long one command may take before the broker counts Redis as unavailable.
    pub command_timeout: Duration,
    /// How long a node's presence announcement lives without a refresh: the users of a
    /// crashed node leave the cluster's presence within this time.
    pub presence_ttl: Duration,
    /// History kept per project.
    pub history: HistoryConfig,
    /// History kept across all projects of the deployment (`key_prefix`), in bytes of
    /// entries: over it, the oldest idle projects are freed.
    pub max_total_bytes: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".to_owned(),
            key_prefix: "wshub".to_owned(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(30),
            history: HistoryConfig::default(),
            max_total_bytes: ws_transport::broker::DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("presence_ttl", &self.presence_ttl)
            .field("history", &self.history)
            .field("max_total_bytes", &self.max_total_bytes)
            .finish()
    }
}

/// A Redis URL without its password, for logs.
///
/// The URL is read by redis' own parser (`redis::parse_redis_url`), so what is hidden is
/// what redis would send as a password: the userinfo's password of `redis://`, `rediss://`,
/// `valkey://` and `valkeys://`, and the `pass` query parameter of `redis+unix://`,
/// `valkey+unix://` and `unix://` (its name decoded as redis decodes it: `%70ass` is `pass`).
/// `password` is hidden as well, in every scheme: redis ignores it, but whoever wrote it
/// meant a secret. A URL that does not parse keeps only its scheme, since where its
/// password ends cannot be known. The username is not a secret and stays.
pub fn redact(url: &str) -> String {
    const HIDDEN: &str = "<redacted>";
    let Some(parsed) = redis::parse_redis_url(url) else {
        return match url.split_once("://") {
            Some((scheme, _))
                if scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
            {
                format!("{scheme}://{HIDDEN}")
            }
            _ => HIDDEN.to_owned(),
        };
    };
    // The serialisation, not the input: it is what the parser read, normalised.
    let mut out = parsed.as_str().to_owned();
    if let Some(password) = parsed.password() {
        // `scheme://user:password@…`: with a password, the serialisation always has this shape.
        let start = parsed.scheme().len() + "://".len() + parsed.username().len() + 1;
        let end = start + password.len();
        if out.get(start..end) != Some(password) {
            return format!("{}://{HIDDEN}", parsed.scheme());
        }
        out.replace_range(start..end, HIDDEN);
    }
    if let Some(query) = parsed.query() {
        // Split as `url::form_urlencoded::parse` does, which redis reads the query with.
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_password_name(name) => format!("{name}={HIDDEN}"),
                None if is_password_name(pair) => format!("{pair}={HIDDEN}"),
                _ => pair.to_owned(),
            })
            .collect();
        let start = out.find('?').map_or(out.len(), |i| i + 1);
        let end = start + query.len();
        if out.get(start..end) != Some(query) {
            return format!("{}://{HIDDEN}", parsed.scheme());
        }
        out.replace_range(start..end, &redacted.join("&"));
    }
    out
}

/// Whether a query parameter's name, still form-encoded, names a password.
fn is_password_name(encoded: &str) -> bool {
    let mut name = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.bytes();
    while let Some(b) = bytes.next() {
        name.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [bytes.next(), bytes.next()];
                let digits = hex.map(|d| d.and_then(|d| char::from(d).to_digit(16)));
                match digits {
                    [Some(hi), Some(lo)] => (hi * 16 + lo) as u8,
                    // Malformed escapes are kept as they are by the decoder: not a password name.
                    _ => return false,
                }
            }
            b => b,
        });
    }
    name.eq_ignore_ascii_case(b"pass") || name.eq_ignore_ascii_case(b"password")
}

/// Why the broker cannot start: the configuration is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL does not parse (or names TLS in a build without it); fix `url`.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] RedisError),
    /// Braces would break the key layout; pick another `key_prefix`.
    #[error("the key prefix must not contain '{{' or '}}'")]
    KeyPrefix,
    /// At least one command connection is needed.
    #[error("the pool size must be at least 1")]
    PoolSize,
    /// Zero durations would make every command fail.
    #[error("{0} must be longer than 0s")]
    Zero(&'static str),
}

impl RedisConfig {
    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::KeyPrefix);
        }
        if self.pool_size == 0 {
            return Err(ConfigError::PoolSize);
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
            ("presence_ttl", self.presence_ttl),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        redis::Client::open(self.url.as_str()).map_err(ConfigError::Url)?;
        Ok(())
    }
}

/// The broker. Starting it connects nothing yet: it is not ready (readiness 503, publishes
/// refused) until Redis answers, and it keeps trying in the background.
pub struct RedisBroker {
    inner: Arc<Inner>,
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
        let (requests, receiver) = mpsc::unbounded_channel();
        let (reports, report_receiver) = mpsc::unbounded_channel();
        let node = format!("{:016x}", rand::random::<u64>());
        let inner = Arc::new(Inner {
            hub,
            keys: Keys::new(&config.key_prefix),
            meta_ttl: config
                .history
                .ttl
                .max(config.presence_ttl * 3)
                .max(Duration::from_secs(60)),
            config,
            node,
            client,
            pool: pool.into_boxed_slice(),
            next: AtomicUsize::new(0),
            commands_up: AtomicBool::new(false),
            subscribed_up: AtomicBool::new(false),
            requests,
            presence: Presence::default(),
            scripts: Scripts::new(),
            reports,
            sweep_now: Notify::new(),
        });
        info!(
            url = %redact(&inner.config.url),
            prefix = %inner.config.key_prefix,
            node = %inner.node,
            "redis broker starting"
        );
        let tasks = vec![
            tokio::spawn(Subscriber::new(Arc::clone(&inner), receiver).run()),
            tokio::spawn(presence::maintain(Arc::clone(&inner))),
            tokio::spawn(budget::account(Arc::clone(&inner), report_receiver)),
            tokio::spawn(budget::sweep(Arc::clone(&inner))),
        ];
        Ok(Self { inner, tasks })
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
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(self.inner.publish(project, publication))
    }

    fn recover<'a>(
        &'a self,
        project: &'a ProjectId,
        since: Option<(u64, &'a str)>,
    ) -> BoxFuture<'a, Result<Replay, BrokerError>> {
        Box::pin(self.inner.recover(project, since))
    }

    fn history<'a>(
        &'a self,
        project: &'a ProjectId,
        since: u64,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        Box::pin(self.inner.history(project, since))
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

/// What the broker's tasks share.
pub(crate) struct Inner {
    hub: SharedHub,
    config: RedisConfig,
    keys: Keys,
    /// How long a project's offsets and epoch outlive its last publish or connection.
    meta_ttl: Duration,
    node: String,
    client: redis::Client,
    pool: Box<[ConnectionManager]>,
    next: AtomicUsize,
    /// The last command (or health check) reached Redis.
    commands_up: AtomicBool,
    /// The pub/sub connection is subscribed.
    subscribed_up: AtomicBool,
    requests: mpsc::UnboundedSender<Request>,
    presence: Presence,
    scripts: Scripts,
    /// What publishes left in their projects' histories, for the deployment's budget.
    reports: mpsc::UnboundedSender<budget::Report>,
    /// The total is over the budget: sweep now rather than at the next tick.
    sweep_now: Notify,
}

/// A project's stream as read from Redis.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) epoch: String,
    pub(crate) top: u64,
    /// The oldest retained offset (`top + 1` when nothing is retained).
    pub(crate) first: u64,
    /// The retained messages after the `since` asked for, oldest first.
    pub(crate) messages: Vec<StoredMessage>,
}

impl Inner {
    fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[i].clone()
    }

    /// Runs one Redis call under `command_timeout` on a pooled connection, keeping
    /// readiness up to date. The manager replaces a connection found dead; an `idempotent`
    /// call then tries once more, a publish does not (it may have gone through).
    async fn call<T, F, Fut>(&self, idempotent: bool, f: F) -> Result<T, BrokerError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.call_on(self.connection(), idempotent, f).await
    }

    async fn call_on<T, F, Fut>(
        &self,
        connection: ConnectionManager,
        idempotent: bool,
        f: F,
    ) -> Result<T, BrokerError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut result = self.attempt(f(connection.clone())).await;
        if idempotent && matches!(result, Err((_, true))) {
            result = self.attempt(f(connection)).await;
        }
        match result {
            Ok(value) => {
                self.set_commands_up(true);
                Ok(value)
            }
            Err((e, lost)) => {
                if lost {
                    self.set_commands_up(false);
                }
                Err(e)
            }
        }
    }

    /// One try; the error says whether the connection is lost.
    async fn attempt<T>(
        &self,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, (BrokerError, bool)> {
        match tokio::time::timeout(self.config.command_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err((
                BrokerError::Unavailable(format!("redis: {e}")),
                is_connection_error(&e),
            )),
            Err(_) => Err((
                BrokerError::Unavailable(
                    "redis did not answer within broker.command_timeout".to_owned(),
                ),
                true,
            )),
        }
    }

    fn set_commands_up(&self, up: bool) {
        if self.commands_up.swap(up, Ordering::SeqCst) != up {
            if up {
                info!("redis answers commands");
            } else {
                warn!("redis does not answer commands: publishes answer 503 until it does");
            }
        }
    }

    fn set_subscribed_up(&self, up: bool) {
        if self.subscribed_up.swap(up, Ordering::SeqCst) != up && up {
            info!("redis pub/sub subscribed");
        }
    }

    async fn publish(
        &self,
        project: &ProjectId,
        publication: Publication,
    ) -> Result<u64, BrokerError> {
        let (head, tail) = frame::message_parts(&publication);
        let mut invocation = self.scripts.publish.prepare_invoke();
        invocation
            .key(self.keys.meta(project))
            .key(self.keys.history(project))
            .arg(new_epoch())
            .arg(head)
            .arg(tail)
            .arg(self.keys.channel(project))
            .arg(self.config.history.size)
            .arg(millis(self.config.history.ttl))
            .arg(millis(self.meta_ttl))
            .arg(self.config.history.max_bytes);
        let invocation = &invocation;
        let (offset, bytes, ms) = self
            .call(false, |mut c| async move {
                invocation.invoke_async::<(u64, u64, u64)>(&mut c).await
            })
            .await?;
        // Accounted in the background: the deployment's keys are not the project's.
        self.report(project, bytes, ms);
        Ok(offset)
    }

    async fn recover(
        &self,
        project: &ProjectId,
        since: Option<(u64, &str)>,
    ) -> Result<Replay, BrokerError> {
        // Subscribed before the history is read: nothing published in between is missed,
        // and the connection's watermark drops what arrives twice.
        self.subscribe(project).await?;
        self.presence.announce(project);
        let stream = self.read(project, since.map(|(offset, _)| offset)).await?;
        let _ = self.requests.send(Request::Seed {
            project: project.clone(),
            epoch: stream.epoch.clone(),
        });
        let recovered = since.is_some_and(|(since, epoch)| {
            decide_recovery(&stream.epoch, stream.top, stream.first, since, epoch).is_ok()
        });
        Ok(Replay {
            epoch: stream.epoch,
            top: stream.top,
            recovered,
            missed: if recovered {
                stream.messages
            } else {
                Vec::new()
            },
        })
    }

    async fn history(&self, project: &ProjectId, since: u64) -> Result<HistoryPage, BrokerError> {
        let stream = self.read(project, Some(since)).await?;
        Ok(HistoryPage {
            complete: retains_after(stream.top, stream.first, since),
            epoch: stream.epoch,
            top: stream.top,
            messages: stream.messages,
        })
    }

    /// Asks the pub/sub task to subscribe to `project` and waits until Redis confirmed it.
    async fn subscribe(&self, project: &ProjectId) -> Result<(), BrokerError> {
        let (done, answer) = oneshot::channel();
        let request = Request::Subscribe {
            project: project.clone(),
            done,
        };
        let gone = || BrokerError::Unavailable("the redis pub/sub task has stopped".to_owned());
        self.requests.send(request).map_err(|_| gone())?;
        let wait = self.config.connect_timeout + self.config.command_timeout * 2;
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(BrokerError::Unavailable(
                "redis did not confirm the subscription in time".to_owned(),
            )),
        }
    }

    /// The project's epoch, newest offset and retained messages after `since` (none when
    /// `since` is `None`). Creates the stream (a new epoch) when Redis has none.
    pub(crate) async fn read(
        &self,
        project: &ProjectId,
        since: Option<u64>,
    ) -> Result<StreamState, BrokerError> {
        let mut invocation = self.scripts.read.prepare_invoke();
        invocation
            .key(self.keys.meta(project))
            .key(self.keys.history(project))
            .arg(new_epoch())
            .arg(since.map(|s| s.to_string()).unwrap_or_default())
            .arg(millis(self.meta_ttl));
        let invocation = &invocation;
        let (epoch, top, seconds, micros, entries): (String, u64, u64, u64, Vec<Vec<u8>>) = self
            .call(true, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        let now_ms = seconds * 1000 + micros / 1000;
        let ttl_ms = millis(self.config.history.ttl);
        let Some(mut entries) = entries
            .into_iter()
            .map(frame::parse_entry)
            .collect::<Option<Vec<_>>>()
        else {
            warn!(project = %project, "unreadable history entry in redis; treating the history as lost");
            return Ok(StreamState {
                epoch,
                top,
                first: top + 1,
                messages: Vec::new(),
            });
        };
        let expired = entries
            .iter()
            .take_while(|e| e.at_ms.saturating_add(ttl_ms) < now_ms)
            .count();
        entries.drain(..expired);
        let contiguous = entries
            .iter()
            .zip(entries.iter().skip(1))
            .all(|(a, b)| b.offset == a.offset + 1)
            && entries.last().is_none_or(|e| e.offset == top);
        if !contiguous {
            warn!(project = %project, "history in redis does not match its offsets; treating it as lost");
            entries.clear();
        }
        Ok(StreamState {
            first: entries.first().map_or(top + 1, |e| e.offset),
            epoch,
            top,
            messages: entries
                .into_iter()
                .map(|e| StoredMessage {
                    offset: e.offset,
                    frame: e.frame,
                })
                .collect(),
        })
    }

    /// Every node's members of `project`: this node's (`local`, exact), the others' from
    /// their announcements in Redis (at most a presence tick old).
    async fn cluster_presence(
        &self,
        project: &ProjectId,
        local: Vec<(UserId, u32)>,
    ) -> Result<Vec<(UserId, u32)>, BrokerError> {
        let set = self.keys.presence(project);
        let mut invocation = self.scripts.presence.prepare_invoke();
        invocation.key(&set).arg(format!("{set}:")).arg(&self.node);
        let invocation = &invocation;
        let remote: Vec<(String, u32)> = self
            .call(true, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        // A map, not a scan of the list per remote entry: the merge is linear in the
        // cluster's users, whatever their spread over the nodes.
        let mut users: std::collections::BTreeMap<UserId, u32> = local.into_iter().collect();
        for (user, connections) in remote {
            let n = users.entry(UserId::new(user)).or_insert(0);
            *n = n.saturating_add(connections);
        }
        Ok(users.into_iter().collect())
    }

    /// Replaces this node's announcement of `project` with `users` (none: withdraws it).
    pub(crate) async fn announce(
        &self,
        project: &ProjectId,
        users: &[(UserId, u32)],
    ) -> Result<(), BrokerError> {
        let mut invocation = self.scripts.announce.prepare_invoke();
        invocation
            .key(self.keys.presence(project))
            .key(self.keys.presence_of(project, &self.node))
            .key(self.keys.meta(project))
            .arg(&self.node)
            .arg(millis(self.config.presence_ttl))
            .arg(millis(self.meta_ttl));
        for (user, connections) in users {
            invocation.arg(user.as_str()).arg(*connections);
        }
        let invocation = &invocation;
        self.call(true, |mut c| async move {
            invocation.invoke_async::<()>(&mut c).await
        })
        .await
    }

    async fn withdraw_presence(&self) {
        for project in self.presence.announced() {
            if let Err(e) = self.announce(&project, &[]).await {
                warn!(project = %project, error = %e, "could not withdraw this node's presence; it expires on its own");
                return;
            }
        }
    }

    /// Checks that Redis answers commands, on every pooled connection.
    pub(crate) async fn health_check(&self) {
        for connection in &self.pool {
            let ping = |mut c: ConnectionManager| async move {
                redis::cmd("PING").query_async::<()>(&mut c).await
            };
            if self.call_on(connection.clone(), true, ping).await.is_err() {
                return;
            }
        }
    }
}

/// Whether `e` says Redis cannot be reached (rather than that a command was wrong).
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// A fresh epoch: the time and 32 random bits, so a stream recreated after Redis lost its
/// data never gets a name a client may still hold.
fn new_epoch() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!("{ms:x}-{:08x}", rand::random::<u32>())
}

/// This machine's clock in Unix milliseconds (presence scores are Redis milliseconds; nodes
/// and Redis are expected to agree within a second, as for presence).
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("redis://:s3cret@cache:6379/0"),
            "redis://:<redacted>@cache:6379/0"
        );
        assert_eq!(
            redact("rediss://app:s3cret@cache.example.com:6380"),
            "rediss://app:<redacted>@cache.example.com:6380"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        // Every form redis' URL parser (redis 1.8, `connection.rs`) reads a password from:
        // the userinfo of the TCP schemes, `pass=` in the query of the unix ones.
        let cases = [
            (
                "redis://app:s3cret@cache:6379/0",
                "redis://app:<redacted>@cache:6379/0",
            ),
            ("valkey://:s3cret@cache", "valkey://:<redacted>@cache"),
            (
                "valkeys://app:s3cret@cache/#insecure",
                "valkeys://app:<redacted>@cache/#insecure",
            ),
            // The last '@' ends the userinfo: an '@' in the password stays hidden.
            (
                "redis://:s3c@ret@cache:6379",
                "redis://:<redacted>@cache:6379",
            ),
            (
                "redis://:s3cret@cache?protocol=resp3",
                "redis://:<redacted>@cache?protocol=resp3",
            ),
            (
                "redis+unix:///run/redis.sock?pass=s3cret",
                "redis+unix:///run/redis.sock?pass=<redacted>",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&user=app&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&user=app&pass=<redacted>",
            ),
            (
                "unix:///run/redis.sock?pass=s3cret&db=2",
                "unix:///run/redis.sock?pass=<redacted>&db=2",
            ),
            (
                "valkey+unix:///v.sock?pass=s3cret",
                "valkey+unix:///v.sock?pass=<redacted>",
            ),
            // The parser decodes the query's names: `%70ass` is `pass`.
            (
                "unix:///r.sock?%70ass=s3cret",
                "unix:///r.sock?%70ass=<redacted>",
            ),
            // Repeated: the parser keeps the last, both are hidden.
            (
                "unix:///r.sock?pass=s3cret&pass=s3cret2",
                "unix:///r.sock?pass=<redacted>&pass=<redacted>",
            ),
            // Not read by redis 1.8, but plainly meant as a password: hidden too.
            (
                "unix:///r.sock?password=s3cret",
                "unix:///r.sock?password=<redacted>",
            ),
            (
                "redis://cache/0?pass=s3cret",
                "redis://cache/0?pass=<redacted>",
            ),
            ("unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact(url), redacted, "{url}");
            assert!(!redact(url).contains("s3c"), "{url}");
        }
        // What does not parse cannot be redacted piece by piece: only its scheme is kept.
        for url in [
            "redis://:s3cret@",
            "http://:s3cret@cache",
            ":s3cret@cache",
            "redis://:s3c ret@[::",
        ] {
            assert!(!redact(url).contains("s3c"), "{url}: {}", redact(url));
        }
        let config = RedisConfig {
            url: "redis://:s3cret@h/0".to_owned(),
            ..RedisConfig::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn configuration_is_checked() {
        let ok = RedisConfig::default();
        assert!(ok.validate().is_ok());
        let check = |f: fn(&mut RedisConfig)| {
            let mut c = RedisConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(check(|c| c.key_prefix = "a{b".to_owned()).contains("prefix"));
        assert!(check(|c| c.pool_size = 0).contains("pool size"));
        assert!(check(|c| c.command_timeout = Duration::ZERO).contains("command_timeout"));
        assert!(check(|c| c.url = "http://x".to_owned()).contains("invalid Redis URL"));
        let tls = RedisConfig {
            url: "rediss://:pw@cache.example.com:6380/0".to_owned(),
            ..RedisConfig::default()
        };
        assert!(tls.validate().is_ok());
    }

    #[test]
    fn epochs_differ() {
        assert_ne!(new_epoch(), new_epoch());
    }
}
