//! The pumps of one upgraded connection, whatever application it serves: socket ↔
//! [`Client`] core, the core's timers, the close handshake, write batching and the
//! lingering close.
//!
//! Both pumps are futures of one task and share the connection's core behind an
//! uncontended lock (they never run at the same time). The read pump moves frames from the
//! socket into the core through the [`Application`]; the write pump writes the
//! application's frames and the core's transmits, fires the core's timers and ends the
//! connection. See `docs/architecture.md` for why one task and not two.
//!
//! The application is a type parameter, not a trait object: the hub's fan-out path is
//! monomorphised and pays no dynamic dispatch per frame.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Sink, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::error::Elapsed;
use tokio::time::{timeout, timeout_at};
use tungstenite::Utf8Bytes;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Error as WsError, Message};
use ws_core::client::{Closed, Event, PeerFault, Transmit};
use ws_core::{Client, Close, CloseCode};

use crate::socket::WsStream;
use crate::tungstenite;
use crate::wire::{MAX_HEADER, Opcode};

/// What a connection serves: what becomes of the peer's messages, and where the frames
/// the write pump writes besides the core's own come from.
///
/// The read pump calls `on_text`/`on_binary` with the core locked, then `on_event` for
/// each event the core emitted, unlocked. The write pump calls `take` (unlocked), `apply`
/// (locked), polls the core's transmits, calls `emit` (unlocked) and writes the
/// application's frames ahead of the core's transmits, then reports the write to `written`.
pub(crate) trait Application: Sync {
    /// The write pump's reusable buffer of taken frames and commands.
    type Batch: Default + Send;
    /// What `emit` tells `written` about a batch (for metrics).
    type Written: Send;

    /// A text message from the peer; hand it to the core.
    fn on_text(&self, client: &mut Client, now: Instant, text: Utf8Bytes);
    /// A binary message from the peer; hand it to the core.
    fn on_binary(&self, client: &mut Client, now: Instant, data: Bytes);
    /// An event of the core other than `Closed` (the pump keeps that one).
    fn on_event(&self, event: Event) -> impl Future<Output = ()> + Send;

    /// Moves the next frames to write, and pending commands, into `batch`.
    fn take(&self, batch: &mut Self::Batch);
    /// With the core locked: applies the batch's commands, drops frames the core no longer
    /// allows.
    fn apply(&self, batch: &mut Self::Batch, client: &mut Client, now: Instant);
    /// Moves the batch's frames into `out`, in order.
    fn emit(&self, batch: &mut Self::Batch, out: &mut Vec<Message>) -> Self::Written;
    /// `frames` (the batch's and the core's) were written and flushed.
    fn written(&self, written: Self::Written, frames: usize);
    /// Whether frames wait to be taken.
    fn has_frames(&self) -> bool;
    /// Resolves once frames or commands arrived from outside the connection's task.
    fn ready(&self) -> impl Future<Output = ()> + Send;
}

/// The state both pumps share.
struct Shared {
    client: Client,
    /// How the connection ended, once the core said so.
    closed: Option<Closed>,
}

struct Pumps<'a, A> {
    app: &'a A,
    shared: Mutex<Shared>,
    /// The WebSocket, locked by each poll of either pump (never across an await: both
    /// pumps are futures of one task). Boxed: the task keeps a pointer to it, not its
    /// 300-odd bytes.
    ws: Mutex<Box<WsStream>>,
    /// The read pump tells the write pump that the core has something for it.
    wake_writer: Notify,
    linger: Duration,
}

impl<A> Pumps<'_, A> {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn lock_ws(ws: &Mutex<Box<WsStream>>) -> MutexGuard<'_, Box<WsStream>> {
    ws.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How the pumps ended.
pub(crate) struct Ended {
    /// How the connection closed.
    pub(crate) closed: Closed,
    /// The socket, when our close frame went out but the peer may still be sending:
    /// [`linger`] on it after the application's own end-of-connection work.
    pub(crate) socket: Option<WsStream>,
}

/// Runs the pumps of `ws` for `app` until `client` is closed.
///
/// Not an `async fn`: the arguments of an `async fn` stay in its future for its whole life,
/// next to the state built from them, which here would double the socket and the core in
/// every connection's task. The state is built first and only it moves into the future.
pub(crate) fn run<A: Application>(
    ws: WsStream,
    app: &A,
    client: Client,
    linger: Duration,
) -> impl Future<Output = Ended> + Send + '_ {
    let pumps = Pumps {
        app,
        shared: Mutex::new(Shared {
            client,
            closed: None,
        }),
        wake_writer: Notify::new(),
        linger,
        ws: Mutex::new(Box::new(ws)),
    };
    async move {
        let closed = tokio::select! {
            biased;
            closed = write_pump(&pumps) => closed,
            () = read_pump(&pumps) => unreachable!("the read pump never returns"),
        };
        // Our close frame went out while the peer may still be sending: the caller gives the
        // peer time to read it. When the peer is done, dropping the socket here closes it at
        // once, the server first as RFC 6455 §7.1.1 wants, and the task ends sooner.
        let socket = if closed.clean && !closed.peer_finished {
            let ws = pumps
                .ws
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner);
            Some(*ws)
        } else {
            None
        };
        Ended { closed, socket }
    }
}

