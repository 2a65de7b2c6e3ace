//! Where a project's messages get their order: the broker assigns offsets, keeps history
//! and delivers to the hub. The embedded [`MemoryBroker`] is the default; a Redis broker
//! implements the same trait so that several nodes share one order per project.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tungstenite::Utf8Bytes;
use ws_core::dedupe::{DedupeWindow, IdempotencyKey};
use ws_core::envelope::{Payload, ServerFrame};
pub use ws_core::history::HistoryQuery;
use ws_core::history::{History, HistoryConfig, LostReason, Stored, decide_recovery};
use ws_core::namespace::{NamespacePolicy, Namespaces};
use ws_core::retention::{Budget, Cut, Usage};
use ws_core::{ConnId, ProjectId, UserId};

use crate::hub::SharedHub;
use crate::tungstenite;

/// A boxed future, so brokers can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message to publish, before its offset is known.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Who published: a user id, or the `from` of an HTTP publish.
    pub from: String,
    /// The payload, verbatim.
    pub data: Payload,
    /// Milliseconds since the Unix epoch when the server accepted it.
    pub ts: u64,
    /// A connection of this node that must not receive it (`echo: false`): it still
    /// gets its ack.
    pub except: Option<ConnId>,
    /// The idempotency key: a publish whose key the project's window still remembers
    /// publishes nothing and answers the first offset ([`Published::duplicate`]).
    pub key: Option<IdempotencyKey>,
    /// Delivered live only: no offset, not retained, not replayed, and no key recorded.
    pub ephemeral: bool,
}

impl Publication {
    /// A message from `from`, accepted now: its `ts` is stamped here, so every way into
    /// the broker stamps it alike.
    pub fn new(from: String, data: Payload) -> Self {
        Self {
            from,
            data,
            ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            except: None,
            key: None,
            ephemeral: false,
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The message's offset: a new one, or a duplicate's first one; `None` for an
    /// ephemeral publish.
    pub offset: Option<u64>,
    /// The key was already published: nothing was delivered or retained now.
    pub duplicate: bool,
}

impl Published {
    /// A new message at `offset`.
    pub fn stored(offset: u64) -> Self {
        Self {
            offset: Some(offset),
            duplicate: false,
        }
    }

    /// A repeat of the key first published at `offset`.
    pub fn duplicate(offset: u64) -> Self {
        Self {
            offset: Some(offset),
            duplicate: true,
        }
    }

    /// An ephemeral message, delivered without an offset.
    pub fn ephemeral() -> Self {
        Self {
            offset: None,
            duplicate: false,
        }
    }
}

/// A retained message as its serialised `message` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its offset.
    pub offset: u64,
    /// The `message` frame, exactly as delivered live.
    pub frame: Utf8Bytes,
}

impl From<Stored<Utf8Bytes>> for StoredMessage {
    fn from(m: Stored<Utf8Bytes>) -> Self {
        Self {
            offset: m.offset,
            frame: m.payload,
        }
    }
}

/// Where a subscriber starts reading a project's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position<'a> {
    /// From now on: nothing is replayed.
    Latest,
    /// After `offset` of `epoch`, the last message the client saw: every retained message
    /// after it is replayed when the stream is still `epoch` and retains them all.
    Since {
        /// The last offset the client saw.
        offset: u64,
        /// The epoch it belongs to.
        epoch: &'a str,
    },
    /// The newest `n` retained messages first (v2's `last: n`).
    Last(u32),
}

impl<'a> Position<'a> {
    /// The position of a v1 query's `since`/`epoch`, or of none.
    pub fn from_since(since: Option<(u64, &'a str)>) -> Self {
        match since {
            Some((offset, epoch)) => Self::Since { offset, epoch },
            None => Self::Latest,
        }
    }
}

/// What a connecting client gets from the broker.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The epoch of the project's stream.
    pub epoch: String,
    /// The newest offset when the history was read.
    pub top: u64,
    /// Whether a [`Position::Since`] recovery succeeded (false for the other positions).
    pub recovered: bool,
    /// Why a [`Position::Since`] recovery failed.
    pub lost: Option<LostReason>,
    /// The messages to replay, oldest first: the missed ones of a successful recovery, the
    /// newest of [`Position::Last`], none otherwise.
    pub missed: Vec<StoredMessage>,
}

