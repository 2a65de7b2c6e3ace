//! The life of one hub connection: register, presence and recovery, the welcome and the
//! replay, then the pumps (`pump.rs`) until the core says it is closed, then unregister,
//! the close log line and a lingering close.
//!
//! [`HubApp`] is the application the pumps serve here: a client's text goes to the core as
//! an envelope, its publishes go to the broker, pipelined ([`InFlight`]: the read pump goes
//! on reading while they are in flight, up to the core's window), and the write pump's
//! frames come from the outbox the hub delivers into, merged with the replay by offset,
//! then the publishes' answers in order. A presence request waits until the publishes
//! before it are answered, so its answer follows theirs.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::socket::{PendingUpgrade, WsStream};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::time::timeout;
use tracing::{debug, warn};
use tungstenite::{Message, Utf8Bytes};
use ws_core::client::{Event, Protocol};
use ws_core::envelope::{ServerFrame, code};
use ws_core::history::Watermark;
use ws_core::{Client, ClientConfig, Close, CloseCode, ConnId, Operation, Ops, ProjectId, UserId};

use crate::broker::{Broker, Position, Publication, Published, Replay};
use crate::config::TransportConfig;
use crate::hub::{Member, Refused, SharedHub};
use crate::outbox::{Commands, Outbox, Outgoing};
use crate::publish::{BROKER_UNAVAILABLE_MESSAGE, InFlight, publish};
use crate::pump;
use crate::traffic::{Traffic, Written};
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
    /// What the token allows on the project (SPEC §12): `subscribe` got it here;
    /// `publish` and `presence` are checked per request, refused with `forbidden`.
    pub ops: Ops,
}

/// The hub application of one connection: what its pumps do with publishes and where
/// their frames come from (the outbox the hub delivers into).
struct HubApp<'a> {
    conn: ConnId,
    who: &'a Admitted,
    hub: &'a SharedHub,
    broker: &'a dyn Broker,
    config: &'a TransportConfig,
    outbox: &'a Outbox,
    /// The highest offset written: live copies of replayed messages are skipped.
    delivered: Mutex<Watermark>,
    /// Text frames received and frames written, for the end-of-connection log line.
    traffic: Traffic,
    /// The client's publishes in flight, answered in order.
    in_flight: InFlight<'a>,
}

/// The write pump's batch: frames taken from the outbox and the commands taken with them,
/// then the answers of publishes.
#[derive(Default)]
struct HubBatch {
    frames: Vec<Outgoing>,
    commands: Commands,
    /// Publishes answered in this batch, for the core.
    answers: usize,
}

