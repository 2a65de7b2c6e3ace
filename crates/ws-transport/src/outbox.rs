//! One connection's send queue: frames from the hub, plus the hub's commands.
//!
//! A `VecDeque` behind a short-held lock and a [`Notify`], rather than a channel: it
//! allocates nothing while empty (most connections are idle), reports its depth in frames
//! and bytes for the core's slow-consumer verdict, and carries close commands that must
//! overtake queued frames.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;
use tungstenite::Utf8Bytes;
use ws_core::hub::QueueDepth;
use ws_core::{Client, Close, ConnId};

use crate::tungstenite;

/// The send queue of one connection, shared between the hub and the write pump, and what
/// operators see of the connection (kept once here, not in each of a v2 connection's hub
/// memberships).
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    /// When the connection opened.
    pub(crate) opened_at: Instant,
    /// The peer's address, when known.
    pub(crate) remote: Option<SocketAddr>,
}

/// The member of frames that are for their connection alone (acks, errors, answers).
pub(crate) const NO_MEMBER: ConnId = ConnId(0);

/// A frame waiting to be written, with its offset when it is a project message (so a
/// replay and live delivery can be merged without duplicates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub(crate) offset: Option<u64>,
    /// When the broker accepted the message, for the fan-out latency.
    pub(crate) accepted: Option<Instant>,
    pub(crate) frame: Utf8Bytes,
    /// The hub member it was delivered to ([`NO_MEMBER`] for a frame for the connection
    /// alone): a v2 connection tells its subscriptions' frames apart by it.
    pub(crate) member: ConnId,
    /// The answer to a presence request: the core allows one at a time, and is told when
    /// it leaves the queue.
    pub(crate) presence_answer: bool,
}

impl Outgoing {
    /// A project message at `offset`, accepted by the broker at `accepted`.
    pub(crate) fn message(
        offset: Option<u64>,
        accepted: Option<Instant>,
        frame: Utf8Bytes,
    ) -> Self {
        Self {
            offset,
            accepted,
            frame,
            member: NO_MEMBER,
            presence_answer: false,
        }
    }

    /// The same frame, delivered to the hub member `member`.
    pub(crate) fn to(mut self, member: ConnId) -> Self {
        self.member = member;
        self
    }

