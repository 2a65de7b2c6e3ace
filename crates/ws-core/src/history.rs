//! A project's message stream: offsets, the epoch that names the stream, the retained
//! history, and the recovery decision for a client that reconnects with `since`.
//!
//! Offsets grow by one per message, starting at 1; `0` means "nothing yet". The epoch
//! changes whenever a stream starts over (a restart of the memory broker, a stream freed
//! and recreated), so an offset is only meaningful together with its epoch.
//!
//! Retention is bounded three ways, whichever bites first: `size` messages, `max_bytes` of
//! payload, and `ttl`. A message larger than `max_bytes` on its own is still kept while it is
//! the newest (so the last message can always be recovered); it goes with the next append.
//! Every drop is from the front, so what is retained is always one contiguous range of
//! offsets ending at the newest retained one, and recovery stays exact: a `since` below the
//! first retained offset is [`LostReason::OutOfRange`], whatever dropped the messages.
//!
//! The caller says how many bytes each payload weighs (`append`'s `bytes`): the transport
//! keeps serialised frames and passes their length; the core never measures a payload.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ws_core::history::{History, HistoryConfig, Recovery};
//!
//! let now = Instant::now();
//! let config = HistoryConfig { size: 100, ttl: Duration::from_secs(60), max_bytes: 1 << 20 };
//! let mut stream = History::new("e1".into(), config);
//! for text in ["a", "b", "c"] {
//!     stream.append(now, text.to_owned(), text.len());
//! }
//! assert_eq!(stream.bytes(), 3);
//! // A client that saw offset 1 of epoch e1 missed 2 and 3.
//! let Recovery::Recovered { missed, .. } = stream.recover(now, 1, "e1") else { panic!() };
//! assert_eq!(missed.iter().map(|m| m.offset).collect::<Vec<_>>(), [2, 3]);
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much history a stream keeps.
#[derive(Debug, Clone, Copy)]
pub struct HistoryConfig {
    /// Messages kept per project.
    pub size: usize,
    /// How long a message is kept.
    pub ttl: Duration,
    /// Bytes of payload kept per project (the newest message is kept even when larger).
    pub max_bytes: usize,
}

/// The default of [`HistoryConfig::max_bytes`]: 4 MiB, a thousand 4 KiB messages (the
/// default `size` of typical messages), or the last 64 messages of the 64 KiB maximum.
pub const DEFAULT_MAX_BYTES: usize = 4 << 20;

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            size: 1000,
            ttl: Duration::from_secs(600),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// A retained message: its offset, when it was accepted, and its payload `P` (the
/// transport keeps the serialised frame, so a replay sends the very same bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<P> {
    /// The message's offset in its stream.
    pub offset: u64,
    /// When it was appended.
    pub at: Instant,
    /// The payload.
    pub payload: P,
    /// What the payload weighs, as the caller said when appending it.
    pub bytes: usize,
}

/// What a reconnecting client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery<P> {
    /// Every message after `since` is still here: replay `missed`, in order.
    Recovered {
        /// The messages after `since`, oldest first.
        missed: Vec<Stored<P>>,
    },
    /// The client must reload its state from its backend.
    Lost(LostReason),
}

/// Why a recovery failed. Serialises as the v2 `subscribed` frame's `lost_reason`:
/// `"epoch_changed"`, `"out_of_range"`, `"from_the_future"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LostReason {
    /// The client's epoch names another stream (a restart, or a stream recreated).
    EpochChanged,
    /// Messages after `since` were already dropped (over `size` or older than `ttl`).
    OutOfRange,
    /// `since` is beyond the newest offset: the client's state cannot be trusted.
    FromTheFuture,
}

/// One project's stream. See the [module docs](self).
#[derive(Debug)]
pub struct History<P> {
    epoch: String,
    config: HistoryConfig,
    /// The newest offset; 0 before the first message.
    top: u64,
    retained: VecDeque<Stored<P>>,
    /// The sum of the retained messages' `bytes`.
    bytes: usize,
}

