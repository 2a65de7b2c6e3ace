//! The per-connection state machine: heartbeat, deadlines, frame policy and the close handshake.
//!
//! ```text
//!             handle_close (peer)                       peer close / deadline / EOF
//!   Open ─────────────────────────────► Closed ◄──────────────────────────── Closing
//!     │                                   ▲                                     ▲
//!     │ idle deadline, write timeout, EOF │                                     │
//!     └───────────────────────────────────┘                                     │
//!     └─────────── close(), fault, token expiry, drain: send close frame ───────┘
//! ```
//!
//! # Driving it
//!
//! After every `handle_*` call or [`Client::close`], drain [`Client::poll_transmit`] (frames
//! to write, in order) and [`Client::poll_event`] (what the application must act on) until
//! both return `None`, then sleep until [`Client::poll_timeout`] and call
//! [`Client::handle_timeout`]. Instants passed in must never go backwards.
//!
//! # Pipelined publishes
//!
//! A publish the machine raises ([`Event::Publish`], or [`Event::Request`] carrying a v2
//! `publish`) is *in flight* until the transport reports its answer written, in order, with
//! [`Client::handle_publish_answered`]. Up to `publish_window` may be in flight: the
//! transport sends them to the broker without waiting for the previous answer, and stops
//! reading from the peer while [`Client::publish_window_full`] (backpressure: the socket's
//! buffers fill, never the server's memory). The machine's own answers (`pong`, refusals)
//! wait behind the publishes raised before them, so a client sees every answer in the order
//! of its requests (a v1 `error` carries no id: the client matches it by position).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ws_core::client::{Client, ClientConfig, Event, Transmit};
//!
//! let start = Instant::now();
//! let mut client = Client::new(ClientConfig::default(), start);
//! client.handle_text(start, r#"{"type":"publish","data":"hi"}"#);
//! assert!(matches!(client.poll_event(), Some(Event::Publish { .. })));
//!
//! // Nothing heard for ping_interval: the machine asks for a ping.
//! let later = client.poll_timeout().unwrap();
//! client.handle_timeout(later);
//! assert_eq!(client.poll_transmit(), Some(Transmit::Ping));
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::close_code::{Close, CloseCode};
use crate::dedupe::IdempotencyKey;
use crate::envelope::v2::{self, Request, RequestError};
use crate::envelope::{ClientFrame, Payload, ServerFrame, code};

/// Limits and timers of one connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// How often the server pings (SPEC default 25 s).
    pub ping_interval: Duration,
    /// How long after a due ping silence is tolerated: no traffic for
    /// `ping_interval + pong_timeout` ends the connection.
    pub pong_timeout: Duration,
    /// How long one write may be stuck before the connection is dropped.
    pub write_timeout: Duration,
    /// How long to wait for the peer's close frame after sending ours.
    pub close_timeout: Duration,
    /// The largest text message accepted; larger ones close with 1009.
    pub max_message_bytes: usize,
    /// Malformed frames answered with an `error` frame before the connection closes with 1008.
    pub max_protocol_errors: u32,
    /// Whether clients may publish over the WebSocket.
    pub allow_publish: bool,
    /// Publishes per second one connection may make, with bursts of twice as many;
    /// 0 means no limit. Over it, publishes are refused with `rate_limited` errors.
    pub publish_rate: u32,
    /// Requests per second one connection may make (presence requests and `ping`s), with
    /// bursts of twice as many; 0 means no limit (SPEC §10, `limits.client_request_rate`).
    /// Over it, requests are refused with `rate_limited` errors. Each answer costs the
    /// server work that grows with the project (a presence list), so it needs a budget of
    /// its own.
    pub request_rate: u32,
    /// Which protocol the connection speaks: it decides how text frames are parsed and
    /// how refusals are answered.
    pub protocol: Protocol,
    /// Publishes in flight at once: raised and not yet answered (`limits.
    /// client_publishes_in_flight`). At the bound the transport reads nothing more from the
    /// peer until an answer is written. 0 is taken as 1 (one publish at a time).
    pub publish_window: u32,
}

