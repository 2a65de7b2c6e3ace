//! Where a project's messages get their order: the broker assigns offsets, keeps history
//! and delivers to the hub. The embedded [`MemoryBroker`] is the default; a Redis broker
//! implements the same trait so that several nodes share one order per project.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tungstenite::Utf8Bytes;
use ws_core::envelope::{Payload, ServerFrame};
use ws_core::history::{History, HistoryConfig, Recovery, Stored};
use ws_core::{ProjectId, UserId};

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

/// What a connecting client gets from the broker.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The epoch of the project's stream.
    pub epoch: String,
    /// The newest offset when the history was read.
    pub top: u64,
    /// Whether the requested recovery succeeded.
    pub recovered: bool,
    /// The missed messages, oldest first (empty unless recovered).
    pub missed: Vec<StoredMessage>,
}

/// A page of retained history for the HTTP API.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The epoch of the project's stream.
    pub epoch: String,
    /// The newest offset.
    pub top: u64,
    /// Whether every message after `since` is in `messages`.
    pub complete: bool,
    /// The retained messages after `since`, oldest first.
    pub messages: Vec<StoredMessage>,
}

/// Why the broker could not do its part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker cannot be reached; retry later (HTTP 503, close 1013, `error` frame).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Orders, keeps and delivers a project's messages.
///
/// Contract: `publish` assigns the next offset of the project's stream, retains the
/// message, and delivers it to the local hub (and, for a distributed broker, to every
/// node's hub) so that every member sees one order per project, the offset order.
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Publishes to `project`; returns the offset given.
    fn publish<'a>(
        &'a self,
        project: &'a ProjectId,
        publication: Publication,
    ) -> BoxFuture<'a, Result<u64, BrokerError>>;

    /// The recovery of a client that last saw `since` (offset and epoch), or the current
    /// position for a client that asks for none.
    fn recover<'a>(
        &'a self,
        project: &'a ProjectId,
        since: Option<(u64, &'a str)>,
    ) -> BoxFuture<'a, Result<Replay, BrokerError>>;

    /// The retained messages after `since`.
    fn history<'a>(
        &'a self,
        project: &'a ProjectId,
        since: u64,
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
type Streams = HashMap<ProjectId, History<Utf8Bytes>>;

/// The embedded broker: history in memory, one process. Its epoch changes with every
/// start, so clients of a restarted server learn that their history is gone.
#[derive(Debug)]
pub struct MemoryBroker {
    hub: SharedHub,
    config: HistoryConfig,
    shards: Box<[Mutex<Streams>]>,
    hasher: RandomState,
    /// Names this process's streams; a stream recreated later gets the next `seq`.
    boot: String,
    seq: AtomicU64,
}

impl MemoryBroker {
    /// A broker that delivers to `hub` and keeps `config` worth of history per project.
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
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            hasher: RandomState::new(),
            boot,
            seq: AtomicU64::new(1),
        }
    }

    /// Frees streams with nothing retained and nobody connected. A stream created again
    /// later gets a new epoch, so a stale `since` is never mistaken for a current one.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut freed = 0;
        for shard in &self.shards {
            let mut streams = shard.lock().unwrap_or_else(PoisonError::into_inner);
            streams.retain(|project, stream| {
                stream.expire(now);
                let keep = !stream.is_empty() || self.hub.has_members(project);
                freed += usize::from(!keep);
                keep
            });
        }
        freed
    }

    fn shard(&self, project: &ProjectId) -> MutexGuard<'_, Streams> {
        let i = (self.hasher.hash_one(project) % self.shards.len() as u64) as usize;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn stream<'m>(
        &self,
        streams: &'m mut Streams,
        project: &ProjectId,
    ) -> &'m mut History<Utf8Bytes> {
        streams.entry(project.clone()).or_insert_with(|| {
            let epoch = format!("{}-{}", self.boot, self.seq.fetch_add(1, Ordering::Relaxed));
            History::new(epoch, self.config)
        })
    }

    fn publish_now(&self, project: &ProjectId, publication: &Publication) -> u64 {
        let now = Instant::now();
        let mut streams = self.shard(project);
        let stream = self.stream(&mut streams, project);
        let offset = stream.top() + 1;
        let frame: Utf8Bytes = ServerFrame::Message {
            offset,
            from: &publication.from,
            data: publication.data.as_raw(),
            ts: publication.ts,
        }
        .to_json()
        .into();
        let appended = stream.append(now, frame.clone());
        debug_assert_eq!(appended, offset);
        // Delivered under the stream's lock: members see publishes in offset order.
        self.hub.deliver(project, Some(offset), frame, None);
        offset
    }

    fn recover_now(&self, project: &ProjectId, since: Option<(u64, &str)>) -> Replay {
        let now = Instant::now();
        let mut streams = self.shard(project);
        let stream = self.stream(&mut streams, project);
        let (recovered, missed) = match since {
            None => (false, Vec::new()),
            Some((since, epoch)) => match stream.recover(now, since, epoch) {
                Recovery::Recovered { missed } => (true, missed),
                Recovery::Lost(_) => (false, Vec::new()),
            },
        };
        Replay {
            epoch: stream.epoch().to_owned(),
            top: stream.top(),
            recovered,
            missed: missed.into_iter().map(StoredMessage::from).collect(),
        }
    }

    fn history_now(&self, project: &ProjectId, since: u64) -> HistoryPage {
        let now = Instant::now();
        let mut streams = self.shard(project);
        let stream = self.stream(&mut streams, project);
        let (messages, complete) = stream.since(now, since);
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
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        let offset = self.publish_now(project, &publication);
        Box::pin(std::future::ready(Ok(offset)))
    }

    fn recover<'a>(
        &'a self,
        project: &'a ProjectId,
        since: Option<(u64, &'a str)>,
    ) -> BoxFuture<'a, Result<Replay, BrokerError>> {
        let replay = self.recover_now(project, since);
        Box::pin(std::future::ready(Ok(replay)))
    }

    fn history<'a>(
        &'a self,
        project: &'a ProjectId,
        since: u64,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        let page = self.history_now(project, since);
        Box::pin(std::future::ready(Ok(page)))
    }
}
