//! The life of one upgraded connection: register, then a read pump and a write pump own
//! the socket until the core says it is closed, then a lingering close and unregister.
//!
//! Both pumps are futures of one task and share the connection's [`Client`] core behind an
//! uncontended lock (they never run at the same time). The read pump moves frames from the
//! socket into the core and publishes what the client sends; the write pump writes hub
//! frames and the core's transmits, fires the core's timers and ends the connection.
//! See `docs/architecture.md` for why one task and not two.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper_tungstenite::{HyperWebsocket, HyperWebsocketStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::timeout_at;
use tracing::{debug, warn};
use tungstenite::Utf8Bytes;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Error as WsError, Message};
use ws_core::client::{Closed, Event, Initiator, PeerFault, Transmit};
use ws_core::envelope::ServerFrame;
use ws_core::history::Watermark;
use ws_core::{Client, Close, CloseCode, ConnId, ProjectId, UserId};

use crate::broker::{Broker, Publication, Replay};
use crate::config::TransportConfig;
use crate::hub::{Member, Refused, SharedHub};
use crate::metrics::CloseSide;
use crate::outbox::Outbox;
use crate::tungstenite;

/// Who the connection belongs to, decided before the upgrade.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The user id (the token's `sub`).
    pub user: UserId,
    /// The project the connection joins.
    pub project: ProjectId,
    /// When the token stops being valid (expiry plus leeway); the connection closes with
    /// 4001 then. `None` when expiry is not enforced on open connections.
    pub expires_at: Option<SystemTime>,
    /// The last offset the client saw and its epoch (`since` and `epoch` in the query):
    /// what it missed is replayed after the welcome.
    pub since: Option<(u64, String)>,
    /// The peer's address, for operators.
    pub remote: Option<SocketAddr>,
}

type Sink = SplitSink<HyperWebsocketStream, Message>;
type Stream = SplitStream<HyperWebsocketStream>;

/// The state both pumps share.
struct Shared {
    client: Client,
    /// How the connection ended, once the core said so.
    closed: Option<Closed>,
}

impl Shared {
    /// Drains the core's events: `Closed` is kept here for the write pump, the rest
    /// goes to `out` for the application.
    fn drain_events(&mut self, out: &mut Vec<Event>) {
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::Closed(closed) => self.closed = Some(closed),
                other => out.push(other),
            }
        }
    }
}

struct Ctx<'a> {
    who: &'a Admitted,
    hub: &'a SharedHub,
    broker: &'a dyn Broker,
    config: &'a TransportConfig,
    outbox: &'a Outbox,
    shared: Mutex<Shared>,
    /// The read pump tells the write pump that the core has something for it.
    wake_writer: Notify,
    /// The highest offset written: live copies of replayed messages are skipped.
    delivered: Mutex<Watermark>,
    /// Text frames received and frames written, for the end-of-connection log line.
    messages_in: AtomicU64,
    messages_out: AtomicU64,
}

