//! Server-sent events (SPEC §14): the event id `<epoch>:<offset>`, its strict parser, the
//! text of each event, and [`Stream`], the timers of one event stream.
//!
//! An SSE stream only writes: there is nothing to read, so no idle deadline and no close
//! handshake. What is left of [`Client`](crate::Client) is a heartbeat (a comment line after
//! `ping_interval` without a write), the token's expiry (4001) and the drain (1001), each
//! ending the stream with an `event: close`.
//!
//! ```text
//!   handle_written(now) ──► Stream ──► poll_output(): Heartbeat, Close(close)
//!   handle_drain(at)    ──►        ──► poll_timeout(): next wake-up
//!   handle_timeout(now) ──►
//! ```
//!
//! After every `handle_*` call, drain [`Stream::poll_output`] until `None`, then sleep until
//! [`Stream::poll_timeout`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ws_core::sse::{EventId, Output, Stream};
//!
//! let id: EventId = "e1:42".parse().unwrap();
//! assert_eq!((id.epoch.as_str(), id.offset), ("e1", 42));
//! assert_eq!(id.to_string(), "e1:42");
//!
//! let start = Instant::now();
//! let mut stream = Stream::new(Duration::from_secs(25), start);
//! stream.handle_timeout(stream.poll_timeout().unwrap());
//! assert_eq!(stream.poll_output(), Some(Output::Heartbeat));
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::close_code::{Close, CloseCode};

/// The longest epoch an id may carry (as the `epoch` query of SPEC §4).
pub const MAX_EPOCH_LEN: usize = 128;

/// The id of a message event: the position `offset` of the stream `epoch`, what
/// `Last-Event-ID` sends back to recover exactly as `since`/`epoch` do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventId {
    /// The epoch of the project's stream.
    pub epoch: String,
    /// The offset of the message in that stream.
    pub offset: u64,
}

/// Why a `Last-Event-ID` was refused (the client should drop it and connect without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidEventId {
    /// No `:` between an epoch and an offset.
    #[error("last event id must be <epoch>:<offset>")]
    Shape,
    /// The epoch is empty, longer than 128 characters, or holds a control character.
    #[error("the epoch of the last event id must be 1 to 128 printable characters")]
    Epoch,
    /// The offset is not an unsigned decimal integer.
    #[error("the offset of the last event id must be an unsigned integer")]
    Offset,
}

impl FromStr for EventId {
    type Err = InvalidEventId;