impl Replay {
    /// The answer for `position` on a stream named `epoch` whose newest offset is `top`.
    /// `retained` holds the stream's retained messages (oldest first, contiguous up to
    /// `top`), all of them or only those after the position's offset: a gap right after the
    /// client's offset is what makes a recovery [`LostReason::OutOfRange`], so nothing older
    /// is needed. The one decision both brokers take, whatever keeps their streams.
    pub fn decide(
        position: Position<'_>,
        epoch: String,
        top: u64,
        retained: Vec<StoredMessage>,
    ) -> Self {
        let first = retained.first().map_or(top + 1, |m| m.offset);
        let (recovered, lost, missed) = match position {
            Position::Latest => (false, None, Vec::new()),
            Position::Last(n) => {
                let skip = retained.len().saturating_sub(n as usize);
                (false, None, retained.into_iter().skip(skip).collect())
            }
            Position::Since {
                offset,
                epoch: seen,
            } => match decide_recovery(&epoch, top, first, offset, seen) {
                Ok(()) => (
                    true,
                    None,
                    retained.into_iter().filter(|m| m.offset > offset).collect(),
                ),
                Err(reason) => (false, Some(reason), Vec::new()),
            },
        };
        Self {
            epoch,
            top,
            recovered,
            lost,
            missed,
        }
    }
}

/// A page of retained history for the HTTP API and the v2 `history` frame.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The epoch of the project's stream.
    pub epoch: String,
    /// The newest offset.
    pub top: u64,
    /// Whether nothing else after `since` exists in the page's direction: the page was not
    /// cut by the query's `limit`, and no message after `since` was dropped.
    pub complete: bool,
    /// The retained messages after `since` the query asked for: oldest first, or newest
    /// first for a `reverse` query ([`HistoryQuery::page`]).
    pub messages: Vec<StoredMessage>,
}