impl Ctx<'_> {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs a connection from the finished upgrade to its last byte.
pub(crate) async fn run(
    upgrade: HyperWebsocket,
    hub: SharedHub,
    broker: Arc<dyn Broker>,
    config: Arc<TransportConfig>,
    conn: ConnId,
    who: Admitted,
) {
    let mut ws = match upgrade.await {
        Ok(ws) => ws,
        Err(e) => {
            debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let opened_at = Instant::now();
    let outbox = Arc::new(Outbox::default());
    let member = Member {
        outbox: Arc::clone(&outbox),
        connected_at: opened_at,
        remote: who.remote,
    };
    // Registered first, so every publish from now on is queued; the replay read next
    // overlaps it, and the watermark removes the overlap.
    let registered = match hub.register(conn, &who.project, &who.user, member) {
        Ok(registered) => registered,
        Err(Refused(close)) => {
            debug!(%close, "connection refused after the upgrade");
            refuse(ws, &close, &config).await;
            return;
        }
    };
    debug!("connection registered");
    if registered.joined
        && config.presence_events
        && registered.members <= config.presence_max_members
    {
        let frame = presence_frame("join", &who.user);
        hub.deliver(&who.project, None, frame, Some(conn));
    }

    let since = who
        .since
        .as_ref()
        .map(|(offset, epoch)| (*offset, epoch.as_str()));
    let opened = match broker.recover(&who.project, since).await {
        Ok(replay) => {
            let delivered = replay
                .missed
                .last()
                .map_or(replay.top, |m| m.offset.max(replay.top));
            let missed = replay.missed.len() as u64;
            let first = std::iter::once(welcome(conn, &who, &config, &replay))
                .chain(replay.missed.into_iter().map(|m| m.frame))
                .map(Message::Text);
            let deadline = tokio::time::Instant::now() + config.client.write_timeout;
            match write_all(&mut ws, first, deadline).await {
                Ok(Ok(())) => Some((delivered, missed)),
                _ => None,
            }
        }
        Err(e) => {
            warn!(error = %e, "recovery failed; refusing the connection");
            refuse(
                ws,
                &Close::new(CloseCode::TRY_AGAIN_LATER, "broker unavailable"),
                &config,
            )
            .await;
            leave(&hub, conn, &who, &config);
            return;
        }
    };
    let Some((delivered, missed)) = opened else {
        debug!("the welcome could not be written");
        leave(&hub, conn, &who, &config);
        return;
    };

    let ctx = Ctx {
        who: &who,
        hub: &hub,
        broker: &*broker,
        config: &config,
        outbox: &outbox,
        shared: Mutex::new(Shared {
            client: new_client(&config, &who),
            closed: None,
        }),
        wake_writer: Notify::new(),
        delivered: Mutex::new(Watermark::new(delivered)),
        messages_in: AtomicU64::new(0),
        messages_out: AtomicU64::new(0),
    };
    let (mut sink, mut stream) = ws.split();
    let closed = tokio::select! {
        biased;
        closed = write_pump(&mut sink, &ctx) => closed,
        () = read_pump(&mut stream, &ctx) => unreachable!("the read pump never returns"),
    };
    leave(&hub, conn, &who, &config);
    hub.metrics().close(
        closed.code,
        match closed.initiator {
            Initiator::Local => CloseSide::Server,
            Initiator::Remote => CloseSide::Client,
        },
    );
    log_closed(
        &closed,
        opened_at.elapsed(),
        ctx.messages_in.load(Ordering::Relaxed),
        ctx.messages_out.load(Ordering::Relaxed) + 1 + missed,
    );
    // A close frame went out: give the peer time to read it before the socket goes.
    if closed.clean
        && let Ok(ws) = stream.reunite(sink)
    {
        linger(ws, config.linger).await;
    }
}

/// Sends a refusal's close frame and lets the peer read it.
async fn refuse(mut ws: HyperWebsocketStream, close: &Close, config: &TransportConfig) {
    let deadline = tokio::time::Instant::now() + config.client.write_timeout;
    let sent = timeout_at(deadline, ws.send(close_message(close))).await;
    if matches!(sent, Ok(Ok(()))) {
        linger(ws, config.linger).await;
    }
}

/// Unregisters, and tells the project when the user's last connection left.
fn leave(hub: &SharedHub, conn: ConnId, who: &Admitted, config: &TransportConfig) {
    let Some(gone) = hub.unregister(conn, &who.project) else {
        return;
    };
    if gone.left
        && config.presence_events
        && hub.member_count(&who.project) < config.presence_max_members
    {
        hub.deliver(&who.project, None, presence_frame("leave", &who.user), None);
    }
}

fn presence_frame(event: &str, user: &UserId) -> Utf8Bytes {
    ServerFrame::Presence {
        event,
        user: Some(user.as_str()),
        users: None,
    }
    .to_json()
    .into()
}

fn new_client(config: &TransportConfig, who: &Admitted) -> Client {
    let now = Instant::now();
    let mut client = Client::new(config.client.clone(), now);
    if let Some(expires_at) = who.expires_at {
        let left = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        client.set_expiry(now + left);
    }
    client
}

fn welcome(conn: ConnId, who: &Admitted, config: &TransportConfig, replay: &Replay) -> Utf8Bytes {
    ServerFrame::Welcome {
        conn: conn.0,
        user: who.user.as_str(),
        project: who.project.as_str(),
        epoch: &replay.epoch,
        offset: replay.top,
        recovered: replay.recovered,
        missed: replay.missed.len() as u64,
        ping_interval_ms: config.client.ping_interval.as_millis() as u64,
    }
    .to_json()
    .into()
}

/// Socket → core. Never returns: once the socket is done it parks, and the write pump
/// ends the connection.
async fn read_pump(stream: &mut Stream, ctx: &Ctx<'_>) {
    loop {
        let item = stream.next().await;
        let now = Instant::now();
        let mut events = Vec::new();
        let done = {
            let mut shared = ctx.lock();
            let client = &mut shared.client;
            let done = match item {
                Some(Ok(Message::Text(text))) => {
                    ctx.hub.metrics().message_in(text.len());
                    ctx.messages_in.fetch_add(1, Ordering::Relaxed);
                    client.handle_text(now, text.as_str());
                    false
                }
                Some(Ok(Message::Binary(data))) => {
                    client.handle_binary(now, data.len());
                    false
                }
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
            shared.drain_events(&mut events);
            done
        };
        for event in events {
            handle_event(ctx, event).await;
        }
        ctx.wake_writer.notify_one();
        if done {
            return std::future::pending().await;
        }
    }
}

/// Core → application: a client's publish goes to its project through the broker.
async fn handle_event(ctx: &Ctx<'_>, event: Event) {
    match event {
        Event::Publish { id, data } => {
            let publication = Publication {
                from: ctx.who.user.as_str().to_owned(),
                data,
                ts: unix_millis(),
            };
            let started = Instant::now();
            let answer = match ctx.broker.publish(&ctx.who.project, publication).await {
                Ok(offset) => {
                    ctx.hub.metrics().published(started.elapsed());
                    ServerFrame::Ack {
                        id: id.as_deref(),
                        offset,
                    }
                    .to_json()
                }
                Err(e) => {
                    ctx.hub.metrics().broker_error();
                    let message = e.to_string();
                    ServerFrame::Error {
                        code: "broker_unavailable",
                        message: &message,
                    }
                    .to_json()
                }
            };
            ctx.outbox.push(None, None, answer.into());
        }
        Event::PresenceRequest => {
            // Cluster-wide with a distributed broker; this node's members otherwise.
            let local = ctx.hub.presence(&ctx.who.project);
            let frame = match ctx.broker.presence(&ctx.who.project, local).await {
                Ok(users) => {
                    let users: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
                    ServerFrame::Presence {
                        event: "sync",
                        user: None,
                        users: Some(users),
                    }
                    .to_json()
                }
                Err(e) => ServerFrame::Error {
                    code: "broker_unavailable",
                    message: &e.to_string(),
                }
                .to_json(),
            };
            ctx.outbox.push(None, None, frame.into());
        }
        _ => {}
    }
}

/// Hub and core → socket, and the timers. Returns how the connection ended.
async fn write_pump(sink: &mut Sink, ctx: &Ctx<'_>) -> Closed {
    let mut batch = Vec::new();
    let mut transmits = Vec::new();
    loop {
        let now = Instant::now();
        let commands = ctx.outbox.take(&mut batch, ctx.config.batch_frames);
        if commands.waiting > 0 {
            ctx.hub.metrics().queue_depth(commands.waiting);
        }
        {
            let mut shared = ctx.lock();
            let client = &mut shared.client;
            // Frames taken before a close command still go out ahead of its close frame,
            // but only while the connection is open.
            if !client.is_open() {
                batch.clear();
            }
            if let Some(close) = commands.close {
                // Frames behind a slow-consumer verdict are dropped: the client recovers them.
                if close.code() == CloseCode::SLOW_CONSUMER {
                    batch.clear();
                }
                client.close(now, close);
            }
            if let Some(at) = commands.drain_at {
                client.handle_drain(now, at);
            }
            while let Some(t) = client.poll_transmit() {
                transmits.push(t);
            }
        }

        {
            // Live copies of messages the replay already wrote are dropped here.
            let mut delivered = ctx.delivered.lock().unwrap_or_else(PoisonError::into_inner);
            batch.retain(|o| o.offset.is_none_or(|offset| delivered.admit(offset)));
        }
        // The oldest message of the batch stands for the batch in the latency histogram:
        // one observation per write, not per frame, keeps the hot path free of contention.
        let oldest = batch.iter().find_map(|o| o.accepted);
        let frames = batch.len() + transmits.len();
        let bytes: usize = batch.iter().map(|o| o.frame.len()).sum();
        let mut messages = batch
            .drain(..)
            .map(|o| Message::Text(o.frame))
            .chain(transmits.drain(..).map(transmit_message))
            .peekable();
        if messages.peek().is_some() {
            let deadline = tokio::time::Instant::from_std(ctx.lock().client.write_deadline(now));
            match write_all(sink, messages, deadline).await {
                Ok(Ok(())) => {
                    let metrics = ctx.hub.metrics();
                    metrics.messages_out(frames, bytes);
                    ctx.messages_out.fetch_add(frames as u64, Ordering::Relaxed);
                    if let Some(accepted) = oldest {
                        metrics.fanout_latency(accepted.elapsed());
                    }
                }
                Ok(Err(e)) => {
                    let mut shared = ctx.lock();
                    match classify(&e) {
                        ReadEnd::Fault(_) | ReadEnd::Gone { eof: false } => {
                            shared
                                .client
                                .handle_disconnect(Instant::now(), false, &e.to_string());
                        }
                        ReadEnd::Gone { eof: true } => shared.client.handle_disconnect(
                            Instant::now(),
                            true,
                            "connection closed",
                        ),
                    }
                }
                Err(_elapsed) => ctx.lock().client.handle_write_timeout(Instant::now()),
            }
        }

        if let Some(closed) = take_closed(ctx) {
            // The peer's close frame may have been answered by the WebSocket layer: send it.
            let deadline = tokio::time::Instant::now() + ctx.config.linger;
            let _ = timeout_at(deadline, sink.flush()).await;
            return closed;
        }
        if ctx.outbox.has_frames() {
            continue;
        }
        let timer = ctx.lock().client.poll_timeout();
        tokio::select! {
            () = ctx.outbox.ready() => {}
            () = ctx.wake_writer.notified() => {}
            () = sleep_until(timer) => ctx.lock().client.handle_timeout(Instant::now()),
        }
    }
}

/// Writes `messages` and flushes them, all before `deadline`.
async fn write_all<S>(
    sink: &mut S,
    messages: impl IntoIterator<Item = Message>,
    deadline: tokio::time::Instant,
) -> Result<Result<(), WsError>, tokio::time::error::Elapsed>
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    timeout_at(deadline, async {
        for message in messages {
            sink.feed(message).await?;
        }
        sink.flush().await
    })
    .await
}

fn take_closed(ctx: &Ctx<'_>) -> Option<Closed> {
    let mut shared = ctx.lock();
    let mut events = Vec::new();
    shared.drain_events(&mut events);
    debug_assert!(
        events.is_empty(),
        "timers and writes only ever end connections"
    );
    shared.closed.take()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn transmit_message(t: Transmit) -> Message {
    match t {
        Transmit::Ping => Message::Ping(Default::default()),
        Transmit::Text(text) => Message::Text(text.into()),
        Transmit::Close(close) => close_message(&close),
    }
}

fn close_message(close: &Close) -> Message {
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
async fn linger(mut ws: HyperWebsocketStream, limit: Duration) {
    let io = ws.get_mut();
    let deadline = tokio::time::Instant::now() + limit;
    let _ = timeout_at(deadline, async {
        io.shutdown().await?;
        let mut buf = [0u8; 1024];
        while io.read(&mut buf).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// The one line every connection ends with.
fn log_closed(closed: &Closed, duration: Duration, messages_in: u64, messages_out: u64) {
    let who = match closed.initiator {
        Initiator::Local => "server",
        Initiator::Remote => "client",
    };
    let duration_ms = duration.as_millis() as u64;
    if closed.is_normal() {
        debug!(
            code = closed.code.as_u16(),
            reason = %closed.reason,
            by = who,
            duration_ms,
            messages_in,
            messages_out,
            "connection closed"
        );
    } else {
        warn!(
            code = closed.code.as_u16(),
            reason = %closed.reason,
            by = who,
            clean = closed.clean,
            duration_ms,
            messages_in,
            messages_out,
            "connection closed abnormally"
        );
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