impl pump::Application for HubApp<'_> {
    type Batch = HubBatch;
    type Written = Written;

    fn on_text(&self, client: &mut Client, now: Instant, text: Utf8Bytes) {
        self.traffic.received(self.hub, text.len());
        client.handle_text(now, text.as_str());
        self.in_flight.set_window_full(client.publish_window_full());
    }

    fn on_binary(&self, client: &mut Client, now: Instant, data: Bytes) {
        client.handle_binary(now, data.len());
    }

    fn on_event(&self, event: Event) -> impl Future<Output = ()> + Send {
        // Boxed: inline, the broker round trip's state would sit in every connection's
        // task while it waits for the next frame; a client's publish is worth an allocation.
        // Returned as the box itself, not awaited in an `async fn`, whose state would hold
        // the event a second time next to the box, in the read pump of every connection.
        Box::pin(async move {
            if matches!(event, Event::Publish { .. }) {
                start_publish(self, event);
                self.in_flight.started().await;
                return;
            }
            self.in_flight.drained().await;
            handle_event(self, event).await;
        })
    }

    fn take(&self, batch: &mut HubBatch) {
        batch.commands = self
            .outbox
            .take(&mut batch.frames, self.config.batch_frames);
        if batch.commands.waiting > 0 {
            self.hub.metrics().queue_depth(batch.commands.waiting);
        }
        // Behind the frames taken from the outbox: a message the memory broker delivered
        // while publishing goes out before its ack (unless a backlog longer than a batch
        // holds it; answers never wait for the outbox to empty, which a busy project
        // might never let happen).
        batch.answers = self
            .in_flight
            .take(&mut batch.frames, |frame| Outgoing::answer(frame, false));
    }

    fn apply(&self, batch: &mut HubBatch, client: &mut Client, now: Instant) {
        if batch.frames.iter().any(|o| o.presence_answer) {
            client.handle_presence_sent();
        }
        if batch.answers > 0 {
            for _ in 0..std::mem::take(&mut batch.answers) {
                client.handle_publish_answered();
            }
            self.in_flight.taken(client.publish_window_full());
        }
        batch.commands.apply(&mut batch.frames, client, now);
    }

    fn emit(&self, batch: &mut HubBatch, out: &mut Vec<Message>) -> Written {
        {
            // Live copies of messages the replay already wrote are dropped here.
            let mut delivered = self
                .delivered
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            batch
                .frames
                .retain(|o| o.offset.is_none_or(|offset| delivered.admit(offset)));
        }
        let oldest = batch.frames.iter().find_map(|o| o.accepted);
        let bytes = batch.frames.iter().map(|o| o.frame.len()).sum();
        out.extend(batch.frames.drain(..).map(|o| Message::Text(o.frame)));
        pump::release_burst(&mut batch.frames);
        Written { bytes, oldest }
    }

    fn written(&self, written: Written, frames: usize) {
        self.traffic.wrote(self.hub, written, frames);
    }

    fn has_frames(&self) -> bool {
        self.outbox.has_frames() || self.in_flight.has_answers()
    }

    async fn ready(&self) {
        // The publishes in flight are driven here, while the write pump waits.
        tokio::select! {
            () = self.outbox.ready() => {}
            () = self.in_flight.progress() => {}
        }
    }
}

/// Runs a connection from the finished upgrade to its last byte.
///
/// Not an `async fn`, whose arguments would be copied into its future next to their
/// originals: a task per connection makes every byte of this future count (see
/// `docs/benchmarks.md`, idle memory).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would copy its arguments into its future"
)]
pub(crate) fn run(
    upgrade: PendingUpgrade,
    hub: SharedHub,
    broker: Arc<dyn Broker>,
    config: Arc<TransportConfig>,
    conn: ConnId,
    who: Admitted,
) -> impl Future<Output = ()> + Send {
    async move {
        // The opening is boxed and freed once done: inline, its state (the socket borrowed
        // for the welcome, the replay) would stay in the task for the connection's life.
        let Some(Opened {
            ws,
            opened_at,
            outbox,
            delivered,
            missed,
        }) = Box::pin(open(upgrade, &hub, &*broker, &config, conn, &who)).await
        else {
            return;
        };

        let app = HubApp {
            conn,
            who: &who,
            hub: &hub,
            broker: &*broker,
            config: &config,
            outbox: &outbox,
            delivered: Mutex::new(Watermark::new(delivered)),
            traffic: Traffic::default(),
            in_flight: InFlight::new(),
        };
        let pump::Ended { closed, socket } =
            pump::run(ws, &app, new_client(&config, &who), config.linger).await;
        leave(&hub, conn, &who);
        // The welcome and the replay went out before the pumps.
        app.traffic
            .closed(&hub, &closed, opened_at.elapsed(), 1 + missed);
        // Our close frame went out while the peer may still be sending: give it time to read.
        if let Some(ws) = socket {
            pump::linger(ws, config.linger).await;
        }
    }
}

/// A connection that got through its opening: registered, welcomed, replayed to.
struct Opened {
    ws: WsStream,
    opened_at: Instant,
    outbox: Arc<Outbox>,
    /// The highest offset written so far.
    delivered: u64,
    /// Messages replayed after the welcome.
    missed: u64,
}