/// Socket → core. Never returns: once the socket is done it parks, and the write pump
/// ends the connection.
async fn read_pump<A: Application>(pumps: &Pumps<'_, A>) {
    let mut events = Vec::new();
    loop {
        let item = poll_fn(|cx| lock_ws(&pumps.ws).poll_next_unpin(cx)).await;
        let now = Instant::now();
        let done = {
            let mut shared = pumps.lock();
            let shared = &mut *shared;
            let client = &mut shared.client;
            let done = match item {
                Some(Ok(Message::Text(text))) => {
                    pumps.app.on_text(client, now, text);
                    false
                }
                Some(Ok(Message::Binary(data))) => {
                    pumps.app.on_binary(client, now, data);
                    false
                }
                // Pings are answered by the WebSocket layer, on its next read or write.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    client.handle_control(now);
                    false
                }
                Some(Ok(Message::Close(frame))) => {
                    let frame = frame
                        .as_ref()
                        .map(|f| (CloseCode::new(f.code.into()), f.reason.as_str()));
                    client.handle_close(now, frame);
                    false
                }
                // Raw frames are only ever produced for writing.
                Some(Ok(Message::Frame(_))) => false,
                Some(Err(e)) => {
                    match classify(&e) {
                        ReadEnd::Fault(fault) => client.handle_fault(now, fault),
                        ReadEnd::Gone { eof } => client.handle_disconnect(now, eof, &e.to_string()),
                    }
                    true
                }
                None => {
                    client.handle_disconnect(now, true, "connection closed");
                    true
                }
            };
            while let Some(event) = client.poll_event() {
                match event {
                    Event::Closed(closed) => shared.closed = Some(closed),
                    other => events.push(other),
                }
            }
            done
        };
        for event in events.drain(..) {
            pumps.app.on_event(event).await;
        }
        pumps.wake_writer.notify_one();
        if done {
            return std::future::pending().await;
        }
    }
}

/// Application and core → socket, and the timers. Returns how the connection ended.
async fn write_pump<A: Application>(pumps: &Pumps<'_, A>) -> Closed {
    let app = pumps.app;
    let mut batch = A::Batch::default();
    let mut transmits = Vec::new();
    let mut out = Vec::new();
    loop {
        let now = Instant::now();
        app.take(&mut batch);
        {
            let mut shared = pumps.lock();
            let client = &mut shared.client;
            app.apply(&mut batch, client, now);
            while let Some(t) = client.poll_transmit() {
                transmits.push(t);
            }
        }
        let written = app.emit(&mut batch, &mut out);
        out.extend(transmits.drain(..).map(transmit_message));
        let frames = out.len();
        if frames > 0 {
            let deadline = pumps.lock().client.write_deadline(now);
            match write_all(&pumps.ws, out.drain(..), deadline).await {
                Ok(Ok(())) => app.written(written, frames),
                // The peer reads nothing while it makes us answer (pongs pile up in the write
                // buffer up to its cap): as stuck as a write that times out.
                Ok(Err(WsError::WriteBufferFull(_))) | Err(_) => {
                    pumps.lock().client.handle_write_timeout(Instant::now());
                }
                Ok(Err(e)) => {
                    let mut shared = pumps.lock();
                    let client = &mut shared.client;
                    match classify(&e) {
                        ReadEnd::Gone { eof: true } => {
                            client.handle_disconnect(Instant::now(), true, "connection closed");
                        }
                        ReadEnd::Fault(_) | ReadEnd::Gone { eof: false } => {
                            client.handle_disconnect(Instant::now(), false, &e.to_string());
                        }
                    }
                }
            }
            // A failed write leaves the rest undrained: never carry it into the next batch.
            out.clear();
            // A burst (a replay, a wave of presence frames) must not leave its buffer to an
            // idle connection for the rest of its life.
            release_burst(&mut out);
        }

        if let Some(closed) = take_closed(pumps) {
            // The peer's close frame may have been answered by the WebSocket layer: send it.
            // Boxed, like every rare or last step: inline, its state would count towards
            // the size of every connection's task for the whole of its life.
            let _ = Box::pin(timeout(pumps.linger, flush(&mut &pumps.ws))).await;
            return closed;
        }
        if app.has_frames() {
            continue;
        }
        let timer = pumps.lock().client.poll_timeout();
        tokio::select! {
            () = app.ready() => {}
            () = pumps.wake_writer.notified() => {}
            () = sleep_until(timer) => pumps.lock().client.handle_timeout(Instant::now()),
        }
    }
}