/// The default [`ClientConfig::publish_window`]: a client's burst of publishes goes to the
/// broker in one or two round trips, and one connection can hold at most this many answers
/// (a few KiB) however it misbehaves.
pub const DEFAULT_PUBLISH_WINDOW: u32 = 64;

/// The wire protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// One project per connection (`/ws/projects/{p}`, SPEC §4): [`ClientFrame`]s.
    #[default]
    V1,
    /// Many subscriptions per connection (`/ws`, SPEC §10): [`v2::Request`]s, raised as
    /// [`Event::Request`]; refusals answer v2 `error` frames carrying the request's `id`
    /// and `project`.
    V2,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_message_bytes: 64 * 1024,
            max_protocol_errors: 3,
            allow_publish: true,
            publish_rate: 50,
            request_rate: 20,
            protocol: Protocol::V1,
            publish_window: DEFAULT_PUBLISH_WINDOW,
        }
    }
}

/// A frame the transport must write, in the order polled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Transmit {
    /// A ping control frame (empty payload).
    Ping,
    /// A text frame of the protocol: an `error`, or the `pong` that answers a `ping`.
    Text(String),
    /// A close frame; nothing may be written after it.
    Close(Close),
}

/// What the application must act on.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
#[non_exhaustive]
pub enum Event {
    /// The client published `data` to its project.
    Publish {
        /// The client's id for the publish (for the `ack`).
        id: Option<String>,
        /// The payload, verbatim.
        data: Payload,
        /// The idempotency key, when the client gave one.
        key: Option<IdempotencyKey>,
        /// Delivered live only: no offset, never retained.
        ephemeral: bool,
        /// Whether this connection receives its own message.
        echo: bool,
    },
    /// The client asked for the presence list. At most one answer is outstanding: until
    /// the transport reports it sent with [`Client::handle_presence_sent`], further
    /// requests are answered by that one and raise no event.
    PresenceRequest,
    /// A v2 request that passed the connection's budgets (the publish rate for a
    /// `publish`, the request budget for `presence`, `history` and `refresh`); `ping` never gets here
    /// (the core answers it). Grants and subscriptions are the application's to check.
    Request(Request),
    /// The connection is over: unregister it and drop the socket. Always the last event.
    Closed(Closed),
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close frame's code: the one we sent, the one the peer sent, or 1006 when none was exchanged.
    pub code: CloseCode,
    /// The close frame's reason, or why the connection was dropped.
    pub reason: String,
    /// Who ended it.
    pub initiator: Initiator,
    /// Whether a close frame went at least one way and the transport ended in order.
    pub clean: bool,
    /// Whether the peer is done sending: its close frame (or the end of its stream) arrived.
    /// The transport can then be closed at once: no unread data can turn the close into a
    /// TCP reset that destroys our close frame, so there is nothing to linger for.
    pub peer_finished: bool,
}

impl Closed {
    /// Whether this end is worth a warning in the logs: normal closes log at debug.
    /// A close frame without a code (1005) is what a browser's plain `close()` sends.
    pub fn is_normal(&self) -> bool {
        self.clean && (self.code.is_normal() || self.code == CloseCode::NO_STATUS)
    }
}

/// Who ended a connection (h2's `Initiator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// The server: a fault, a limit, the hub, a deadline or shutdown.
    Local,
    /// The peer: its close frame, or its transport going away.
    Remote,
}

/// A fault the WebSocket layer detected in what the peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerFault {
    /// A message over the size limit: 1009.
    TooBig,
    /// A text frame that is not UTF-8: 1007.
    InvalidUtf8,
    /// Broken framing (bad opcode, unmasked frame, bad fragmentation): 1002.
    Protocol,
}

#[derive(Debug, Clone)]
enum State {
    Open,
    /// We sent a close frame and wait for the peer's until `deadline`.
    Closing {
        close: Close,
        deadline: Instant,
    },
    Closed,
}