/// Completes the upgrade, registers the connection, reads what it missed and writes the
/// welcome and the replay. `None` when the connection ended on the way (refused, broker
/// down, peer gone); it is then unregistered again.
async fn open(
    upgrade: PendingUpgrade,
    hub: &SharedHub,
    broker: &dyn Broker,
    config: &TransportConfig,
    conn: ConnId,
    who: &Admitted,
) -> Option<Opened> {
    let mut ws = match upgrade.finish().await {
        Ok(ws) => ws,
        Err(e) => {
            debug!(error = %e, "upgrade did not complete");
            return None;
        }
    };
    let opened_at = Instant::now();
    // Registered first, so every publish from now on is queued; the replay read next
    // overlaps it, and the watermark removes the overlap.
    let outbox = match join(hub, conn, who, opened_at) {
        Ok(outbox) => outbox,
        Err(Refused(close)) => {
            debug!(%close, "connection refused after the upgrade");
            refuse(ws, &close, config).await;
            return None;
        }
    };
    debug!("connection registered");

    let since = who
        .since
        .as_ref()
        .map(|(offset, epoch)| (*offset, epoch.as_str()));
    let opened = match broker
        .recover(&who.project, Position::from_since(since))
        .await
    {
        Ok(replay) => {
            let missed = replay.missed.len() as u64;
            let welcome = welcome(conn, who, config, &replay);
            write_opening(&mut ws, welcome, replay, &outbox, config)
                .await
                .map(|delivered| (delivered, missed))
        }
        Err(e) => {
            warn!(error = %e, "recovery failed; refusing the connection");
            refuse(
                ws,
                &Close::new(CloseCode::TRY_AGAIN_LATER, "broker unavailable"),
                config,
            )
            .await;
            leave(hub, conn, who);
            return None;
        }
    };
    let Some((delivered, missed)) = opened else {
        debug!("the welcome could not be written");
        leave(hub, conn, who);
        return None;
    };
    Some(Opened {
        ws,
        opened_at,
        outbox,
        delivered,
        missed,
    })
}

/// Writes the welcome and the replay, before the pumps start: nothing can overtake them.
/// Returns the watermark for live delivery (the highest offset written), or `None` when a
/// write failed or stalled.
///
/// Written like live traffic, not as one all-or-nothing write: batches of
/// `batch_frames`, each under its own `write_timeout`, so a slow link that keeps reading
/// gets a long replay whole. Live messages meanwhile wait in the outbox and count towards
/// the slow-consumer limits; when the hub closes the connection (4008 because they
/// overflowed, or a kick), the replay stops there and the pumps send the close.
async fn write_opening(
    ws: &mut WsStream,
    welcome: Utf8Bytes,
    replay: Replay,
    outbox: &Outbox,
    config: &TransportConfig,
) -> Option<u64> {
    let mut delivered = replay.top;
    let mut frames = std::iter::once((None, welcome))
        .chain(replay.missed.into_iter().map(|m| (Some(m.offset), m.frame)))
        .peekable();
    let mut batch = Vec::with_capacity(config.batch_frames);
    loop {
        batch.extend(frames.by_ref().take(config.batch_frames));
        let Some(last) = batch.last().map(|(offset, _)| *offset) else {
            return Some(delivered);
        };
        let deadline = Instant::now() + config.client.write_timeout;
        let messages = batch.drain(..).map(|(_, frame)| Message::Text(frame));
        if !matches!(
            pump::write_all(&mut *ws, messages, deadline).await,
            Ok(Ok(()))
        ) {
            return None;
        }
        if let Some(offset) = last {
            delivered = delivered.max(offset);
        }
        if outbox.close_pending() && frames.peek().is_some() {
            // Live messages after a cut replay would leave a gap: none may pass the
            // watermark now. The client reconnects after the close and recovers from the
            // last message it got.
            debug!(delivered, "replay cut short by a close");
            return Some(u64::MAX);
        }
    }
}