/// Frames a per-connection buffer keeps room for between writes; past that, the buffer is
/// freed once empty (an allocation per large write, next to its system call, against the
/// idle memory of every connection that once had a burst).
pub(crate) const KEPT_FRAMES: usize = 8;

/// Frees `buffer` when a burst left it larger than [`KEPT_FRAMES`].
pub(crate) fn release_burst<T>(buffer: &mut Vec<T>) {
    if buffer.is_empty() && buffer.capacity() > KEPT_FRAMES {
        *buffer = Vec::new();
    }
}

/// Where [`write_all`] finds the WebSocket: owned by the caller (the opening), or behind
/// the pumps' mutex, locked for one step at a time.
pub(crate) trait WsAccess: Send {
    /// Whether tungstenite may hold bytes when a write starts (a pong it queued while
    /// reading, a frame a full socket cut short), to be flushed before a data frame.
    const TUNGSTENITE_MAY_HOLD: bool;

    /// Runs `f` on the WebSocket.
    fn with<R>(&mut self, f: impl FnOnce(&mut WsStream) -> R) -> R;
}

/// The opening's WebSocket, written before anything else read or wrote it (the welcome,
/// the replay): tungstenite holds nothing, and a flush first would send a held 101 alone,
/// one segment ahead of the welcome.
impl WsAccess for &mut WsStream {
    const TUNGSTENITE_MAY_HOLD: bool = false;

    fn with<R>(&mut self, f: impl FnOnce(&mut WsStream) -> R) -> R {
        f(self)
    }
}

/// The pumps' WebSocket.
impl WsAccess for &Mutex<Box<WsStream>> {
    const TUNGSTENITE_MAY_HOLD: bool = true;

    fn with<R>(&mut self, f: impl FnOnce(&mut WsStream) -> R) -> R {
        f(&mut lock_ws(self))
    }
}

/// Writes `messages` and flushes them, all before `deadline`.
///
/// On plain TCP, text and binary frames skip tungstenite: each is encoded straight into the
/// socket's gather buffer ([`crate::wire`]), and the flush sends the batch in one system
/// call. Control frames go through tungstenite, which keeps the close handshake's state;
/// whatever tungstenite holds (a pong it queued while reading, a frame a full socket cut
/// short) is flushed before a data frame follows it, so frames never interleave. No data
/// frame follows a close: the core drops a batch's frames once it is no longer open, and
/// tungstenite queues its answer to the peer's close only in the read that tells the core.
/// tungstenite never formats a data frame, so its own buffer is never sized by one (it
/// kept the largest frame's size, the welcome's at least, for the connection's life).
///
/// The future is boxed: a connection spends its life waiting, not writing, and inline the
/// write's state (the iterator, a timer, the socket's futures) would make every idle
/// connection's task that much bigger. One allocation per batch of frames is small next to
/// the write system call it comes with.
pub(crate) fn write_all<'a, W, I>(
    mut ws: W,
    messages: I,
    deadline: Instant,
) -> Pin<Box<impl Future<Output = Result<Result<(), WsError>, Elapsed>> + Send + 'a>>
where
    W: WsAccess + 'a,
    I: IntoIterator<Item = Message> + Send + 'a,
    I::IntoIter: Send,
{
    Box::pin(timeout_at(tokio_instant(deadline), async move {
        let mut messages = messages.into_iter().peekable();
        let direct = ws.with(|ws| ws.get_mut().socket().is_some());
        // What tungstenite holds goes first, whole.
        let mut tungstenite_wrote = W::TUNGSTENITE_MAY_HOLD;
        while let Some(message) = messages.peek() {
            if direct && data_frame(message).is_some() {
                if tungstenite_wrote {
                    flush(&mut ws).await?;
                    tungstenite_wrote = false;
                }
                poll_fn(|cx| {
                    ws.with(|ws| {
                        let Some(socket) = ws.get_mut().socket() else {
                            unreachable!("the transport does not change");
                        };
                        while let Some((opcode, payload)) = messages.peek().and_then(data_frame) {
                            ready!(socket.poll_room(cx, MAX_HEADER + payload.len()))?;
                            socket.hold_frame(opcode, payload);
                            messages.next();
                        }
                        Poll::Ready(Ok::<(), std::io::Error>(()))
                    })
                })
                .await?;
            } else if let Some(message) = messages.next() {
                poll_fn(|cx| ws.with(|ws| Pin::new(ws).poll_ready(cx))).await?;
                ws.with(|ws| Pin::new(ws).start_send(message))?;
                tungstenite_wrote = true;
            }
        }
        flush(&mut ws).await
    }))
}