/// The state machine of one WebSocket connection. See the [module docs](self).
#[derive(Debug)]
pub struct Client {
    /// Shared by the connections of a server: inline, its hundred bytes would sit in
    /// every connection's task.
    config: Arc<ClientConfig>,
    state: State,
    /// Last time anything arrived from the peer.
    last_rx: Instant,
    next_ping: Instant,
    /// When the token expires; the connection closes with 4001 then.
    expires_at: Option<Instant>,
    /// When the server drains this connection with 1001.
    drain_at: Option<Instant>,
    protocol_errors: u32,
    publish_tokens: TokenBucket,
    request_tokens: TokenBucket,
    /// A presence answer is being built or waits in the send queue.
    presence_pending: bool,
    /// Publishes raised since the connection opened.
    publishes_raised: u64,
    /// Publishes whose answer the transport reported written.
    publishes_answered: u64,
    /// The machine's own text answers that wait behind publishes still in flight: each
    /// with the count of publishes raised before it, released once that many are answered.
    held: VecDeque<(u64, String)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Client {
    /// A new open connection at `now`. A server passes one `Arc<ClientConfig>` to all its
    /// connections; a `ClientConfig` will do too.
    pub fn new(config: impl Into<Arc<ClientConfig>>, now: Instant) -> Self {
        let config = config.into();
        Self {
            next_ping: now + config.ping_interval,
            publish_tokens: TokenBucket::new(config.publish_rate, now),
            request_tokens: TokenBucket::new(config.request_rate, now),
            presence_pending: false,
            publishes_raised: 0,
            publishes_answered: 0,
            held: VecDeque::new(),
            config,
            state: State::Open,
            last_rx: now,
            expires_at: None,
            drain_at: None,
            protocol_errors: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // === getters ===

    /// The connection's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Whether published messages may still be written: only while open.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Whether the connection is over; the shell stops once events are drained.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The deadline for a write started at `now`.
    pub fn write_deadline(&self, now: Instant) -> Instant {
        now + self.config.write_timeout
    }

    /// Publishes raised and not yet answered.
    pub fn publishes_in_flight(&self) -> u64 {
        self.publishes_raised - self.publishes_answered
    }

    /// Whether `publish_window` publishes are in flight: the transport must read nothing
    /// more from the peer until [`Client::handle_publish_answered`] makes room.
    pub fn publish_window_full(&self) -> bool {
        self.publishes_in_flight() >= u64::from(self.config.publish_window.max(1))
    }

    // === inputs from the peer ===

    /// A text message arrived.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        self.last_rx = now;
        if !self.is_open() {
            // After our close frame the peer may still send data; RFC 6455 lets us drop it.
            return;
        }
        if text.len() > self.config.max_message_bytes {
            self.close(
                now,
                Close::new(CloseCode::MESSAGE_TOO_BIG, "message too big"),
            );
            return;
        }
        if self.config.protocol == Protocol::V2 {
            self.handle_request(now, text);
            return;
        }
        match ClientFrame::parse(text) {
            Ok(ClientFrame::Publish {
                id,
                data,
                key,
                ephemeral,
                echo,
            }) => {
                if !self.config.allow_publish {
                    self.protocol_error(now, Refusal::PublishNotAllowed, ReplyTo::NONE);
                } else if self.publish_tokens.take(now) {
                    self.publishes_raised += 1;
                    self.events.push_back(Event::Publish {
                        id,
                        data,
                        key,
                        ephemeral,
                        echo,
                    });
                } else {
                    self.protocol_error(now, Refusal::PublishRate, ReplyTo::NONE);
                }
            }
            Ok(ClientFrame::Presence) => {
                if !self.request_tokens.take(now) {
                    self.protocol_error(now, Refusal::RequestRate, ReplyTo::NONE);
                } else if !self.presence_pending {
                    // A flood of requests while the answer waits behind a slow socket gets
                    // that one answer: answers never pile up in the send queue.
                    self.presence_pending = true;
                    self.events.push_back(Event::PresenceRequest);
                }
            }
            Ok(ClientFrame::Ping { id }) => {
                // Answered here and now: the cheapest request, but still one a flood of
                // which must not fill the send queue, so it is paid from the request budget.
                if self.request_tokens.take(now) {
                    let pong = ServerFrame::Pong { id: id.as_deref() }.to_json();
                    self.answer(pong);
                } else {
                    self.protocol_error(now, Refusal::RequestRate, ReplyTo::NONE);
                }
            }
            Err(e) => self.protocol_error(now, Refusal::Envelope(&e), ReplyTo::NONE),
        }
    }

    /// A v2 text frame (SPEC §10): the budgets apply per connection as on v1 (the fault
    /// budget, the publish rate, the request budget shared by presence, history and ping);
    /// a well-formed request with a value out of range is refused with an `error` frame
    /// that costs no fault.
    fn handle_request(&mut self, now: Instant, text: &str) {
        let request = match Request::parse(text) {
            Ok(request) => request,
            Err(e) if e.is_fault() => {
                let reply = ReplyTo::of_error(&e);
                self.protocol_error(now, Refusal::Request(&e), reply);
                return;
            }
            Err(e) => {
                self.answer(e.to_frame().to_json());
                return;
            }
        };
        let reply = ReplyTo {
            id: request.id(),
            project: request.target().map(v2::Target::as_str),
        };
        let refusal = match &request {
            Request::Ping { id } => {
                if self.request_tokens.take(now) {
                    let pong = v2::ServerFrame::Pong { id: id.as_deref() }.to_json();
                    self.answer(pong);
                    return;
                }
                Refusal::RequestRate
            }
            Request::Publish { .. } if !self.config.allow_publish => Refusal::PublishNotAllowed,
            Request::Publish { .. } if !self.publish_tokens.take(now) => Refusal::PublishRate,
            // A refresh verifies a token (a signature check): paid like a presence answer.
            Request::Presence { .. } | Request::History { .. } | Request::Refresh { .. }
                if !self.request_tokens.take(now) =>
            {
                Refusal::RequestRate
            }
            _ => {
                if matches!(request, Request::Publish { .. }) {
                    self.publishes_raised += 1;
                }
                self.events.push_back(Event::Request(request));
                return;
            }
        };
        // The reply borrows the request; copy what the error frame repeats.
        let (id, project) = (
            reply.id.map(str::to_owned),
            reply.project.map(str::to_owned),
        );
        let reply = ReplyTo {
            id: id.as_deref(),
            project: project.as_deref(),
        };
        self.protocol_error(now, refusal, reply);
    }

    /// A binary message of `len` bytes arrived: the protocol is JSON text only.
    pub fn handle_binary(&mut self, now: Instant, len: usize) {
        self.last_rx = now;
        if self.is_open() {
            let close = if len > self.config.max_message_bytes {
                Close::new(CloseCode::MESSAGE_TOO_BIG, "message too big")
            } else {
                Close::new(
                    CloseCode::UNSUPPORTED_DATA,
                    "binary frames are not supported",
                )
            };
            self.close(now, close);
        }
    }

    /// A message whose payload the application interprets itself (text or binary, not the
    /// JSON envelopes of [`Client::handle_text`]), `len` bytes long: an echo server, say.
    ///
    /// Returns whether to hand it to the application: only while open and within
    /// `max_message_bytes` (over it, the connection closes with 1009).
    #[must_use]
    pub fn handle_data(&mut self, now: Instant, len: usize) -> bool {
        self.last_rx = now;
        if !self.is_open() {
            return false;
        }
        if len > self.config.max_message_bytes {
            self.close(
                now,
                Close::new(CloseCode::MESSAGE_TOO_BIG, "message too big"),
            );
            return false;
        }
        true
    }

    /// The answer to the last [`Event::PresenceRequest`] left the send queue (or could not
    /// be built): the next request gets an answer of its own.
    pub fn handle_presence_sent(&mut self) {
        self.presence_pending = false;
    }

    /// The answer (an `ack` or an `error`) to the oldest publish in flight was written, or
    /// dropped with a closing connection. Each raised publish is answered exactly once, in
    /// the order raised; the machine's answers held behind it are released to
    /// [`Client::poll_transmit`], and the window has room for one more.
    pub fn handle_publish_answered(&mut self) {
        debug_assert!(
            self.publishes_in_flight() > 0,
            "an answer for a publish that was never raised"
        );
        if self.publishes_in_flight() == 0 {
            return;
        }
        self.publishes_answered += 1;
        while let Some((after, _)) = self.held.front() {
            if *after > self.publishes_answered {
                break;
            }
            if let Some((_, frame)) = self.held.pop_front()
                && self.is_open()
            {
                self.transmits.push_back(Transmit::Text(frame));
            }
        }
    }

    /// A ping or pong arrived. Pongs to our pings are answered by the WebSocket layer.
    pub fn handle_control(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// The peer's close frame arrived (`None`: it carried no code).
    ///
    /// The WebSocket layer echoes it (RFC 6455 §5.5.1); the shell must then flush.
    pub fn handle_close(&mut self, now: Instant, frame: Option<(CloseCode, &str)>) {
        self.last_rx = now;
        let (code, reason) = frame.unwrap_or((CloseCode::NO_STATUS, ""));
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Open => self.finish(Closed {
                code,
                reason: reason.to_owned(),
                initiator: Initiator::Remote,
                clean: true,
                peer_finished: true,
            }),
            State::Closing { close, .. } => self.finish(Closed {
                code: close.code(),
                reason: close.reason().to_owned(),
                initiator: Initiator::Local,
                clean: true,
                peer_finished: true,
            }),
            State::Closed => {}
        }
    }

    /// The WebSocket layer refused what the peer sent. The close frame is sent and the
    /// connection ends at once: the rest of the stream cannot be parsed.
    pub fn handle_fault(&mut self, now: Instant, fault: PeerFault) {
        self.last_rx = now;
        self.fault(now, fault);
    }

    /// The transport ended: `eof` for an orderly TCP end, otherwise a reset or IO error.
    pub fn handle_disconnect(&mut self, now: Instant, eof: bool, cause: &str) {
        let _ = now;
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Open => self.finish(Closed {
                code: CloseCode::ABNORMAL,
                reason: cause.to_owned(),
                initiator: Initiator::Remote,
                clean: false,
                peer_finished: eof,
            }),
            // The peer got our close frame and hung up without answering: common and harmless.
            State::Closing { close, .. } => self.finish(Closed {
                code: close.code(),
                reason: close.reason().to_owned(),
                initiator: Initiator::Local,
                clean: eof,
                peer_finished: eof,
            }),
            State::Closed => {}
        }
    }

    /// A write was stuck past [`Client::write_deadline`]: the peer is not reading.
    /// No close frame can get through, so the connection is dropped.
    pub fn handle_write_timeout(&mut self, now: Instant) {
        let _ = now;
        if !self.is_closed() {
            self.state = State::Closed;
            self.finish(Closed {
                code: CloseCode::ABNORMAL,
                reason: "write timeout".to_owned(),
                initiator: Initiator::Local,
                clean: false,
                peer_finished: false,
            });
        }
    }

    // === inputs from the server ===

    /// Closes the connection with `close`: sends the frame and waits for the peer's.
    /// Does nothing once closing.
    pub fn close(&mut self, now: Instant, close: Close) {
        if self.is_open() {
            debug_assert!(close.code().is_sendable(), "{close:?} cannot be sent");
            self.transmits.push_back(Transmit::Close(close.clone()));
            self.state = State::Closing {
                close,
                deadline: now + self.config.close_timeout,
            };
        }
    }

    /// The token expires at `at`: the connection closes with 4001 then.
    pub fn set_expiry(&mut self, at: Instant) {
        self.expires_at = Some(at);
    }

    /// A v2 `refresh` verified a new token, which expires at `at` (`None`: never, or expiry
    /// not enforced): the 4001 deadline moves there, and nothing reconnects.
    pub fn handle_refresh(&mut self, at: Option<Instant>) {
        self.expires_at = at;
    }

    /// The server is draining: close with 1001 at `at` (spread so clients do not all
    /// reconnect at once).
    pub fn handle_drain(&mut self, now: Instant, at: Instant) {
        self.drain_at = Some(at);
        self.handle_timeout(now);
    }

    /// Time passed: fire every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::Closed => {}
            State::Closing { close, deadline } => {
                if now >= *deadline {
                    let close = close.clone();
                    self.state = State::Closed;
                    self.finish(Closed {
                        code: close.code(),
                        reason: format!("{} (no close frame from the peer)", close.reason()),
                        initiator: Initiator::Local,
                        clean: false,
                        peer_finished: false,
                    });
                }
            }
            State::Open => {
                if now >= self.idle_deadline() {
                    // The peer is gone or frozen. A close frame is sent as a courtesy, but
                    // nobody waits for an answer: the connection ends now.
                    let close = Close::new(CloseCode::GOING_AWAY, "ping timeout");
                    self.transmits.push_back(Transmit::Close(close.clone()));
                    self.state = State::Closed;
                    self.finish(Closed {
                        code: close.code(),
                        reason: close.reason().to_owned(),
                        initiator: Initiator::Local,
                        clean: false,
                        peer_finished: false,
                    });
                } else if self.expires_at.is_some_and(|at| now >= at) {
                    self.close(now, Close::new(CloseCode::TOKEN_EXPIRED, "token expired"));
                } else if self.drain_at.is_some_and(|at| now >= at) {
                    self.close(now, Close::shutting_down());
                } else if now >= self.next_ping {
                    self.transmits.push_back(Transmit::Ping);
                    // Skip missed beats rather than bursting pings after a stall.
                    while self.next_ping <= now {
                        self.next_ping += self.config.ping_interval;
                    }
                }
            }
        }
    }

    // === outputs ===

    /// The next frame to write.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] must next be called; `None` once closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Closed => None,
            State::Closing { deadline, .. } => Some(*deadline),
            State::Open => [
                Some(self.next_ping),
                Some(self.idle_deadline()),
                self.expires_at,
                self.drain_at,
            ]
            .into_iter()
            .flatten()
            .min(),
        }
    }

    // === internals ===

    fn idle_deadline(&self) -> Instant {
        self.last_rx + self.config.ping_interval + self.config.pong_timeout
    }

    /// A framing fault: the rest of the stream cannot be parsed, so after our close frame
    /// nothing more is read and nobody waits for the peer's answer.
    fn fault(&mut self, now: Instant, fault: PeerFault) {
        let _ = now;
        let close = match fault {
            PeerFault::TooBig => Close::new(CloseCode::MESSAGE_TOO_BIG, "message too big"),
            PeerFault::InvalidUtf8 => Close::new(CloseCode::INVALID_PAYLOAD, "invalid UTF-8"),
            PeerFault::Protocol => Close::new(CloseCode::PROTOCOL_ERROR, "protocol error"),
        };
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Open => {
                self.transmits.push_back(Transmit::Close(close.clone()));
                self.finish(Closed {
                    code: close.code(),
                    reason: close.reason().to_owned(),
                    initiator: Initiator::Local,
                    clean: true,
                    peer_finished: false,
                });
            }
            State::Closing { close, .. } => self.finish(Closed {
                code: close.code(),
                reason: close.reason().to_owned(),
                initiator: Initiator::Local,
                clean: false,
                peer_finished: false,
            }),
            State::Closed => {}
        }
    }

    /// A recoverable fault: an `error` frame, and 1008 once they pile up.
    fn protocol_error(&mut self, now: Instant, refusal: Refusal<'_>, reply: ReplyTo<'_>) {
        self.protocol_errors += 1;
        if self.protocol_errors > self.config.max_protocol_errors {
            let reason = match refusal {
                Refusal::PublishRate => "publish rate exceeded repeatedly",
                Refusal::RequestRate => "request rate exceeded repeatedly",
                Refusal::PublishNotAllowed | Refusal::Envelope(_) | Refusal::Request(_) => {
                    "too many malformed frames"
                }
            };
            self.close(now, Close::new(CloseCode::POLICY_VIOLATION, reason));
        } else {
            let (code, message) = match refusal {
                Refusal::PublishNotAllowed => (
                    code::PUBLISH_NOT_ALLOWED,
                    "this server does not accept publishes from clients".to_owned(),
                ),
                Refusal::PublishRate => (
                    code::RATE_LIMITED,
                    "publish rate exceeded; slow down".to_owned(),
                ),
                Refusal::RequestRate => (
                    code::RATE_LIMITED,
                    "request rate exceeded; slow down".to_owned(),
                ),
                Refusal::Envelope(e) => (e.code(), e.to_string()),
                Refusal::Request(e) => (e.code(), e.message().to_owned()),
            };
            let frame = match self.config.protocol {
                Protocol::V1 => ServerFrame::error(code, &message).to_json(),
                Protocol::V2 => v2::ServerFrame::Error {
                    id: reply.id,
                    project: reply.project,
                    code,
                    message: &message,
                }
                .to_json(),
            };
            self.answer(frame);
        }
    }

    /// Queues one of the machine's own text answers: at once, or behind the publishes in
    /// flight, whose answers the client must see first.
    fn answer(&mut self, frame: String) {
        if self.publishes_in_flight() == 0 {
            self.transmits.push_back(Transmit::Text(frame));
        } else {
            self.held.push_back((self.publishes_raised, frame));
        }
    }

    fn finish(&mut self, closed: Closed) {
        debug_assert!(self.is_closed());
        self.events.push_back(Event::Closed(closed));
    }
}

