//! Exact publishing: the window of idempotency keys of one project's stream.
//!
//! A publish may carry a `key` ([`IdempotencyKey`]: 1 to 128 bytes; anything else is refused
//! with `invalid_key`). When a key repeats while the window still remembers it, the repeat is
//! answered with the first publish's offset and `"duplicate": true`, and delivers nothing.
//!
//! ```text
//!   publish(key) ──► check(now, key) ──► Some(offset): answer {offset, duplicate: true}
//!                                    └─► None: append to the stream, then record(now, key, offset)
//! ```
//!
//! # What it covers, and what it does not
//!
//! A key is remembered from its [`record`](DedupeWindow::record) until either
//!
//! - it is older than `ttl` (`history.ttl`: a key recorded at `t` is forgotten once
//!   `now - t > ttl`, as history forgets a message), or
//! - `capacity` newer keys were recorded (`history.size`): the oldest key goes first.
//!
//! A repeat after that is a new message, with a new offset. So a client that retries within
//! the ttl, while fewer than `capacity` other keyed publishes happened, publishes exactly
//! once; beyond that, at least once. The window remembers only the keys it was told about on
//! this node: a restart forgets them all (the stream's epoch changes then too). Ephemeral
//! publishes have no offset and are not recorded. Keys are per stream: the same key on two
//! projects names two publishes.
//!
//! # Cost
//!
//! A queue of keys in the order recorded, plus a hash map from key to offset. Both
//! [`check`](DedupeWindow::check) and [`record`](DedupeWindow::record) are O(1) amortised:
//! each key is pushed once and popped at most once; expiry only ever looks at the front. The
//! memory is bounded by `capacity` keys of at most 128 bytes ([`DedupeWindow::bytes`]).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ws_core::dedupe::{DedupeWindow, IdempotencyKey};
//!
//! let start = Instant::now();
//! let mut window = DedupeWindow::new(1000, Duration::from_secs(600));
//! let key = IdempotencyKey::parse("order-17")?;
//! assert_eq!(window.check(start, &key), None); // new: publish it, at offset 42
//! window.record(start, key.clone(), 42);
//! assert_eq!(window.check(start + Duration::from_secs(5), &key), Some(42)); // a retry
//! assert_eq!(window.check(start + Duration::from_secs(601), &key), None); // forgotten
//! # Ok::<(), ws_core::dedupe::InvalidKey>(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::mem::size_of;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A publish's idempotency key: 1 to 128 bytes of any text, compared byte for byte.
///
/// Cheap to clone: the window keeps it twice (in its queue and its map) for one allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Arc<str>);

/// Why a string is not an idempotency key: the error code `invalid_key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidKey {
    /// Empty, or longer than [`IdempotencyKey::MAX_LEN`] bytes.
    #[error("an idempotency key must be 1 to 128 bytes long, got {0}: send a shorter key")]
    Length(usize),
}

impl IdempotencyKey {
    /// The longest key, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates `s` as a key: 1 to [`MAX_LEN`](Self::MAX_LEN) bytes (not characters).
    pub fn parse(s: &str) -> Result<Self, InvalidKey> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(InvalidKey::Length(s.len()));
        }
        Ok(Self(s.into()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one remembered key costs besides its text: its queue slot, its map slot (with a
/// control byte) and the shared allocation's two reference counts.
const ENTRY_OVERHEAD: usize = size_of::<(Instant, IdempotencyKey)>()
    + size_of::<(IdempotencyKey, u64)>()
    + 1
    + 2 * size_of::<usize>();

/// The idempotency keys one stream remembers. See the [module docs](self).
///
/// Instants passed in must never go backwards (they may stay equal).
#[derive(Debug, Clone)]
pub struct DedupeWindow {
    capacity: usize,
    ttl: Duration,
    /// Keys in the order recorded, with when: the oldest at the front.
    order: VecDeque<(Instant, IdempotencyKey)>,
    /// Key → the offset of its first publish. Holds exactly the keys of `order`.
    offsets: HashMap<IdempotencyKey, u64>,
    /// The bytes of text of the keys held.
    key_bytes: usize,
}

impl DedupeWindow {
    /// An empty window remembering at most `capacity` keys for `ttl` each. A `capacity` of 0
    /// remembers nothing.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity,
            ttl,
            order: VecDeque::new(),
            offsets: HashMap::new(),
            key_bytes: 0,
        }
    }

    /// The offset of the first publish with `key`, when it is still remembered at `now`: the
    /// publish is a duplicate. Forgets the keys older than `ttl` first.
    pub fn check(&mut self, now: Instant, key: &IdempotencyKey) -> Option<u64> {
        self.expire(now);
        self.offsets.get(key).copied()
    }

    /// Remembers that the publish with `key` got `offset` at `now`. Forgets the keys older
    /// than `ttl`, then the oldest keys while more than `capacity` are held.
    ///
    /// A key still remembered keeps its first offset and its age: call [`check`](Self::check)
    /// first and record only new publishes.
    pub fn record(&mut self, now: Instant, key: IdempotencyKey, offset: u64) {
        self.expire(now);
        if self.capacity == 0 || self.offsets.contains_key(&key) {
            return;
        }
        self.key_bytes += key.0.len();
        self.offsets.insert(key.clone(), offset);
        self.order.push_back((now, key));
        while self.order.len() > self.capacity {
            self.pop_front();
        }
    }

    /// Forgets the keys older than `ttl` at `now`. [`check`](Self::check) and
    /// [`record`](Self::record) do it themselves; call it to free an idle stream's keys.
    pub fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > self.ttl)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            self.key_bytes -= key.0.len();
            self.offsets.remove(&key);
        }
    }

    /// How many keys are remembered (expired ones included until the next call that expires).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most keys remembered.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long a key is remembered.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The memory the remembered keys take, approximately: their text plus a fixed overhead
    /// per key (queue and map slots, the reference counts). Spare capacity of the collections
    /// is not counted. For the broker's memory budget.
    pub fn bytes(&self) -> usize {
        self.key_bytes + self.order.len() * ENTRY_OVERHEAD
    }
}

#[cfg(test)]
mod tests;
