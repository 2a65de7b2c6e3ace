//! The node's one pub/sub connection, owned by one task: it subscribes to the channels of
//! the projects that have members here, delivers their messages to the hub in the order
//! Redis published them, and fills any gap from the history.
//!
//! Per project, a [`Follower`] knows the epoch and the last offset delivered on this node
//! and decides every message (`ws_core::follower`):
//! - a message at or below the last offset is a duplicate and is dropped;
//! - a message beyond the next offset means messages were missed (the connection dropped):
//!   they are read from the history and delivered first;
//! - a message of another epoch means Redis lost the project's history: the project's
//!   connections are closed with 1013, and reconnect to learn `recovered: false`.
//!
//! This task only does the IO: it reads the channel and the history, delivers to the hub
//! and closes what the follower says is lost.
//!
//! After a reconnect, every project is subscribed again, then caught up from the history,
//! before any message of the new connection is delivered.
//!
//! On a Redis Cluster the connection is a cluster connection (RESP3) and each project's
//! channel is a sharded one (`SSUBSCRIBE`, sent per hash slot, to the shard holding the
//! project). The session ends, and everything is subscribed again on a fresh cluster
//! connection, whenever a shard may have dropped messages: a node's connection closed
//! (its master failed), or Redis dropped one of our subscriptions itself (`sunsubscribe`
//! from the server: the slot moved to another node, after a failover or a resharding).
//! The catch-up from the history then fills what the move hid, exactly as after a
//! standalone reconnect.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{Msg, PushInfo, PushKind, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};
use tracing::{debug, warn};
use ws_core::follower::{Fill, Follower, Verdict};
use ws_core::{Close, CloseCode, ProjectId};
use ws_transport::broker::BrokerError;

use crate::frame::parse_live;
use crate::inner::Inner;
use crate::link::{self, Conn, Probe};

/// Projects without members here are unsubscribed this often.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// The pub/sub connection is pinged this often, so a silent Redis is noticed.
const PING_EVERY: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Channels per SUBSCRIBE.
const BATCH: usize = 512;

/// What the broker asks of the pub/sub task.
#[derive(Debug)]
pub(crate) enum Request {
    /// Subscribe to `project` (if not yet) and answer once Redis confirmed it.
    Subscribe {
        project: ProjectId,
        done: oneshot::Sender<Result<(), BrokerError>>,
    },
    /// A member of `project` was told its epoch is `epoch`.
    Seed { project: ProjectId, epoch: String },
}

pub(crate) struct Subscriber {
    inner: Arc<Inner>,
    requests: mpsc::UnboundedReceiver<Request>,
    projects: HashMap<ProjectId, Follower>,
    /// The last stored message delivered per project, to tell after a reconnect whether
    /// Redis still has it (see [`Subscriber::verify`]).
    delivered: HashMap<ProjectId, Delivered>,
}

/// A message this node delivered: its stream, offset and a digest of its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    epoch: String,
    offset: u64,
    digest: u64,
}

fn digest(frame: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(frame)
}

/// Why a pub/sub session ended.
enum End {
    /// The connection failed: logged, then reconnected.
    Lost(Box<dyn std::error::Error + Send + Sync>),
    /// The broker is gone.
    Stopped,
}