/// A recoverable fault in what the client sent: answered with an `error` frame; the
/// fault budget (`max_protocol_errors`) is shared by all of them.
#[derive(Debug, Clone, Copy)]
enum Refusal<'a> {
    PublishNotAllowed,
    PublishRate,
    RequestRate,
    Envelope(&'a crate::envelope::EnvelopeError),
    Request(&'a RequestError),
}

/// What a v2 `error` frame repeats of the request it answers.
#[derive(Debug, Clone, Copy)]
struct ReplyTo<'a> {
    id: Option<&'a str>,
    project: Option<&'a str>,
}

impl<'a> ReplyTo<'a> {
    const NONE: Self = Self {
        id: None,
        project: None,
    };

    fn of_error(e: &'a RequestError) -> Self {
        Self {
            id: e.id(),
            project: e.target().map(v2::Target::as_str),
        }
    }
}

/// A token bucket refilled at `rate` per second, holding at most `2 × rate`.
#[derive(Debug, Clone)]
struct TokenBucket {
    rate: u32,
    /// Tokens in thousandths, so sub-token refills are not lost between calls.
    milli_tokens: u64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(rate: u32, now: Instant) -> Self {
        Self {
            rate,
            milli_tokens: u64::from(rate) * 2 * 1000,
            refilled: now,
        }
    }

    /// Takes one token if there is one; a rate of 0 never runs out.
    fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let capacity = u64::from(self.rate) * 2 * 1000;
        let elapsed = now.saturating_duration_since(self.refilled);
        let refill = (elapsed.as_micros() as u64).saturating_mul(u64::from(self.rate)) / 1000;
        if refill > 0 {
            self.milli_tokens = (self.milli_tokens + refill).min(capacity);
            self.refilled = now;
        }
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