/// Why the broker could not do its part.
///
/// Clients never see its text (they get `broker_unavailable`); logs do, with the source's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker cannot be reached; retry later (HTTP 503, close 1013, `error` frame).
    ///
    /// Displayed as `broker unavailable: <reason>: <source>` (the source's text alone when
    /// `reason` is empty, `reason` alone when there is no source).
    Unavailable {
        /// What failed, e.g. `redis` or `SUBSCRIBE timed out`.
        reason: &'static str,
        /// The error that caused it. Shared, so that one failure can answer several
        /// waiters.
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

impl BrokerError {
    /// Unavailable for `reason`, with no error behind it.
    pub fn unavailable(reason: &'static str) -> Self {
        Self::Unavailable {
            reason,
            source: None,
        }
    }

    /// Unavailable for `reason` (may be empty), because of `source`.
    pub fn caused_by(
        reason: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            reason,
            source: Some(Arc::new(source)),
        }
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable { reason, source } => {
                f.write_str("broker unavailable: ")?;
                f.write_str(reason)?;
                if let Some(source) = source {
                    if !reason.is_empty() {
                        f.write_str(": ")?;
                    }
                    write!(f, "{source}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unavailable { source, .. } => source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
        }
    }
}

/// Orders, keeps and delivers a project's messages.
///
/// Contract: `publish` assigns the next offset of the project's stream, retains the
/// message, and delivers it to the local hub (and, for a distributed broker, to every
/// node's hub) so that every member sees one order per project, the offset order.
///
/// Exact publishing: a publication with a `key` the project's window remembers (per
/// project, `history.ttl`, at most `history.size` keys, see `ws_core::dedupe`) publishes
/// nothing and answers [`Published::duplicate`] with the first offset; the check and the
/// append are one atomic step, across nodes for a distributed broker. An `ephemeral`
/// publication is delivered (without an offset, as `"ephemeral": true`) and neither
/// retained nor recorded. `except` names a connection of the publishing node that must not
/// receive it.
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Publishes to `project`; says the offset given (or the first one, for a duplicate).
    fn publish<'a>(
        &'a self,
        project: &'a ProjectId,
        publication: Publication,
    ) -> BoxFuture<'a, Result<Published, BrokerError>>;

    /// Publishes every item, in order: one answer per item, in the items' order. Each
    /// project's items take offsets in the order they come, and one failed item does not
    /// stop the others.
    ///
    /// The default publishes them one by one, each after the previous one answered: right
    /// for a broker that answers at once (the memory broker). A networked broker sends the
    /// batch in one round trip where it can (the Redis broker: one pipeline).
    fn publish_batch<'a>(
        &'a self,
        items: Vec<(ProjectId, Publication)>,
    ) -> BoxFuture<'a, Vec<Result<Published, BrokerError>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(items.len());
            for (project, publication) in items {
                results.push(self.publish(&project, publication).await);
            }
            results
        })
    }

    /// What a client starting at `position` gets: the stream's epoch and newest offset, and
    /// the messages to replay ([`Replay::decide`]).
    fn recover<'a>(
        &'a self,
        project: &'a ProjectId,
        position: Position<'a>,
    ) -> BoxFuture<'a, Result<Replay, BrokerError>>;

    /// The page of retained messages `query` asks for ([`HistoryQuery::page`]).
    fn history<'a>(
        &'a self,
        project: &'a ProjectId,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>>;

    /// Whether publishes can go through now (readiness).
    fn is_ready(&self) -> bool {
        true
    }

    /// The users of `project` with their connection counts, sorted by user id, given this
    /// node's (`local`, from [`SharedHub::presence`]): an embedded broker answers `local`, a
    /// distributed one adds the other nodes' users.
    fn presence<'a>(
        &'a self,
        project: &'a ProjectId,
        local: Vec<(UserId, u32)>,
    ) -> BoxFuture<'a, Result<Vec<(UserId, u32)>, BrokerError>> {
        let _ = project;
        Box::pin(std::future::ready(Ok(local)))
    }

    /// The node is going away (its connections are drained): withdraw what it announced to
    /// other nodes, such as its presence. Nothing to do for an embedded broker.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// One shard of the memory broker's streams.
type Streams = HashMap<ProjectId, Stream>;

/// A flag that lets one caller at a time do some work (apply the budget, reclaim empty
/// streams) while the others go on; cleared however the work ends, so a panic cannot turn
/// the work off for good.
struct OneAtATime<'a>(&'a AtomicBool);

impl<'a> OneAtATime<'a> {
    /// The flag, taken; `None` when another caller holds it.
    fn enter(flag: &'a AtomicBool) -> Option<Self> {
        (!flag.swap(true, Ordering::Acquire)).then_some(Self(flag))
    }
}

impl Drop for OneAtATime<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One project's stream and the idempotency keys it remembers, under one lock: a keyed
/// publish checks, appends and records as one step.
#[derive(Debug)]
struct Stream {
    history: History<Utf8Bytes>,
    keys: DedupeWindow,
}

/// The default of the memory broker's total budget ([`MemoryBroker::with_budget`]): 256 MiB,
/// 64 projects at the default `history.max_bytes`, thousands at common message sizes.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 256 << 20;