impl Subscriber {
    pub(crate) fn new(inner: Arc<Inner>, requests: mpsc::UnboundedReceiver<Request>) -> Self {
        Self {
            inner,
            requests,
            projects: HashMap::new(),
            delivered: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        loop {
            let connected = timeout(self.inner.config.connect_timeout, self.connect()).await;
            match connected {
                Ok(Ok(feed)) => {
                    failures = 0;
                    backoff = BACKOFF_MIN;
                    let end = self.session(feed).await;
                    self.inner.set_subscribed_up(false);
                    match end {
                        End::Stopped => return,
                        End::Lost(why) => warn!(
                            error = %why,
                            "redis pub/sub connection lost: connections stay open, publishes answer 503; reconnecting"
                        ),
                    }
                }
                Ok(Err(e)) => {
                    failures += 1;
                    if failures == 1 {
                        warn!(error = %e, "cannot connect to redis for pub/sub; retrying");
                    }
                }
                Err(_) => {
                    failures += 1;
                    if failures == 1 {
                        warn!("connecting to redis for pub/sub timed out; retrying");
                    }
                }
            }
            // Refuse new subscriptions until connected again: their connections get 1013.
            let until = Instant::now() + backoff;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => break,
                    request = self.requests.recv() => match request {
                        Some(request) => self.refuse(request),
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// A new pub/sub connection: to the one Redis, or to the cluster.
    async fn connect(&self) -> RedisResult<Feed> {
        if let Some(client) = self.inner.link.client() {
            let (sink, stream) = client?.get_async_pubsub().await?.split();
            return Ok(Feed::Plain { sink, stream });
        }
        let (pushes, receiver) = mpsc::unbounded_channel();
        let config = &self.inner.config;
        let client = redis::cluster::ClusterClientBuilder::new(
            self.inner.link.seeds().iter().map(String::as_str),
        )
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.command_timeout)
        .retries(4)
        .min_retry_wait(20)
        .max_retry_wait(200)
        .push_sender(pushes)
        .build()?;
        let connection = client.get_async_connection().await?;
        Ok(Feed::Sharded {
            connection,
            pushes: receiver,
            leaving: HashSet::new(),
        })
    }

    fn refuse(&mut self, request: Request) {
        match request {
            Request::Subscribe { done, .. } => {
                let _ = done.send(Err(BrokerError::unavailable(
                    "redis pub/sub is reconnecting",
                )));
            }
            Request::Seed { project, epoch } => self.seed(&project, &epoch),
        }
    }

    fn seed(&mut self, project: &ProjectId, epoch: &str) {
        if let Some(follower) = self.projects.get_mut(project) {
            follower.handle_seed(epoch);
        }
    }

    async fn session(&mut self, mut feed: Feed) -> End {
        let command_timeout = self.inner.config.command_timeout;
        let channels: Vec<String> = self
            .projects
            .keys()
            .map(|p| self.inner.keys.channel(p))
            .collect();
        for chunk in channels.chunks(BATCH) {
            match timeout(command_timeout, feed.subscribe(chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return End::Lost(Box::new(e)),
                Err(_) => return End::Lost("SUBSCRIBE timed out".into()),
            }
        }
        // The command connections died with Redis too: replace them before saying ready.
        self.inner.health_check().await;
        self.inner.set_subscribed_up(true);
        self.inner.presence.refresh_all();
        // Whatever was published while this node was not subscribed is in the history.
        let projects: Vec<ProjectId> = self.projects.keys().cloned().collect();
        for project in projects {
            if let Err(e) = self.verify(&project).await {
                return End::Lost(Box::new(e));
            }
            if let Err(e) = self.catch_up(&project).await {
                return End::Lost(Box::new(e));
            }
        }

        // Sentinel: a new master means a new session on it.
        let mut moves = self.inner.link.moves();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let mut ping = tokio::time::interval(PING_EVERY);
        sweep.reset();
        ping.reset();
        loop {
            let result = tokio::select! {
                incoming = feed.next() => match incoming {
                    Some(Incoming::Plain(message)) => {
                        self.on_message(message.get_channel_name(), message.get_payload_bytes()).await
                    }
                    Some(Incoming::Sharded { channel, payload }) => {
                        self.on_message(&String::from_utf8_lossy(&channel), &payload).await
                    }
                    Some(Incoming::Lost(why)) => Err(BrokerError::unavailable(why)),
                    None => Err(BrokerError::unavailable("the connection closed")),
                },
                request = self.requests.recv() => match request {
                    Some(request) => self.handle(request, &mut feed).await,
                    None => return End::Stopped,
                },
                _ = sweep.tick() => self.sweep(&mut feed).await,
                () = master_moved(&mut moves) => Err(BrokerError::unavailable("the sentinels named another master")),
                _ = ping.tick() => match timeout(command_timeout, feed.ping()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(BrokerError::caused_by("", e)),
                    Err(_) => Err(BrokerError::unavailable("PING timed out")),
                },
            };
            if let Err(e) = result {
                return End::Lost(Box::new(e));
            }
        }
    }

    /// Subscribes to every project asked for (all the requests waiting, in one SUBSCRIBE),
    /// and answers once each is confirmed and its stream's position is known.
    async fn handle(&mut self, first: Request, sink: &mut Feed) -> Result<(), BrokerError> {
        let mut wanted: HashMap<ProjectId, Vec<oneshot::Sender<Result<(), BrokerError>>>> =
            HashMap::new();
        let mut next = Some(first);
        while let Some(request) = next {
            match request {
                Request::Seed { project, epoch } => self.seed(&project, &epoch),
                Request::Subscribe { project, done } => {
                    if self.projects.contains_key(&project) {
                        let _ = done.send(Ok(()));
                    } else {
                        wanted.entry(project).or_default().push(done);
                    }
                }
            }
            next = if wanted.len() < BATCH {
                self.requests.try_recv().ok()
            } else {
                None
            };
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let projects: Vec<ProjectId> = wanted.keys().cloned().collect();
        let result = self.subscribe_new(&projects, sink).await;
        for (_, waiters) in wanted {
            for done in waiters {
                let _ = done.send(result.clone());
            }
        }
        result
    }

    async fn subscribe_new(
        &mut self,
        projects: &[ProjectId],
        sink: &mut Feed,
    ) -> Result<(), BrokerError> {
        let channels: Vec<String> = projects
            .iter()
            .map(|p| self.inner.keys.channel(p))
            .collect();
        match timeout(self.inner.config.command_timeout, sink.subscribe(&channels)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(BrokerError::caused_by("redis", e)),
            Err(_) => return Err(BrokerError::unavailable("SUBSCRIBE timed out")),
        }
        // Where each stream stands now: later messages arrive on the channel; earlier ones are
        // in the history, which every member reads after this answer.
        let reads = projects
            .iter()
            .map(|project| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(self.inner.keys.meta(project))
                    .arg("epoch")
                    .arg("top");
                cmd
            })
            .collect();
        let metas: Vec<(Option<String>, Option<u64>)> = self.inner.query_each(reads).await?;
        for (project, (epoch, top)) in projects.iter().zip(metas) {
            self.projects
                .insert(project.clone(), Follower::new(epoch, top.unwrap_or(0)));
        }
        debug!(projects = projects.len(), "subscribed");
        Ok(())
    }

    /// Unsubscribes from the projects that have no member on this node any more.
    async fn sweep(&mut self, sink: &mut Feed) -> Result<(), BrokerError> {
        let idle: Vec<ProjectId> = self
            .projects
            .keys()
            .filter(|p| !self.inner.hub.has_members(p))
            .cloned()
            .collect();
        if idle.is_empty() {
            return Ok(());
        }
        for project in &idle {
            self.projects.remove(project);
            self.delivered.remove(project);
        }
        for chunk in idle.chunks(BATCH) {
            let channels: Vec<String> = chunk.iter().map(|p| self.inner.keys.channel(p)).collect();
            match timeout(
                self.inner.config.command_timeout,
                sink.unsubscribe(&channels),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(BrokerError::caused_by("redis", e)),
                Err(_) => return Err(BrokerError::unavailable("UNSUBSCRIBE timed out")),
            }
        }
        debug!(
            projects = idle.len(),
            "unsubscribed from projects without members"
        );
        Ok(())
    }

    async fn on_message(&mut self, channel: &str, payload: &[u8]) -> Result<(), BrokerError> {
        let Some(project) = self.inner.keys.project_of_channel(channel) else {
            return Ok(());
        };
        let Some(live) = parse_live(payload) else {
            warn!(project = %project, "unreadable message on a project channel; skipped");
            return Ok(());
        };
        // Only the publishing node honours an origin: it names one of its connections.
        let except = live
            .origin
            .filter(|o| o.node == self.inner.node)
            .map(|o| o.conn);
        let Some(follower) = self.projects.get_mut(&project) else {
            // Unsubscribed meanwhile: nobody here to deliver to.
            return Ok(());
        };
        let Some((epoch, offset)) = live.position else {
            // Ephemeral: no offset, so the follower neither sees nor orders it.
            self.inner.hub.deliver(&project, None, live.frame, except);
            return Ok(());
        };
        match follower.handle_message(&epoch, offset) {
            Verdict::Deliver => {}
            Verdict::Duplicate => return Ok(()),
            Verdict::Gap { .. } => {
                self.catch_up(&project).await?;
                if !self.admit(&project, offset) {
                    return Ok(());
                }
            }
            Verdict::Lost(_) => {
                history_lost(&self.inner, &project);
                if !self.admit(&project, offset) {
                    return Ok(());
                }
            }
        }
        self.record(&project, &epoch, offset, &live.frame);
        self.inner
            .hub
            .deliver(&project, Some(offset), live.frame, except);
        Ok(())
    }

    fn record(&mut self, project: &ProjectId, epoch: &str, offset: u64, frame: &str) {
        let delivered = Delivered {
            epoch: epoch.to_owned(),
            offset,
            digest: digest(frame),
        };
        match self.delivered.get_mut(project) {
            Some(d) => *d = delivered,
            None => {
                self.delivered.insert(project.clone(), delivered);
            }
        }
    }

    /// After a reconnect: whether Redis still holds the last message this node delivered
    /// of `project`, at its offset. A failover (Sentinel, or a cluster replica promoted
    /// after its primary died) can drop writes the old master had already published: the
    /// new master then gives their offsets to other messages, which the follower would
    /// take for duplicates. When the message is gone (the stream is below its offset) or
    /// another one holds its offset, the stream gets a new epoch (`Inner::fork_epoch`):
    /// every node closes the project's connections (1013) and every client learns
    /// `recovered: false`. A message already trimmed from the history cannot be checked.
    async fn verify(&mut self, project: &ProjectId) -> Result<(), BrokerError> {
        let Some(seen) = self.delivered.get(project).cloned() else {
            return Ok(());
        };
        let stream = self.inner.read(project, Some(seen.offset - 1)).await?;
        if stream.epoch != seen.epoch {
            return Ok(()); // the follower sees the new epoch and closes what it must
        }
        let diverged = stream.top < seen.offset
            || stream
                .messages
                .first()
                .is_some_and(|m| m.offset == seen.offset && digest(&m.frame) != seen.digest);
        if diverged {
            warn!(project = %project, offset = seen.offset, top = stream.top, "redis no longer has a message this node delivered (a failover dropped writes): the stream starts a new epoch, so that every client reloads");
            self.inner.fork_epoch(project, &seen.epoch).await?;
        }
        Ok(())
    }

    /// Whether the message at `offset` of `project` is to be delivered (`Follower::admit`).
    fn admit(&mut self, project: &ProjectId, offset: u64) -> bool {
        self.projects
            .get_mut(project)
            .is_some_and(|follower| follower.admit(offset))
    }

    /// Delivers what this node missed of `project` from the history; when the history no
    /// longer has it (or was lost), closes the project's connections so they recover.
    async fn catch_up(&mut self, project: &ProjectId) -> Result<(), BrokerError> {
        let Some(follower) = self.projects.get(project) else {
            return Ok(());
        };
        let stream = self.inner.read(project, Some(follower.last())).await?;
        let Some(follower) = self.projects.get_mut(project) else {
            return Ok(());
        };
        match follower.handle_fill(&stream.epoch, stream.top, stream.first) {
            Fill::Replay => {
                let missed = stream.messages.len();
                let mut last = None;
                for message in stream.messages {
                    if follower.admit(message.offset) {
                        last = Some((message.offset, digest(&message.frame)));
                        self.inner
                            .hub
                            .deliver(project, Some(message.offset), message.frame, None);
                    }
                }
                if let Some((offset, digest)) = last {
                    self.delivered.insert(
                        project.clone(),
                        Delivered {
                            epoch: stream.epoch,
                            offset,
                            digest,
                        },
                    );
                }
                if missed > 0 {
                    debug!(project = %project, missed, "caught up from the history");
                }
            }
            Fill::Lost(reason) => {
                debug!(project = %project, ?reason, "cannot catch up");
                history_lost(&self.inner, project);
            }
        }
        Ok(())
    }
}

/// The members of `project` here missed messages that are gone: they reconnect, and their
/// recovery tells them to reload their state.
fn history_lost(inner: &Inner, project: &ProjectId) {
    let close = Close::new(
        CloseCode::TRY_AGAIN_LATER,
        "history lost in the broker; reconnect",
    );
    let closed = inner.hub.close_project(project, &close);
    warn!(project = %project, closed, "messages of this project are gone from redis; closed its connections with 1013 so that they recover");
}

/// One session's pub/sub connection.
enum Feed {
    /// One Redis: a RESP2 pub/sub connection, split.
    Plain {
        sink: PubSubSink,
        stream: PubSubStream,
    },
    /// A cluster: sharded subscriptions on a RESP3 cluster connection, whose pushes arrive
    /// on `pushes`.
    Sharded {
        connection: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        /// Channels this node unsubscribed from and whose confirmation has not arrived yet:
        /// any other `sunsubscribe` comes from Redis (the slot moved).
        leaving: HashSet<Vec<u8>>,
    },
}

/// What the pub/sub connection brought.
enum Incoming {
    Plain(Msg),
    Sharded {
        channel: Vec<u8>,
        payload: Vec<u8>,
    },
    /// Messages may have been missed: start a new session.
    Lost(&'static str),
}

impl Feed {
    async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Plain { sink, .. } => sink.subscribe(channels).await,
            Self::Sharded {
                connection,
                leaving,
                ..
            } => {
                for channel in channels {
                    leaving.remove(channel.as_bytes());
                }
                // One SSUBSCRIBE per slot (a command's channels must share one), all at once.
                let calls = per_slot(channels).into_iter().map(|group| {
                    let mut connection = connection.clone();
                    async move { connection.ssubscribe(group).await }
                });
                futures_util::future::try_join_all(calls).await.map(drop)
            }
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Plain { sink, .. } => sink.unsubscribe(channels).await,
            Self::Sharded {
                connection,
                leaving,
                ..
            } => {
                leaving.extend(channels.iter().map(|c| c.as_bytes().to_vec()));
                let calls = per_slot(channels).into_iter().map(|group| {
                    let mut connection = connection.clone();
                    async move { connection.sunsubscribe(group).await }
                });
                futures_util::future::try_join_all(calls).await.map(drop)
            }
        }
    }

    /// Whether the connection still answers: on a cluster, every primary.
    async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Self::Plain { sink, .. } => sink.ping::<Value>().await.map(drop),
            Self::Sharded { connection, .. } => {
                Probe::AllPrimaries
                    .ping(Conn::Cluster(connection.clone()))
                    .await
            }
        }
    }

    async fn next(&mut self) -> Option<Incoming> {
        match self {
            Self::Plain { stream, .. } => stream.next().await.map(Incoming::Plain),
            Self::Sharded {
                pushes, leaving, ..
            } => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    PushKind::SMessage => {
                        let mut data = push.data.into_iter();
                        if let (
                            Some(Value::BulkString(channel)),
                            Some(Value::BulkString(payload)),
                        ) = (data.next(), data.next())
                        {
                            return Some(Incoming::Sharded { channel, payload });
                        }
                    }
                    PushKind::SUnsubscribe => {
                        let Some(Value::BulkString(channel)) = push.data.first() else {
                            continue;
                        };
                        if !leaving.remove(channel) {
                            debug!(channel = %String::from_utf8_lossy(channel), "sunsubscribe from redis");
                            return Some(Incoming::Lost(
                                "redis dropped a sharded subscription (its slot moved)",
                            ));
                        }
                    }
                    PushKind::Disconnection => {
                        return Some(Incoming::Lost("a redis cluster node's connection closed"));
                    }
                    _ => {}
                }
            },
        }
    }
}

/// `channels` grouped by hash slot.
fn per_slot(channels: &[String]) -> Vec<Vec<&String>> {
    let mut groups: HashMap<redis::cluster_routing::Slot, Vec<&String>> = HashMap::new();
    for channel in channels {
        groups.entry(link::slot(channel)).or_default().push(channel);
    }
    groups.into_values().collect()
}

/// Resolves when the sentinels name another master; never without Sentinel.
async fn master_moved(moves: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match moves {
        Some(moves) => {
            if moves.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