/// The opcode and payload of a text or binary message.
fn data_frame(message: &Message) -> Option<(Opcode, &[u8])> {
    match message {
        Message::Text(text) => Some((Opcode::Text, text.as_bytes())),
        Message::Binary(data) => Some((Opcode::Binary, data)),
        _ => None,
    }
}

/// Flushes what tungstenite and the socket hold.
async fn flush(ws: &mut impl WsAccess) -> Result<(), WsError> {
    poll_fn(|cx| ws.with(|ws| Pin::new(ws).poll_flush(cx))).await
}

/// The one conversion from the crate's clock type to tokio's, for tokio's timers.
#[expect(
    clippy::disallowed_types,
    reason = "the one place the crate meets tokio's Instant"
)]
pub(crate) fn tokio_instant(at: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(at)
}

fn take_closed<A>(pumps: &Pumps<'_, A>) -> Option<Closed> {
    let mut shared = pumps.lock();
    let shared = &mut *shared;
    while let Some(event) = shared.client.poll_event() {
        debug_assert!(
            matches!(event, Event::Closed(_)),
            "timers and writes only ever end connections"
        );
        if let Event::Closed(closed) = event {
            shared.closed = Some(closed);
        }
    }
    shared.closed.take()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio_instant(at)).await,
        None => std::future::pending().await,
    }
}

fn transmit_message(t: Transmit) -> Message {
    match t {
        Transmit::Ping => Message::Ping(Bytes::new()),
        Transmit::Text(text) => Message::Text(text.into()),
        Transmit::Close(close) => close_message(&close),
    }
}

/// A close frame carrying `close`.
pub(crate) fn close_message(close: &Close) -> Message {
    Message::Close(Some(CloseFrame {
        code: close.code().as_u16().into(),
        reason: close.reason().to_owned().into(),
    }))
}

enum ReadEnd {
    Fault(PeerFault),
    Gone { eof: bool },
}

fn classify(e: &WsError) -> ReadEnd {
    use tungstenite::error::ProtocolError;
    match e {
        WsError::Capacity(_) => ReadEnd::Fault(PeerFault::TooBig),
        WsError::Utf8(_) => ReadEnd::Fault(PeerFault::InvalidUtf8),
        WsError::ConnectionClosed | WsError::AlreadyClosed => ReadEnd::Gone { eof: true },
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ReadEnd::Gone { eof: false }
        }
        WsError::Protocol(_) => ReadEnd::Fault(PeerFault::Protocol),
        _ => ReadEnd::Gone { eof: false },
    }
}

/// Half-closes our side and reads until the peer closes too (or `limit` passes), so the
/// close frame is not lost to a TCP reset caused by unread data (RFC 6455 §7.1.1).
///
/// Boxed: it runs once, at the end, and inline its buffer and the socket would count
/// towards the size of the connection's task for the whole of its life.
pub(crate) fn linger(
    mut ws: WsStream,
    limit: Duration,
) -> Pin<Box<impl Future<Output = ()> + Send>> {
    Box::pin(async move {
        let io = ws.get_mut();
        let _ = timeout(limit, async {
            io.shutdown().await?;
            let mut buf = [0u8; 1024];
            while io.read(&mut buf).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    })
}
