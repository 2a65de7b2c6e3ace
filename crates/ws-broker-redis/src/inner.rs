//! What the broker's tasks share ([`Inner`]) and its Redis calls: readiness, the publish,
//! read, recover, history and presence scripts. The connections are `link::Backend`'s
//! (one Redis or a cluster); this file does not care which, except where a cluster needs a
//! pipeline per hash slot.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};
use ws_core::envelope::ServerFrame;
use ws_core::history::retains_after;
use ws_core::{ProjectId, UserId};
use ws_transport::SharedHub;
use ws_transport::broker::{
    BrokerError, HistoryPage, HistoryQuery, Position, Publication, Published, Replay, StoredMessage,
};

use crate::config::{ConfigError, RedisConfig};
use crate::frame::Origin;
use crate::key_layout::KeyLayout;
use crate::link::{self, Backend, Conn};
use crate::presence::Presence;
use crate::scripts::Scripts;
use crate::subscriber::Request;
use crate::{budget, frame};

/// What the broker's tasks share.
pub(crate) struct Inner {
    pub(crate) hub: SharedHub,
    pub(crate) config: RedisConfig,
    pub(crate) keys: KeyLayout,
    /// How long a project's offsets and epoch outlive its last publish or connection.
    pub(crate) meta_ttl: Duration,
    pub(crate) node: String,
    /// The command connections: one Redis or a cluster.
    pub(crate) link: Backend,
    /// The last command (or health check) reached Redis.
    pub(crate) commands_up: AtomicBool,
    /// The pub/sub connection is subscribed.
    pub(crate) subscribed_up: AtomicBool,
    pub(crate) requests: mpsc::UnboundedSender<Request>,
    pub(crate) presence: Presence,
    pub(crate) scripts: Scripts,
    /// What publishes left in their projects' histories, for the deployment's budget.
    pub(crate) reports: mpsc::UnboundedSender<budget::Report>,
    /// The total is over the budget: sweep now rather than at the next tick.
    pub(crate) sweep_now: Notify,
    /// Membership decided for the whole cluster (`cluster.rs`).
    pub(crate) cluster: crate::cluster::Cluster,
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
    /// Opens the (lazy) connections for `config`: nothing connects yet.
    pub(crate) fn new(
        hub: SharedHub,
        config: RedisConfig,
        requests: mpsc::UnboundedSender<Request>,
        reports: mpsc::UnboundedSender<budget::Report>,
    ) -> Result<Self, ConfigError> {
        let link = Backend::open(&config)?;
        let node = format!("{:016x}", rand::random::<u64>());
        Ok(Self {
            hub,
            keys: KeyLayout::new(&config.key_prefix),
            // Outlives the longest history of any namespace: an epoch must not expire while
            // messages of its stream are still retained.
            meta_ttl: config
                .longest_history_ttl()
                .max(config.presence_ttl * 3)
                .max(Duration::from_secs(60)),
            config,
            node,
            commands_up: AtomicBool::new(false),
            subscribed_up: AtomicBool::new(false),
            requests,
            presence: Presence::default(),
            scripts: Scripts::new(link.is_cluster()),
            link,
            reports,
            sweep_now: Notify::new(),
            cluster: crate::cluster::Cluster::new(),
        })
    }