/// The embedded broker: history in memory, one process. Its epoch changes with every
/// start, so clients of a restarted server learn that their history is gone.
///
/// What the streams retain is counted in one atomic (the `wshub_history_bytes` gauge of
/// [`Metrics`](crate::Metrics)): a publish adds its frame's length and subtracts what its
/// append dropped, without a lock of its own. The publish that takes the total over the
/// budget, and every sweep, applies `ws_core::retention::Budget`'s plan: the oldest idle
/// streams are freed, then the oldest messages of the least recently used streams go.
#[derive(Debug)]
pub struct MemoryBroker {
    hub: SharedHub,
    config: HistoryConfig,
    /// `[namespaces.<name>]` overrides of `config`'s size and ttl.
    namespaces: Namespaces,
    budget: Budget,
    /// One caller at a time applies the budget; the others' publishes go on.
    enforcing: AtomicBool,
    shards: Box<[Mutex<Streams>]>,
    hasher: RandomState,
    /// Names this process's streams; a stream recreated later gets the next `seq`.
    boot: String,
    seq: AtomicU64,
    /// Streams created since empty ones were last reclaimed, and how many trigger the next
    /// reclaim: a recovery or a history read creates the stream of a project nobody
    /// published to, and a client subscribing to fresh names as fast as it can must not
    /// grow them faster than the periodic sweep frees them (see `reclaim_empty`).
    created: AtomicUsize,
    reclaim_at: AtomicUsize,
    reclaiming: AtomicBool,
}

/// Fewest stream creations between two reclaims of empty streams: a reclaim scans every
/// stream, so it waits for at least as many creations as there were streams kept, and
/// for this many when there were few.
const RECLAIM_AFTER_CREATED: usize = 1024;

impl MemoryBroker {
    /// A broker that delivers to `hub` and keeps `config` worth of history per project, and
    /// [`DEFAULT_MAX_TOTAL_BYTES`] in all.
    pub fn new(hub: SharedHub, config: HistoryConfig, shards: usize) -> Self {
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let boot = format!(
            "{:x}{:04x}",
            boot,
            RandomState::new().hash_one(boot) & 0xffff
        );
        Self {
            hub,
            config,
            namespaces: Namespaces::defaults_only(NamespacePolicy::new(
                config.size,
                config.ttl,
                true,
                usize::MAX,
                true,
            )),
            budget: Budget::new(DEFAULT_MAX_TOTAL_BYTES),
            enforcing: AtomicBool::new(false),
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            hasher: RandomState::new(),
            boot,
            seq: AtomicU64::new(1),
            created: AtomicUsize::new(0),
            reclaim_at: AtomicUsize::new(RECLAIM_AFTER_CREATED),
            reclaiming: AtomicBool::new(false),
        }
    }

    /// Keeps at most about `max_total_bytes` of history across all projects (see the type's
    /// docs for how far over it a burst of publishes can go).
    #[must_use]
    pub fn with_budget(mut self, max_total_bytes: u64) -> Self {
        self.budget = Budget::new(max_total_bytes);
        self
    }

    /// Keeps the history of the projects of a namespace as its `[namespaces.<name>]` table
    /// says (`history_size`, `history_ttl`); other projects keep the broker's
    /// [`HistoryConfig`].
    #[must_use]
    pub fn with_namespaces(mut self, namespaces: Namespaces) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// What the streams retain now, in bytes of frames.
    pub fn retained_bytes(&self) -> u64 {
        self.hub.metrics().history_bytes()
    }