    /// A frame for this connection alone: an ack, an error, a presence answer.
    pub(crate) fn answer(frame: Utf8Bytes, presence_answer: bool) -> Self {
        Self {
            offset: None,
            accepted: None,
            frame,
            member: NO_MEMBER,
            presence_answer,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Outgoing>,
    bytes: usize,
    close: Option<Close>,
    /// A close was commanded: frames pushed since are dropped (they could never be
    /// written), so a closing connection's queue stops growing.
    closing: bool,
    /// Hub members of this (v2) connection that the hub ended: an operator closed their
    /// project. The connection ends those subscriptions, not itself.
    ended: Vec<ConnId>,
    drain_at: Option<Instant>,
}

/// What the write pump takes out in one go.
#[derive(Debug, Default)]
pub(crate) struct Commands {
    /// Frames that were waiting before the take.
    pub(crate) waiting: usize,
    /// A close or a drain, boxed: they come at most once in a connection's life, and
    /// inline they would sit in every connection's write pump (its task's size class is
    /// most of an idle connection's memory).
    pub(crate) ending: Option<Box<Ending>>,
}

/// The hub's commands that end a connection.
#[derive(Debug, Default)]
pub(crate) struct Ending {
    pub(crate) close: Option<Close>,
    pub(crate) drain_at: Option<Instant>,
}

impl Commands {
    /// Applies the commands taken with `frames` to the connection's core: frames taken
    /// before a close command still go out ahead of its close frame, but only while the
    /// connection is open, and not behind a close that discards them (4008).
    pub(crate) fn apply<T>(&mut self, frames: &mut Vec<T>, client: &mut Client, now: Instant) {
        if !client.is_open() {
            frames.clear();
        }
        let Some(ending) = self.ending.take() else {
            return;
        };
        if let Some(close) = ending.close {
            if close.discards_queued() {
                frames.clear();
            }
            client.close(now, close);
        }
        if let Some(at) = ending.drain_at {
            client.handle_drain(now, at);
        }
    }
}

impl Outbox {
    /// The empty queue of a connection opened at `opened_at` from `remote`.
    pub(crate) fn new(opened_at: Instant, remote: Option<SocketAddr>) -> Self {
        Self {
            state: Mutex::default(),
            ready: Notify::new(),
            opened_at,
            remote,
        }
    }

    /// Queues a frame; the depth after it lets the hub judge the consumer.
    ///
    /// Only the first frame into an empty queue wakes the write pump: it takes frames until
    /// the queue is empty before it waits again, so a frame behind others is found without
    /// a wake-up of its own (a fan-out pushes into a thousand queues per message).
    pub(crate) fn push(&self, outgoing: Outgoing) -> QueueDepth {
        let depth = {
            let mut state = self.lock();
            if state.closing {
                return QueueDepth::default();
            }
            state.bytes += outgoing.frame.len();
            state.frames.push_back(outgoing);
            QueueDepth {
                frames: state.frames.len(),
                bytes: state.bytes,
            }
        };
        if depth.frames == 1 {
            self.ready.notify_one();
        }
        depth
    }

    /// The hub decided to close this connection.
    pub(crate) fn close(&self, close: Close) {
        let mut state = self.lock();
        if !state.closing {
            state.closing = true;
            state.close = Some(close);
        }
        drop(state);
        self.ready.notify_one();
    }

    /// The server drains this connection at `at` (the earliest of several wins).
    pub(crate) fn drain(&self, at: Instant) {
        let mut state = self.lock();
        state.drain_at = Some(state.drain_at.map_or(at, |was| was.min(at)));
        drop(state);
        self.ready.notify_one();
    }

    /// Moves up to `max` frames into `into` and takes pending commands.
    /// Frames stay counted in the depth until taken, so the verdict sees a stalled writer.
    pub(crate) fn take(&self, into: &mut Vec<Outgoing>, max: usize) -> Commands {
        let mut guard = self.lock();
        let state = &mut *guard;
        let waiting = state.frames.len();
        let n = waiting.min(max);
        for outgoing in state.frames.drain(..n) {
            state.bytes -= outgoing.frame.len();
            into.push(outgoing);
        }
        if state.frames.is_empty() && state.frames.capacity() > crate::pump::KEPT_FRAMES {
            // A burst is over (a wave of presence frames, a replay): give its memory back,
            // idle connections must stay small. A queue that never holds more than a few
            // frames keeps its buffer, so steady traffic does not allocate per frame.
            state.frames = VecDeque::new();
        }
        let ending = (state.close.is_some() || state.drain_at.is_some()).then(|| {
            Box::new(Ending {
                close: state.close.take(),
                drain_at: state.drain_at.take(),
            })
        });
        Commands { waiting, ending }
    }

    /// Whether a close command waits to be taken: the opening stops replaying then.
    pub(crate) fn close_pending(&self) -> bool {
        self.lock().close.is_some()
    }

    /// The hub ended the membership `member` of this v2 connection (its project was closed).
    pub(crate) fn end_member(&self, member: ConnId) {
        self.lock().ended.push(member);
        self.ready.notify_one();
    }

    /// The memberships the hub ended since the last call.
    pub(crate) fn take_ended(&self) -> Vec<ConnId> {
        std::mem::take(&mut self.lock().ended)
    }

    /// Wakes the write pump: frames of the connection's own (a v2 replay) wait outside the
    /// queue.
    pub(crate) fn wake(&self) {
        self.ready.notify_one();
    }

    /// Frames and bytes waiting now.
    pub(crate) fn depth(&self) -> QueueDepth {
        let state = self.lock();
        QueueDepth {
            frames: state.frames.len(),
            bytes: state.bytes,
        }
    }

    /// Whether frames are waiting.
    pub(crate) fn has_frames(&self) -> bool {
        !self.lock().frames.is_empty()
    }

    /// Resolves once something was pushed or commanded since the last call.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is never held across a panic-prone call; recover rather than cascade.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_frames_and_bytes_until_taken() {
        let outbox = Outbox::new(Instant::now(), None);
        outbox.push(Outgoing::message(Some(1), None, "abc".into()));
        let depth = outbox.push(Outgoing::answer("de".into(), false));
        assert_eq!(
            depth,
            QueueDepth {
                frames: 2,
                bytes: 5
            }
        );
        let mut batch = Vec::new();
        outbox.take(&mut batch, 1);
        assert_eq!(batch, [Outgoing::message(Some(1), None, "abc".into())]);
        assert_eq!(
            outbox.push(Outgoing::answer("f".into(), true)),
            QueueDepth {
                frames: 2,
                bytes: 3
            }
        );
    }

    #[test]
    fn the_first_close_wins() {
        let outbox = Outbox::new(Instant::now(), None);
        assert!(!outbox.close_pending());
        outbox.close(Close::slow_consumer());
        outbox.close(Close::normal());
        assert!(outbox.close_pending());
        let commands = outbox.take(&mut Vec::new(), 10);
        assert_eq!(
            commands.ending.and_then(|e| e.close),
            Some(Close::slow_consumer())
        );
        assert!(outbox.take(&mut Vec::new(), 10).ending.is_none());
    }
}