    /// `<epoch>:<offset>`, split at the last `:` (an epoch may hold one, an offset never).
    /// Strict: the offset is ASCII digits only (no sign, no space), within `u64`.
    fn from_str(s: &str) -> Result<Self, InvalidEventId> {
        let (epoch, offset) = s.rsplit_once(':').ok_or(InvalidEventId::Shape)?;
        if epoch.is_empty() || epoch.len() > MAX_EPOCH_LEN || epoch.chars().any(char::is_control) {
            return Err(InvalidEventId::Epoch);
        }
        if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidEventId::Offset);
        }
        let offset = offset.parse().map_err(|_| InvalidEventId::Offset)?;
        Ok(Self {
            epoch: epoch.to_owned(),
            offset,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// Appends one event to `out`: `id:` when given, `event: <name>`, and `data` as `data:`
/// lines (a frame's JSON may hold line breaks as whitespace; each becomes its own `data:`
/// line, which the client joins with `\n` again), then the blank line that ends it.
pub fn write_event(out: &mut String, id: Option<&EventId>, event: &str, data: &str) {
    use fmt::Write as _;
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = writeln!(out, "event: {event}");
    for line in data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

/// The `event: close` that ends a stream: `data: {"code":c,"reason":r}`.
pub fn close_event(out: &mut String, close: &Close) {
    let data = serde_json::json!({"code": close.code().as_u16(), "reason": close.reason()});
    write_event(out, None, "close", &data.to_string());
}

/// The `event: reset` of a lost recovery: the client reloads its state, and the id moves it
/// to the stream's present (`data: {"epoch":e,"offset":top}`), so its next reconnect
/// recovers from there instead of being reset again.
pub fn reset_event(out: &mut String, epoch: &str, top: u64) {
    let data = serde_json::json!({"epoch": epoch, "offset": top});
    let id = EventId {
        epoch: epoch.to_owned(),
        offset: top,
    };
    write_event(out, Some(&id), "reset", &data.to_string());
}

/// The heartbeat: a comment line, which clients ignore and proxies count as traffic.
pub const HEARTBEAT: &str = ":\n\n";

/// What a [`Stream`] asks the transport to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Write [`HEARTBEAT`].
    Heartbeat,
    /// Write [`close_event`] of this close, then end the stream.
    Close(Close),
}

/// The timers of one event stream: heartbeat, token expiry, drain.
///
/// ```text
///   Open ── expiry (4001), drain (1001), close() ──► Closed (an event: close was asked for)
/// ```
#[derive(Debug)]
pub struct Stream {
    ping_interval: Duration,
    next_heartbeat: Instant,
    expires_at: Option<Instant>,
    drain_at: Option<Instant>,
    closed: bool,
    outputs: Vec<Output>,
}

impl Stream {
    /// A stream opened at `now` that beats after `ping_interval` without a write.
    pub fn new(ping_interval: Duration, now: Instant) -> Self {
        Self {
            ping_interval,
            next_heartbeat: now + ping_interval,
            expires_at: None,
            drain_at: None,
            closed: false,
            outputs: Vec::new(),
        }
    }

    /// The token expires at `at`: the stream closes with 4001 then.
    pub fn set_expiry(&mut self, at: Instant) {
        self.expires_at = Some(at);
    }

    /// Something was written at `now`: the next heartbeat is due `ping_interval` later.
    pub fn handle_written(&mut self, now: Instant) {
        self.next_heartbeat = now + self.ping_interval;
    }

    /// The server drains: close with 1001 at `at` (the earliest of several wins).
    pub fn handle_drain(&mut self, now: Instant, at: Instant) {
        self.drain_at = Some(self.drain_at.map_or(at, |was| was.min(at)));
        self.handle_timeout(now);
    }

    /// Ends the stream with `close` (the hub's verdict: a slow consumer, a kick).
    pub fn close(&mut self, close: Close) {
        if !self.closed {
            self.closed = true;
            self.outputs.push(Output::Close(close));
        }
    }

    /// Time passed: fire every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if self.expires_at.is_some_and(|at| now >= at) {
            self.close(Close::new(CloseCode::TOKEN_EXPIRED, "token expired"));
        } else if self.drain_at.is_some_and(|at| now >= at) {
            self.close(Close::shutting_down());
        } else if now >= self.next_heartbeat {
            self.outputs.push(Output::Heartbeat);
            self.next_heartbeat = now + self.ping_interval;
        }
    }

    /// The next thing to write, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        (!self.outputs.is_empty()).then(|| self.outputs.remove(0))
    }

    /// When [`Stream::handle_timeout`] must next be called; `None` once closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        [Some(self.next_heartbeat), self.expires_at, self.drain_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether an `event: close` was asked for: nothing more may be written after it.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<EventId, InvalidEventId> {
        s.parse()
    }

    #[test]
    fn ids_parse_strictly() {
        assert_eq!(
            parse("e1:7"),
            Ok(EventId {
                epoch: "e1".to_owned(),
                offset: 7
            })
        );
        assert_eq!(parse("a:b:0").map(|id| id.epoch), Ok("a:b".to_owned()));
        assert_eq!(parse("e1"), Err(InvalidEventId::Shape));
        assert_eq!(parse(""), Err(InvalidEventId::Shape));
        assert_eq!(parse(":7"), Err(InvalidEventId::Epoch));
        assert_eq!(parse("e\u{7}:7"), Err(InvalidEventId::Epoch));
        assert_eq!(
            parse(&format!("{}:1", "e".repeat(129))),
            Err(InvalidEventId::Epoch)
        );
        for bad in [
            "e:",
            "e:+1",
            "e:-1",
            "e: 1",
            "e:1 ",
            "e:0x1",
            "e:18446744073709551616",
        ] {
            assert_eq!(parse(bad), Err(InvalidEventId::Offset), "{bad}");
        }
        assert_eq!(
            parse("e:18446744073709551615").map(|id| id.offset),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn events_are_rendered_line_by_line() {
        let mut out = String::new();
        let id = EventId {
            epoch: "e".to_owned(),
            offset: 3,
        };
        write_event(&mut out, Some(&id), "message", "{\"a\":\n1}");
        assert_eq!(out, "id: e:3\nevent: message\ndata: {\"a\":\ndata: 1}\n\n");
        out.clear();
        write_event(&mut out, None, "presence", "a\r\nb\rc");
        assert_eq!(out, "event: presence\ndata: a\ndata: b\ndata: c\n\n");
        out.clear();
        close_event(&mut out, &Close::slow_consumer());
        assert_eq!(
            out,
            "event: close\ndata: {\"code\":4008,\"reason\":\"slow consumer\"}\n\n"
        );
        out.clear();
        reset_event(&mut out, "e2", 9);
        assert_eq!(
            out,
            "id: e2:9\nevent: reset\ndata: {\"epoch\":\"e2\",\"offset\":9}\n\n"
        );
    }

    #[test]
    fn heartbeats_follow_silence_only() {
        let t0 = crate::client::tests::origin();
        let beat = Duration::from_secs(10);
        let mut stream = Stream::new(beat, t0);
        stream.handle_written(t0 + Duration::from_secs(5));
        assert_eq!(stream.poll_timeout(), Some(t0 + Duration::from_secs(15)));
        stream.handle_timeout(t0 + Duration::from_secs(14));
        assert_eq!(stream.poll_output(), None);
        stream.handle_timeout(t0 + Duration::from_secs(15));
        assert_eq!(stream.poll_output(), Some(Output::Heartbeat));
        assert_eq!(stream.poll_timeout(), Some(t0 + Duration::from_secs(25)));
    }

    #[test]
    fn expiry_and_drain_close_once() {
        let t0 = crate::client::tests::origin();
        let mut stream = Stream::new(Duration::from_secs(25), t0);
        stream.set_expiry(t0 + Duration::from_secs(3));
        stream.handle_drain(t0, t0 + Duration::from_secs(5));
        assert_eq!(stream.poll_output(), None);
        assert_eq!(stream.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        stream.handle_timeout(t0 + Duration::from_secs(6));
        let Some(Output::Close(close)) = stream.poll_output() else {
            panic!("expected a close");
        };
        assert_eq!(close.code(), CloseCode::TOKEN_EXPIRED);
        assert!(stream.is_closed());
        assert_eq!(stream.poll_timeout(), None);
        stream.close(Close::slow_consumer());
        stream.handle_timeout(t0 + Duration::from_secs(60));
        assert_eq!(stream.poll_output(), None);

        let mut stream = Stream::new(Duration::from_secs(25), t0);
        stream.handle_drain(t0, t0);
        assert_eq!(
            stream.poll_output(),
            Some(Output::Close(Close::shutting_down()))
        );
    }

    proptest! {
        #[test]
        fn ids_round_trip(epoch in "[^\\p{Cc}]{1,30}", offset: u64) {
            let id = EventId { epoch, offset };
            prop_assert_eq!(parse(&id.to_string()), Ok(id));
        }

        #[test]
        fn what_parses_renders_to_the_same_id(s in "\\PC{0,60}") {
            if let Ok(id) = parse(&s) {
                prop_assert_eq!(parse(&id.to_string()), Ok(id));
            }
        }
    }
}