/// Sends a refusal's close frame and lets the peer read it.
///
/// Boxed: rare, and inline its state would count towards the size of every connection's
/// task (see [`pump::linger`]).
pub(crate) fn refuse<'a>(
    mut ws: WsStream,
    close: &'a Close,
    config: &'a TransportConfig,
) -> Pin<Box<impl Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let sent = timeout(
            config.client.write_timeout,
            ws.send(pump::close_message(close)),
        )
        .await;
        if matches!(sent, Ok(Ok(()))) {
            pump::linger(ws, config.linger).await;
        }
    })
}

/// Registers the connection `conn` of `who` in its project (admitted like any connection),
/// and tells the project when it is the user's first; returns its send queue. The one
/// registration of a v1 connection and of an event stream; [`leave`] undoes it.
pub(crate) fn join(
    hub: &SharedHub,
    conn: ConnId,
    who: &Admitted,
    opened_at: Instant,
) -> Result<Arc<Outbox>, Refused> {
    let outbox = Arc::new(Outbox::new(opened_at, who.remote));
    let member = Member {
        outbox: Arc::clone(&outbox),
        conn,
    };
    let registered = hub.register(conn, &who.project, &who.user, member)?;
    if registered.announce_join {
        let frame = presence_frame("join", &who.user);
        hub.deliver(&who.project, None, frame, Some(conn));
    }
    Ok(outbox)
}

/// Unregisters, and tells the project when the user's last connection left.
pub(crate) fn leave(hub: &SharedHub, conn: ConnId, who: &Admitted) {
    let Some(gone) = hub.unregister(conn, &who.project) else {
        return;
    };
    if gone.announce_leave {
        hub.deliver(&who.project, None, presence_frame("leave", &who.user), None);
    }
}

pub(crate) fn presence_frame(event: &str, user: &UserId) -> Utf8Bytes {
    ServerFrame::Presence {
        event,
        user: Some(user.as_str()),
        users: None,
    }
    .to_json()
    .into()
}

fn new_client(config: &TransportConfig, who: &Admitted) -> Client {
    new_client_until(config.client_for(Protocol::V1), who.expires_at)
}

/// A core for a connection whose token expires at `expires_at`.
pub(crate) fn new_client_until(
    config: Arc<ClientConfig>,
    expires_at: Option<SystemTime>,
) -> Client {
    let now = Instant::now();
    let mut client = Client::new(config, now);
    if let Some(at) = deadline(now, expires_at) {
        client.set_expiry(at);
    }
    client
}