    /// Runs one Redis call under `command_timeout` on a pooled connection, keeping
    /// readiness up to date. The manager replaces a connection found dead; an `idempotent`
    /// call then tries once more, a publish does not (it may have gone through).
    pub(crate) async fn call<T, F, Fut>(&self, idempotent: bool, f: F) -> Result<T, BrokerError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.call_on(self.link.connection(), idempotent, f).await
    }

    /// `commands`, each a single-key command, answered in order: one pipeline on a single
    /// Redis; on a cluster, where the keys may live on several nodes, each command on its
    /// own (all sent at once: the cluster connection multiplexes them).
    pub(crate) async fn query_each<T>(
        &self,
        commands: Vec<redis::Cmd>,
    ) -> Result<Vec<T>, BrokerError>
    where
        T: redis::FromRedisValue + Send,
    {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        if !self.link.is_cluster() {
            let mut pipe = redis::pipe();
            for command in commands {
                pipe.add_command(command);
            }
            let pipe = &pipe;
            return self
                .call(true, |mut c| async move { pipe.query_async(&mut c).await })
                .await;
        }
        let calls = commands.iter().map(|command| {
            self.call(true, move |mut c| async move {
                command.query_async(&mut c).await
            })
        });
        futures_util::future::try_join_all(calls).await
    }

    async fn call_on<T, F, Fut>(
        &self,
        connection: Conn,
        idempotent: bool,
        f: F,
    ) -> Result<T, BrokerError>
    where
        F: Fn(Conn) -> Fut,
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
            Err((e, mut lost)) => {
                if let Some(cause) = redis_error(&e) {
                    lost |= self.link.failed(cause);
                }
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
            Ok(Err(e)) => {
                let lost = is_connection_error(&e);
                Err((BrokerError::caused_by("redis", e), lost))
            }
            Err(_) => Err((
                BrokerError::unavailable("redis did not answer within broker.command_timeout"),
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

    pub(crate) fn set_subscribed_up(&self, up: bool) {
        if self.subscribed_up.swap(up, Ordering::SeqCst) != up && up {
            info!("redis pub/sub subscribed");
        }
    }

    /// Publishes `items` in one round trip: a pipeline of one command per item, in the
    /// items' order: EVALSHA of the publish script, or PUBLISH for an ephemeral item
    /// (`frame::ephemeral_payload`: no offset, history or key). Redis runs a connection's
    /// commands in the order they were sent, so each project's items take their offsets in
    /// the items' order, and each item is still one atomic script (a single publish's
    /// dedupe and offset logic, unchanged). One answer per item, in the items' order: a
    /// failed item (a script error) does not stop the others; a lost connection or a
    /// timeout (`command_timeout`, for the whole pipeline) fails every item, which may have
    /// gone through, and is not retried (as for a single publish).
    ///
    /// A Redis that does not know the script (restarted, or `SCRIPT FLUSH`) answers NOSCRIPT
    /// to an EVALSHA without running it. The items so answered, and only they, are sent once
    /// more behind a SCRIPT LOAD, in one more round trip. That retry is exact: an item that
    /// ran (a script that answered, a PUBLISH) is never sent twice, keyed or not. When every
    /// EVALSHA answered NOSCRIPT (the usual case) the retried items keep the batch's order;
    /// should another client load the script while the pipeline runs, a project's retried
    /// items take offsets after its items that ran.
    ///
    /// Cluster: a pipeline must stay in one hash slot, so the items are grouped by their
    /// project's slot, keeping their order within each group, and the groups are sent at
    /// once, one pipeline each: a project's items are in one group, in the batch's order.
    pub(crate) async fn publish_all(
        &self,
        items: &[(&ProjectId, &Publication)],
    ) -> Vec<Result<Published, BrokerError>> {
        if items.is_empty() {
            return Vec::new();
        }
        if !self.link.is_cluster() {
            return self.publish_group(items).await;
        }
        let mut groups: Vec<(redis::cluster_routing::Slot, Vec<usize>)> = Vec::new();
        let mut group_of = std::collections::HashMap::new();
        for (i, (project, _)) in items.iter().enumerate() {
            let slot = link::slot(&self.keys.meta(project));
            let g = *group_of.entry(slot).or_insert_with(|| {
                groups.push((slot, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        let sent = groups.iter().map(|(_, members)| {
            let group: Vec<(&ProjectId, &Publication)> =
                members.iter().map(|&i| items[i]).collect();
            async move { self.publish_group(&group).await }
        });
        let answers = futures_util::future::join_all(sent).await;
        let mut results: Vec<Option<Result<Published, BrokerError>>> = vec![None; items.len()];
        for ((_, members), answers) in groups.iter().zip(answers) {
            for (&i, answer) in members.iter().zip(answers) {
                results[i] = Some(answer);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(BrokerError::unavailable("redis answered no publish")))
            })
            .collect()
    }

    /// [`Inner::publish_all`] for items that one pipeline can carry (one Redis, or one slot
    /// of a cluster).
    async fn publish_group(
        &self,
        items: &[(&ProjectId, &Publication)],
    ) -> Vec<Result<Published, BrokerError>> {
        // Each command's error is its own item's.
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        for (project, publication) in items {
            pipeline.add_command(self.publish_command(project, publication));
        }
        let mut answers = match self.send_publishes(&pipeline).await {
            Ok(answers) => answers,
            Err(e) => return vec![Err(e); items.len()],
        };
        let missing: Vec<usize> = (0..answers.len())
            .filter(|&i| {
                matches!(&answers[i], Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
            })
            .collect();
        let mut failed: Option<BrokerError> = None;
        if !missing.is_empty() {
            let commands: Vec<&redis::Cmd> = pipeline.cmd_iter().collect();
            let mut retry = redis::pipe();
            retry
                .ignore_errors()
                .cmd("SCRIPT")
                .arg("LOAD")
                .arg(&self.scripts.publish_code)
                .ignore();
            for &i in &missing {
                retry.add_command(commands[i].clone());
            }
            match self.send_publishes(&retry).await {
                Ok(retried) => {
                    for (&i, answer) in missing.iter().zip(retried) {
                        answers[i] = answer;
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        let mut results = Vec::with_capacity(items.len());
        for (i, (project, publication)) in items.iter().enumerate() {
            let answer = match &failed {
                Some(e) if missing.contains(&i) => Err(e.clone()),
                _ => answers
                    .get_mut(i)
                    .map(|a| std::mem::replace(a, Ok(redis::Value::Nil)))
                    .unwrap_or_else(|| {
                        Err(RedisError::from((
                            ErrorKind::Client,
                            "redis answered fewer commands than sent",
                        )))
                    })
                    .map_err(|e| BrokerError::caused_by("redis", e)),
            };
            results.push(answer.and_then(|value| self.published(project, publication, value)));
        }
        results
    }

    /// The command publishing `publication` to `project`, for a pipeline.
    fn publish_command(&self, project: &ProjectId, publication: &Publication) -> redis::Cmd {
        let origin = publication.except.map(|conn| Origin {
            node: self.node.clone(),
            conn,
        });
        if publication.ephemeral {
            let frame = ServerFrame::EphemeralMessage {
                from: &publication.from,
                data: publication.data.as_raw(),
                ts: publication.ts,
                ephemeral: true,
            }
            .to_json();
            // A cluster's sharded channel: only the project's shard carries it.
            let mut command = redis::cmd(if self.link.is_cluster() {
                "SPUBLISH"
            } else {
                "PUBLISH"
            });
            command
                .arg(self.keys.channel(project))
                .arg(frame::ephemeral_payload(&frame, origin.as_ref()));
            return command;
        }
        let (head, tail) = frame::message_parts(publication);
        let history = self.config.history_for(project);
        // `scripts::PUBLISH`'s keys and arguments.
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(self.scripts.publish.get_hash())
            .arg(4)
            .arg(self.keys.meta(project))
            .arg(self.keys.history(project))
            .arg(self.keys.keys(project))
            .arg(self.keys.key_order(project))
            .arg(new_epoch())
            .arg(head)
            .arg(tail)
            .arg(self.keys.channel(project))
            .arg(history.size)
            .arg(millis(history.ttl))
            .arg(millis(self.meta_ttl))
            .arg(history.max_bytes)
            .arg(publication.key.as_ref().map_or("", |k| k.as_str()))
            .arg(Origin::suffix(origin.as_ref()));
        command
    }

    /// Sends a pipeline of publishes: one round trip, counted in
    /// `wshub_broker_publish_round_trips_total`. Each command's answer or error in order
    /// (the pipeline ignores errors: they are its items').
    ///
    /// On a cluster, an answer that says nothing ran (a redirect after a failover or a slot
    /// move, `TRYAGAIN`, `CLUSTERDOWN`: `link::retryable`) sends the pipeline again, within
    /// `command_timeout`, once the client refreshed its slot map; anything else is final.
    async fn send_publishes(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<Vec<RedisResult<redis::Value>>, BrokerError> {
        // Sentinel: the pipeline ends with `WAIT 1`, on the same connection, so it covers
        // these writes: a publish is acknowledged once a replica has it, since a failover
        // loses what only the old master had. Without a replica in time, the publishes are
        // not acknowledged (503), though they may have been stored.
        let waiting;
        let pipeline = if self.link.waits_for_replica() {
            let mut with_wait = pipeline.clone();
            with_wait
                .cmd("WAIT")
                .arg(1)
                .arg(millis(self.config.command_timeout / 2));
            waiting = with_wait;
            &waiting
        } else {
            pipeline
        };
        let deadline = tokio::time::Instant::now() + self.config.command_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            self.hub.metrics().publish_round_trip();
            let result = self
                .call_on(self.link.publish_connection(), false, |mut c| async move {
                    pipeline
                        .query_async::<Vec<RedisResult<redis::Value>>>(&mut c)
                        .await
                })
                .await;
            let again = self.link.is_cluster()
                && tokio::time::Instant::now() + pause < deadline
                && matches!(&result, Err(e) if redis_error(e).is_some_and(link::retryable));
            if !again {
                return match result {
                    Ok(mut answers) if self.link.waits_for_replica() => match answers.pop() {
                        Some(Ok(redis::Value::Int(n))) if n >= 1 => Ok(answers),
                        _ => Err(BrokerError::unavailable(
                            "no redis replica acknowledged the publish in time",
                        )),
                    },
                    other => other,
                };
            }
            debug!(error = ?result.err(), "publish not run by the cluster; sending it again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// What Redis answered to `publication`'s command: for a stored one, the script's
    /// `{offset, bytes, ms, duplicate}`, whose bytes go to the budget.
    fn published(
        &self,
        project: &ProjectId,
        publication: &Publication,
        value: redis::Value,
    ) -> Result<Published, BrokerError> {
        if publication.ephemeral {
            return Ok(Published::ephemeral());
        }
        let (offset, bytes, ms, duplicate): (u64, u64, u64, u8) =
            redis::from_redis_value(value).map_err(|e| BrokerError::caused_by("redis", e))?;
        if duplicate == 1 {
            return Ok(Published::duplicate(offset));
        }
        // Accounted in the background: the deployment's keys are not the project's.
        self.report(project, bytes, ms);
        Ok(Published::stored(offset))
    }

    pub(crate) async fn recover(
        &self,
        project: &ProjectId,
        position: Position<'_>,
    ) -> Result<Replay, BrokerError> {
        // Subscribed before the history is read: nothing published in between is missed,
        // and the connection's watermark drops what arrives twice.
        self.subscribe(project).await?;
        self.presence.announce(project);
        crate::cluster::prime(self, project).await;
        let after = match position {
            Position::Latest => None,
            Position::Since { offset, .. } => Some(offset),
            // The newest n: the whole (bounded) history, cut by the decision.
            Position::Last(_) => Some(0),
        };
        let stream = self.read(project, after).await?;
        let _ = self.requests.send(Request::Seed {
            project: project.clone(),
            epoch: stream.epoch.clone(),
        });
        Ok(Replay::decide(
            position,
            stream.epoch,
            stream.top,
            stream.messages,
        ))
    }

    pub(crate) async fn history(
        &self,
        project: &ProjectId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        let stream = self.read(project, Some(query.since)).await?;
        let all = retains_after(stream.top, stream.first, query.since);
        let (messages, complete) = query.page(stream.messages, all);
        Ok(HistoryPage {
            complete,
            epoch: stream.epoch,
            top: stream.top,
            messages,
        })
    }

    /// Asks the pub/sub task to subscribe to `project` and waits until Redis confirmed it.
    async fn subscribe(&self, project: &ProjectId) -> Result<(), BrokerError> {
        let (done, answer) = oneshot::channel();
        let request = Request::Subscribe {
            project: project.clone(),
            done,
        };
        let gone = || BrokerError::unavailable("the redis pub/sub task has stopped");
        self.requests.send(request).map_err(|_| gone())?;
        let wait = self.config.connect_timeout + self.config.command_timeout * 2;
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(BrokerError::unavailable(
                "redis did not confirm the subscription in time",
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
        let ttl_ms = millis(self.config.history_for(project).ttl);
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

    /// Gives `project`'s stream a new epoch if its epoch is still `seen` (see
    /// `Subscriber::verify`).
    pub(crate) async fn fork_epoch(
        &self,
        project: &ProjectId,
        seen: &str,
    ) -> Result<(), BrokerError> {
        let mut invocation = self.scripts.fork.prepare_invoke();
        invocation
            .key(self.keys.meta(project))
            .arg(seen)
            .arg(new_epoch())
            .arg(millis(self.meta_ttl));
        let invocation = &invocation;
        self.call(true, |mut c| async move {
            invocation.invoke_async::<Option<String>>(&mut c).await
        })
        .await
        .map(drop)
    }

    /// Every node's members of `project`: this node's (`local`, exact), the others' from
    /// their announcements in Redis (at most a presence tick old).
    pub(crate) async fn cluster_presence(
        &self,
        project: &ProjectId,
        local: Vec<(UserId, u32)>,
    ) -> Result<Vec<(UserId, u32)>, BrokerError> {
        // The nodes first, then their hashes: a script is given every key it touches (a
        // cluster checks them), so it cannot name the hashes itself.
        let set = self.keys.presence(project);
        let nodes: Vec<String> = self
            .call(true, |mut c| {
                let set = set.clone();
                async move {
                    redis::cmd("ZRANGE")
                        .arg(&set)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        let mut invocation = self.scripts.presence.prepare_invoke();
        for node in nodes.iter().filter(|n| **n != self.node) {
            invocation.key(self.keys.presence_of(project, node));
        }
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

    pub(crate) async fn withdraw_presence(&self) {
        for project in self.presence.announced() {
            let withdrawn = match self.announce(&project, &[]).await {
                Ok(()) => crate::cluster::announce(self, &project, &[]).await,
                Err(e) => Err(e),
            };
            if let Err(e) = withdrawn {
                warn!(project = %project, error = %e, "could not withdraw this node's presence; it expires on its own");
                return;
            }
        }
    }

    /// Checks that Redis answers commands: on every pooled connection, or on every primary
    /// of the cluster.
    pub(crate) async fn health_check(&self) {
        for (connection, probe) in self.link.health_probes() {
            if self
                .call_on(connection, true, |c| probe.ping(c))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// The Redis error behind `e`, if one.
fn redis_error(e: &BrokerError) -> Option<&RedisError> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<RedisError>())
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
pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_differ() {
        assert_ne!(new_epoch(), new_epoch());
    }

    #[test]
    fn broker_errors_keep_their_source_and_their_text() {
        use std::error::Error as _;
        let redis = || RedisError::from((ErrorKind::Io, "connection refused"));
        let text = redis().to_string();
        let e = BrokerError::caused_by("redis", redis());
        assert_eq!(e.to_string(), format!("broker unavailable: redis: {text}"));
        let source = e.source().expect("the redis error");
        assert_eq!(source.to_string(), text);
        assert!(source.downcast_ref::<RedisError>().is_some());
        // Shared by clones, so one failure answers every waiter.
        assert_eq!(e.clone().to_string(), e.to_string());
        assert_eq!(
            BrokerError::caused_by("", redis()).to_string(),
            format!("broker unavailable: {text}")
        );
        let e = BrokerError::unavailable("PING timed out");
        assert_eq!(e.to_string(), "broker unavailable: PING timed out");
        assert!(e.source().is_none());
    }
}