impl<P: Clone> History<P> {
    /// An empty stream named `epoch`.
    pub fn new(epoch: String, config: HistoryConfig) -> Self {
        Self {
            epoch,
            config,
            top: 0,
            retained: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The stream's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The newest offset (0 before the first message).
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Assigns the next offset to `payload`, which weighs `bytes`, and keeps it; returns
    /// the offset.
    pub fn append(&mut self, now: Instant, payload: P, bytes: usize) -> u64 {
        self.top += 1;
        if self.config.size > 0 {
            self.retained.push_back(Stored {
                offset: self.top,
                at: now,
                payload,
                bytes,
            });
            self.bytes += bytes;
        }
        self.expire(now);
        self.top
    }

    /// Drops messages over `size`, over `max_bytes` (but never the newest) or older than
    /// `ttl`.
    pub fn expire(&mut self, now: Instant) {
        while self.retained.len() > self.config.size
            || (self.bytes > self.config.max_bytes && self.retained.len() > 1)
        {
            self.pop_front();
        }
        while self
            .retained
            .front()
            .is_some_and(|m| now.saturating_duration_since(m.at) > self.config.ttl)
        {
            self.pop_front();
        }
    }

    /// Drops the oldest messages until at least `bytes` are gone (or nothing is left), for a
    /// node over its total budget ([`crate::retention`]); returns the bytes dropped.
    pub fn trim(&mut self, bytes: usize) -> usize {
        let mut dropped = 0;
        while dropped < bytes
            && let Some(m) = self.pop_front()
        {
            dropped += m.bytes;
        }
        dropped
    }

    fn pop_front(&mut self) -> Option<Stored<P>> {
        let m = self.retained.pop_front()?;
        self.bytes -= m.bytes;
        Some(m)
    }

    /// What the retained messages weigh.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the newest retained message was appended: the stream's last use that counts for
    /// the node's budget (`None` when nothing is retained, and then it weighs nothing).
    pub fn last_append(&self) -> Option<Instant> {
        self.retained.back().map(|m| m.at)
    }

    /// Whether nothing is retained: with no members either, the stream may be freed.
    pub fn is_empty(&self) -> bool {
        self.retained.is_empty()
    }

    /// The page `query` asks for ([`HistoryQuery::page`]), and whether it is complete.
    pub fn page(&mut self, now: Instant, query: HistoryQuery) -> (Vec<Stored<P>>, bool) {
        let (after, all) = self.since(now, query.since);
        query.page(after, all)
    }

    /// The retained messages after `since`, oldest first, and whether they are all of
    /// them (`false`: some after `since` were already dropped).
    pub fn since(&mut self, now: Instant, since: u64) -> (Vec<Stored<P>>, bool) {
        self.expire(now);
        let first = self.retained.front().map_or(self.top + 1, |m| m.offset);
        let complete = retains_after(self.top, first, since);
        let skip = since.saturating_sub(first.saturating_sub(1)) as usize;
        let messages = self.retained.iter().skip(skip).cloned().collect();
        (messages, complete)
    }

    /// Decides the recovery of a client that last saw offset `since` of `epoch`.
    pub fn recover(&mut self, now: Instant, since: u64, epoch: &str) -> Recovery<P> {
        self.expire(now);
        let first = self.retained.front().map_or(self.top + 1, |m| m.offset);
        match decide_recovery(&self.epoch, self.top, first, since, epoch) {
            Ok(()) => Recovery::Recovered {
                missed: self.since(now, since).0,
            },
            Err(reason) => Recovery::Lost(reason),
        }
    }
}

/// What a history read asks for (the HTTP history and the v2 `history` frame): the retained
/// messages after `since`, at most `limit` of them (`None`: all, the v1 HTTP answer), the
/// oldest first or, with `reverse`, the newest first.
///
/// A page holds whole messages, in offset order (or its reverse), and no gap: a client
/// walks the stream forwards by asking again with `since` set to the last offset it got.
///
/// ```
/// use ws_core::history::HistoryQuery;
/// let query = HistoryQuery { since: 0, limit: Some(2), reverse: false };
/// assert_eq!(query.page(vec![1, 2, 3], true), (vec![1, 2], false));
/// let query = HistoryQuery { reverse: true, ..query };
/// assert_eq!(query.page(vec![1, 2, 3], true), (vec![3, 2], false));
/// assert_eq!(query.page(vec![2, 3], false), (vec![3, 2], false));
/// let all = HistoryQuery { since: 0, limit: None, reverse: false };
/// assert_eq!(all.page(vec![1, 2, 3], true), (vec![1, 2, 3], true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryQuery {
    /// Only messages after this offset (0: from the oldest retained).
    pub since: u64,
    /// At most this many messages ([`HistoryQuery::MAX_LIMIT`] at most, checked by the
    /// callers that parse it); `None`: every retained message after `since`.
    pub limit: Option<u32>,
    /// The newest first.
    pub reverse: bool,
}

impl HistoryQuery {
    /// The largest `limit` a client may ask for.
    pub const MAX_LIMIT: u32 = 1000;
    /// The `limit` of a v2 `history` frame that names none.
    pub const DEFAULT_LIMIT: u32 = 100;