    /// Frees streams with nothing retained and nobody connected, then applies the budget. A
    /// stream created again later gets a new epoch, so a stale `since` is never mistaken for
    /// a current one. Returns the streams freed.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut freed = 0;
        for shard in &self.shards {
            let mut streams = shard.lock().unwrap_or_else(PoisonError::into_inner);
            streams.retain(|project, stream| {
                self.weighed(&mut stream.history, |s| s.expire(now));
                stream.keys.expire(now);
                // A stream remembering keys stays: freeing it would forget them early.
                let keep = !stream.history.is_empty()
                    || !stream.keys.is_empty()
                    || self.hub.has_members(project);
                freed += usize::from(!keep);
                keep
            });
        }
        self.count_streams(-(freed as i64));
        freed + self.enforce_budget(now)
    }

    /// Frees the streams that never held a message, hold no key and have no member, once
    /// `reclaim_at` streams were created since the last time. What a recovery or history
    /// read of a fresh project created is gone again at once; a stream that holds anything
    /// waits for `sweep` and the budget as before. Each reclaim scans every stream, and the
    /// next waits for as many creations as streams were kept, so the scans cost O(1) per
    /// creation and the empty streams never outnumber the others (plus
    /// [`RECLAIM_AFTER_CREATED`]). Returns the streams freed.
    fn reclaim_empty(&self) -> usize {
        if self.created.load(Ordering::Relaxed) < self.reclaim_at.load(Ordering::Relaxed) {
            return 0;
        }
        let Some(_reclaiming) = OneAtATime::enter(&self.reclaiming) else {
            return 0;
        };
        self.created.store(0, Ordering::Relaxed);
        let (mut freed, mut kept) = (0, 0);
        for shard in &self.shards {
            let mut streams = shard.lock().unwrap_or_else(PoisonError::into_inner);
            streams.retain(|project, stream| {
                // A stream that ever held a message has a top above 0.
                let keep = stream.history.top() > 0
                    || !stream.keys.is_empty()
                    || self.hub.has_members(project);
                freed += usize::from(!keep);
                kept += usize::from(keep);
                keep
            });
        }
        self.count_streams(-(freed as i64));
        self.reclaim_at
            .store(kept.max(RECLAIM_AFTER_CREATED), Ordering::Relaxed);
        freed
    }

    /// Moves the stream gauge by `delta`.
    fn count_streams(&self, delta: i64) {
        if delta != 0 {
            self.hub.metrics().history_streams_add(delta);
        }
    }

    /// Runs `f` on `stream` and counts what it changed in the stream's bytes.
    fn weighed<T>(
        &self,
        stream: &mut History<Utf8Bytes>,
        f: impl FnOnce(&mut History<Utf8Bytes>) -> T,
    ) -> T {
        let before = stream.bytes();
        let out = f(stream);
        self.count_bytes(before, stream.bytes());
        out
    }

    /// Moves the total from a stream's `before` to its `after`; returns the new total.
    fn count_bytes(&self, before: usize, after: usize) -> u64 {
        let delta = after as i64 - before as i64;
        self.hub.metrics().history_bytes_add(delta)
    }

    /// When over the budget, frees or trims streams as `Budget::plan` says; returns the
    /// streams freed. Locks one shard at a time (and, under it, the hub's shard to see
    /// members), so publishes to other shards go on meanwhile.
    fn enforce_budget(&self, now: Instant) -> usize {
        if !self.budget.is_over(self.retained_bytes()) {
            return 0;
        }
        let Some(_enforcing) = OneAtATime::enter(&self.enforcing) else {
            return 0;
        };
        // The snapshot: (shard, project, top) names a stream as it was seen, so a stream
        // published to since then is left alone (it is no longer the oldest).
        let mut usage = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let mut streams = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (project, stream) in streams.iter_mut() {
                let stream = &mut stream.history;
                self.weighed(stream, |s| s.expire(now));
                if let Some(last_append) = stream.last_append() {
                    usage.push(Usage {
                        key: (i, project.clone(), stream.top()),
                        bytes: stream.bytes() as u64,
                        last_append,
                        has_members: self.hub.has_members(project),
                    });
                }
            }
        }
        let mut cuts = self.budget.plan(self.retained_bytes(), usage);
        cuts.sort_by_key(|((i, _, _), _)| *i);
        let mut freed = 0;
        for chunk in cuts.chunk_by(|((a, _, _), _), ((b, _, _), _)| a == b) {
            let mut streams = self.shards[(chunk[0].0).0]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for ((_, project, top), cut) in chunk {
                let Some(stream) = streams.get_mut(project).map(|s| &mut s.history) else {
                    continue;
                };
                match cut {
                    Cut::Free if stream.top() == *top && !self.hub.has_members(project) => {
                        self.count_bytes(stream.bytes(), 0);
                        streams.remove(project);
                        self.count_streams(-1);
                        freed += 1;
                    }
                    Cut::Free => {}
                    Cut::Trim { bytes } => {
                        self.weighed(stream, |s| s.trim(*bytes as usize));
                    }
                }
            }
        }
        freed
    }

    fn shard(&self, project: &ProjectId) -> MutexGuard<'_, Streams> {
        let i = (self.hasher.hash_one(project) % self.shards.len() as u64) as usize;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn stream<'m>(&self, streams: &'m mut Streams, project: &ProjectId) -> &'m mut Stream {
        streams.entry(project.clone()).or_insert_with(|| {
            self.created.fetch_add(1, Ordering::Relaxed);
            self.count_streams(1);
            let epoch = format!("{}-{}", self.boot, self.seq.fetch_add(1, Ordering::Relaxed));
            let config = self.history_config(project);
            Stream {
                history: History::new(epoch, config),
                // Keys are remembered as long and as many as the stream's messages.
                keys: DedupeWindow::new(config.size, config.ttl),
            }
        })
    }

    /// The retention of `project`: its namespace's size and ttl when it has a table.
    fn history_config(&self, project: &ProjectId) -> HistoryConfig {
        self.namespaces.history_config(project, self.config)
    }

    fn publish_now(&self, project: &ProjectId, publication: &Publication) -> Published {
        if publication.ephemeral {
            // No offset, no history, no key: delivered as it comes, without the stream's
            // lock (an ephemeral message has no place in the offset order).
            let frame: Utf8Bytes = ServerFrame::EphemeralMessage {
                from: &publication.from,
                data: publication.data.as_raw(),
                ts: publication.ts,
                ephemeral: true,
            }
            .to_json()
            .into();
            self.hub.deliver(project, None, frame, publication.except);
            return Published::ephemeral();
        }
        let now = Instant::now();
        let (offset, total) = {
            let mut streams = self.shard(project);
            let stream = self.stream(&mut streams, project);
            if let Some(key) = &publication.key
                && let Some(first) = stream.keys.check(now, key)
            {
                return Published::duplicate(first);
            }
            let history = &mut stream.history;
            let offset = history.top() + 1;
            let frame: Utf8Bytes = ServerFrame::Message {
                offset,
                from: &publication.from,
                data: publication.data.as_raw(),
                ts: publication.ts,
            }
            .to_json()
            .into();
            let before = history.bytes();
            let appended = history.append(now, frame.clone(), frame.len());
            debug_assert_eq!(appended, offset);
            let total = self.count_bytes(before, history.bytes());
            if let Some(key) = &publication.key {
                stream.keys.record(now, key.clone(), offset);
            }
            // Delivered under the stream's lock: members see publishes in offset order.
            self.hub
                .deliver(project, Some(offset), frame, publication.except);
            (offset, total)
        };
        // The publish that crosses the budget pays for bringing it back, outside its
        // stream's lock (the plan takes every shard's in turn).
        if self.budget.is_over(total) {
            self.enforce_budget(now);
        }
        Published::stored(offset)
    }

    fn recover_now(&self, project: &ProjectId, position: Position<'_>) -> Replay {
        let now = Instant::now();
        let mut streams = self.shard(project);
        let stream = &mut self.stream(&mut streams, project).history;
        // Only what a replay can use is copied out: everything after the client's offset,
        // the newest `n`, or nothing.
        let after = match position {
            Position::Latest => None,
            Position::Since { offset, .. } => Some(offset),
            Position::Last(n) => Some(stream.top().saturating_sub(u64::from(n))),
        };
        let retained = match after {
            None => Vec::new(),
            Some(after) => self.weighed(stream, |s| s.since(now, after)).0,
        };
        Replay::decide(
            position,
            stream.epoch().to_owned(),
            stream.top(),
            retained.into_iter().map(StoredMessage::from).collect(),
        )
    }

    fn history_now(&self, project: &ProjectId, query: HistoryQuery) -> HistoryPage {
        let now = Instant::now();
        let mut streams = self.shard(project);
        let stream = &mut self.stream(&mut streams, project).history;
        let (messages, complete) = self.weighed(stream, |s| s.page(now, query));
        HistoryPage {
            epoch: stream.epoch().to_owned(),
            top: stream.top(),
            complete,
            messages: messages.into_iter().map(StoredMessage::from).collect(),
        }
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        project: &'a ProjectId,
        publication: Publication,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        let published = self.publish_now(project, &publication);
        Box::pin(std::future::ready(Ok(published)))
    }

    fn recover<'a>(
        &'a self,
        project: &'a ProjectId,
        position: Position<'a>,
    ) -> BoxFuture<'a, Result<Replay, BrokerError>> {
        let replay = self.recover_now(project, position);
        self.reclaim_empty();
        Box::pin(std::future::ready(Ok(replay)))
    }

    fn history<'a>(
        &'a self,
        project: &'a ProjectId,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        let page = self.history_now(project, query);
        self.reclaim_empty();
        Box::pin(std::future::ready(Ok(page)))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;
    use ws_core::envelope::Payload;
    use ws_core::{AdmissionConfig, HubConfig};

    use super::*;

    fn broker() -> MemoryBroker {
        let hub = SharedHub::new(HubConfig::default(), AdmissionConfig::default(), 1);
        MemoryBroker::new(hub, HistoryConfig::default(), 4)
    }

    fn project(i: usize) -> ProjectId {
        ProjectId::parse(&format!("fresh-{i}")).unwrap()
    }

    /// A caller recovering (or reading the history of) one fresh project after another, as
    /// fast as it can, leaves a bounded number of streams behind, long before a sweep.
    #[test]
    fn streams_of_fresh_projects_nobody_published_to_stay_bounded() {
        let broker = broker();
        for i in 0..20 * RECLAIM_AFTER_CREATED {
            let answered = if i % 2 == 0 {
                broker
                    .recover(&project(i), Position::Latest)
                    .now_or_never()
                    .is_some_and(|r| r.is_ok())
            } else {
                let query = HistoryQuery {
                    since: 0,
                    limit: Some(10),
                    reverse: false,
                };
                broker
                    .history(&project(i), query)
                    .now_or_never()
                    .is_some_and(|r| r.is_ok())
            };
            assert!(answered);
            let streams = broker.hub.metrics().history_streams();
            assert!(
                streams <= RECLAIM_AFTER_CREATED as u64,
                "{streams} streams after {i} fresh projects"
            );
        }
    }

    /// What the reclaim frees is only what never mattered: a stream with a message, or one
    /// a recovery handed an epoch to while its caller is still a member, stays.
    #[test]
    fn reclaiming_keeps_streams_that_hold_messages() {
        let broker = broker();
        let kept = project(0);
        let data = Payload::from_json("1".to_owned()).unwrap();
        let published = broker
            .publish(&kept, Publication::new("api".to_owned(), data))
            .now_or_never();
        assert!(matches!(
            published,
            Some(Ok(Published {
                offset: Some(1),
                ..
            }))
        ));
        let epoch = broker
            .recover(&kept, Position::Latest)
            .now_or_never()
            .unwrap()
            .unwrap()
            .epoch;
        for i in 1..=3 * RECLAIM_AFTER_CREATED {
            let _ = broker.recover(&project(i), Position::Latest).now_or_never();
        }
        let replay = broker
            .recover(
                &kept,
                Position::Since {
                    offset: 0,
                    epoch: &epoch,
                },
            )
            .now_or_never()
            .unwrap()
            .unwrap();
        assert!(replay.recovered, "the published-to stream kept its epoch");
        assert_eq!(replay.missed.len(), 1);
        assert!(broker.hub.metrics().history_streams() <= RECLAIM_AFTER_CREATED as u64 + 1);
    }
}