/// The monotonic deadline of a token that expires at `expires_at`, if it has one the clock
/// can hold.
pub(crate) fn deadline(now: Instant, expires_at: Option<SystemTime>) -> Option<Instant> {
    let left = expires_at?
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    // `expires_at` may be centuries away (a token's `exp` is any u64), and `Instant + Duration`
    // panics past the monotonic clock's range: a deadline that far off is no deadline.
    now.checked_add(left)
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

/// Core → application: a client's publish goes to its project through the broker,
/// pipelined; its answer (an `ack`, or the `error` of a refusal) is queued in order in
/// [`HubApp::in_flight`], never in the outbox.
fn start_publish<'a>(app: &HubApp<'a>, event: Event) {
    let Event::Publish {
        id,
        data,
        key,
        ephemeral,
        echo,
    } = event
    else {
        return;
    };
    if !app.who.ops.contains(Operation::Publish) {
        let frame = ServerFrame::error(
            code::FORBIDDEN,
            "the token does not grant this operation on this project",
        );
        return app.in_flight.answer(frame.to_json().into());
    }
    if !app
        .config
        .namespaces
        .policy(&app.who.project)
        .allow_client_publish
    {
        let frame = ServerFrame::error(
            code::PUBLISH_NOT_ALLOWED,
            "this project's namespace does not accept publishes from clients",
        );
        return app.in_flight.answer(frame.to_json().into());
    }
    let mut publication = Publication::new(app.who.user.as_str().to_owned(), data);
    publication.key = key;
    publication.ephemeral = ephemeral;
    publication.except = (!echo).then_some(app.conn);
    let (hub, broker, project): (&'a SharedHub, &'a dyn Broker, &'a ProjectId) =
        (app.hub, app.broker, &app.who.project);
    app.in_flight.start(async move {
        let answer = match publish(hub, broker, project, publication).await {
            Ok(Published { offset, duplicate }) => ServerFrame::Ack {
                id: id.as_deref(),
                offset,
                duplicate,
            }
            .to_json(),
            Err(_) => broker_unavailable(),
        };
        answer.into()
    });
}

/// Core → application: a presence request (publishes are [`start_publish`]'s).
async fn handle_event(app: &HubApp<'_>, event: Event) {
    match event {
        Event::PresenceRequest if !app.who.ops.contains(Operation::Presence) => {
            let frame = ServerFrame::error(
                code::FORBIDDEN,
                "the token does not grant this operation on this project",
            );
            app.answer(frame.to_json(), true);
        }
        Event::PresenceRequest => {
            // Cluster-wide with a distributed broker; this node's members otherwise.
            let local = app.hub.presence(&app.who.project);
            let frame = match app.broker.presence(&app.who.project, local).await {
                Ok(users) => {
                    let users: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
                    ServerFrame::Presence {
                        event: "sync",
                        user: None,
                        users: Some(users),
                    }
                    .to_json()
                }
                Err(e) => {
                    debug!(error = %e, "presence request failed");
                    broker_unavailable()
                }
            };
            app.answer(frame, true);
        }
        _ => {}
    }
}

/// The `error` frame for a failed broker call (the cause is logged where it failed).
fn broker_unavailable() -> String {
    ServerFrame::error(code::BROKER_UNAVAILABLE, BROKER_UNAVAILABLE_MESSAGE).to_json()
}

impl HubApp<'_> {
    /// Queues a frame for this connection alone. It counts towards the slow-consumer
    /// limits like a broadcast: a client that asks and never reads is closed with 4008.
    fn answer(&self, frame: String, presence_answer: bool) {
        let depth = self
            .outbox
            .push(Outgoing::answer(frame.into(), presence_answer));
        self.hub.judge(self.conn, &self.who.project, depth);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Parts, connection_parts, size_of_future};

    /// Every idle connection is one task holding this future, the largest part of its
    /// memory (`idle-10k` in `docs/benchmarks.md`). The bound fails when a change makes it
    /// grow, so that growth is a decision, not an accident.
    #[tokio::test]
    async fn a_connection_future_stays_small() {
        let Parts {
            hub,
            broker,
            config,
            pending,
        } = connection_parts();
        let who = Admitted {
            user: UserId::new("u"),
            project: ProjectId::parse("p").unwrap(),
            expires_at: None,
            since: None,
            remote: None,
            ops: Ops::ALL,
        };
        let future = run(pending, hub, broker, config, ConnId(1), who);
        let size = size_of_future(&future);
        // 1 616 bytes when the bound was first set: the task (with tokio's header and
        // trailer, the `Instrumented` span and the tracker's token) in jemalloc's 1 792-byte
        // class; at 1 656 it is in the 2 048-byte one (idle-10k: 4.0 KiB per connection
        // against 3.7). The pipelined publishes' queue once took it to 1 800; it is back to
        // 1 616 with that queue on the heap from the first publish, the core's configuration
        // one `Arc` for all connections, and the hub's close and drain commands boxed. 1 528
        // since the pumps lock a boxed WebSocket instead of holding `split()`'s halves.
        assert!(size <= 1_528, "the connection future grew to {size} bytes");
    }
}