    /// Everything retained after `since`, oldest first (the v1 HTTP history).
    pub fn since(since: u64) -> Self {
        Self {
            since,
            limit: None,
            reverse: false,
        }
    }

    /// The page of `after` (every retained message after `since`, oldest first; `all`:
    /// whether they are all of them, see [`History::since`]): at most `limit` messages from
    /// the requested end, and whether nothing else after `since` exists in that direction
    /// (`false` when the page was cut, or when some messages after `since` were dropped).
    pub fn page<T>(&self, mut after: Vec<T>, all: bool) -> (Vec<T>, bool) {
        let limit = self.limit.map_or(usize::MAX, |l| l as usize);
        let cut = after.len() > limit;
        if self.reverse {
            after.reverse();
        }
        after.truncate(limit);
        (after, all && !cut)
    }
}

/// Whether every message after `since` is retained, for a stream whose newest offset is
/// `top` and whose oldest retained offset is `first` (`top + 1` when nothing is retained).
pub fn retains_after(top: u64, first: u64, since: u64) -> bool {
    since.saturating_add(1) >= first || since >= top
}

/// The recovery decision of [`History::recover`] for a stream kept elsewhere (a distributed
/// broker keeps it in Redis): the stream is named `stream_epoch`, its newest offset is `top`
/// and its oldest retained offset `first` (`top + 1` when nothing is retained); the client
/// last saw offset `since` of `epoch`. `Ok(())`: replay every retained message after `since`.
///
/// ```
/// use ws_core::history::{decide_recovery, LostReason};
/// assert_eq!(decide_recovery("e1", 10, 5, 4, "e1"), Ok(()));
/// assert_eq!(decide_recovery("e1", 10, 5, 3, "e1"), Err(LostReason::OutOfRange));
/// assert_eq!(decide_recovery("e1", 10, 5, 11, "e1"), Err(LostReason::FromTheFuture));
/// assert_eq!(decide_recovery("e2", 10, 5, 9, "e1"), Err(LostReason::EpochChanged));
/// ```
pub fn decide_recovery(
    stream_epoch: &str,
    top: u64,
    first: u64,
    since: u64,
    epoch: &str,
) -> Result<(), LostReason> {
    if epoch != stream_epoch {
        return Err(LostReason::EpochChanged);
    }
    if since > top {
        return Err(LostReason::FromTheFuture);
    }
    if retains_after(top, first, since) {
        Ok(())
    } else {
        Err(LostReason::OutOfRange)
    }
}

/// Merges a replay with live messages: a message is delivered only if its offset is above
/// everything delivered before, so the overlap between "registered" and "history read"
/// reaches the client once (register first, then replay, then de-duplicate by offset).
///
/// ```
/// use ws_core::history::Watermark;
/// let mut seen = Watermark::new(3); // the replay went up to 3
/// assert!(!seen.admit(3)); // live copy of a replayed message
/// assert!(seen.admit(4));
/// assert!(!seen.admit(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark(u64);

impl Watermark {
    /// Everything up to and including `delivered` has been delivered.
    pub fn new(delivered: u64) -> Self {
        Self(delivered)
    }

    /// Whether the message at `offset` must be delivered; records it if so.
    pub fn admit(&mut self, offset: u64) -> bool {
        if offset > self.0 {
            self.0 = offset;
            true
        } else {
            false
        }
    }

    /// The highest offset delivered.
    pub fn delivered(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests;
