//! An echo application over the same upgrade, core and pumps as the hub: text comes back
//! as text, binary as binary. It exists to hold the WebSocket layer to the Autobahn
//! TestSuite (`cargo xtask conformance`, `examples/echo.rs`); wshub itself never echoes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::socket::{self, PendingUpgrade};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio_util::task::TaskTracker;
use tracing::debug;
use tungstenite::{Message, Utf8Bytes};
use ws_core::Client;
use ws_core::client::{Event, Protocol};

use crate::config::TransportConfig;
use crate::pump;
use crate::tungstenite;
use crate::upgrade::json_error;

/// Turns upgrade requests into echo connections.
///
/// Every message is handed to the core as opaque data ([`Client::handle_data`]), so the
/// core's limits, heartbeat and close handshake apply exactly as for a hub connection;
/// what it accepts is written back unchanged, ahead of nothing but the core's own frames.
/// Cheap to clone; connections are tracked so a caller can wait for them.
#[derive(Debug, Clone)]
pub struct EchoUpgrader {
    config: Arc<TransportConfig>,
    tracker: TaskTracker,
}

impl EchoUpgrader {
    /// An upgrader whose connections use `config`'s limits and timers.
    pub fn new(config: TransportConfig) -> Self {
        Self {
            config: Arc::new(config),
            tracker: TaskTracker::new(),
        }
    }

    /// Answers 101 at once and starts echoing on the socket. The request must have passed
    /// [`Upgrader::check`](crate::Upgrader::check). No subprotocol is answered.
    pub fn upgrade<B>(&self, mut req: Request<B>) -> Response<Full<Bytes>> {
        let (response, websocket) = match socket::upgrade(&mut req, &self.config) {
            Ok(ok) => ok,
            Err(e) => {
                return json_error(StatusCode::BAD_REQUEST, "bad_upgrade", &e.to_string());
            }
        };
        self.tracker.spawn(run(websocket, Arc::clone(&self.config)));
        response
    }

    /// The tracker of running connections: `close()` then `wait()` on shutdown.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }
}

async fn run(upgrade: PendingUpgrade, config: Arc<TransportConfig>) {
    let ws = match upgrade.finish().await {
        Ok(ws) => ws,
        Err(e) => {
            debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let client = Client::new(config.client_for(Protocol::V1), Instant::now());
    let app = EchoApp::default();
    let ended = pump::run(ws, &app, client, config.linger).await;
    let closed = &ended.closed;
    debug!(
        code = closed.code.as_u16(),
        reason = %closed.reason,
        clean = closed.clean,
        "echo connection closed"
    );
    if let Some(ws) = ended.socket {
        pump::linger(ws, config.linger).await;
    }
}

/// The messages accepted and not yet written. The read pump wakes the write pump after
/// every read, so no notification of its own is needed.
///
/// The queue has no bound of its own: a peer that writes without reading grows it until
/// the core's write timeout ends the connection. Fine for a conformance target; the hub's
/// outbox is bounded by the slow-consumer verdict.
#[derive(Debug, Default)]
struct EchoApp {
    queue: Mutex<VecDeque<Message>>,
}

impl EchoApp {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Message>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl pump::Application for EchoApp {
    type Batch = Vec<Message>;
    type Written = ();

    fn on_text(&self, client: &mut Client, now: Instant, text: Utf8Bytes) {
        if client.handle_data(now, text.len()) {
            self.lock().push_back(Message::Text(text));
        }
    }

    fn on_binary(&self, client: &mut Client, now: Instant, data: Bytes) {
        if client.handle_data(now, data.len()) {
            self.lock().push_back(Message::Binary(data));
        }
    }

    async fn on_event(&self, event: Event) {
        debug!(?event, "the echo ignores core events");
    }

    fn take(&self, batch: &mut Vec<Message>) {
        batch.extend(self.lock().drain(..));
    }

    /// Unlike the hub, the batch is kept when the core is no longer open: every message in
    /// it was accepted while open (`handle_data` refuses the rest), so before the core
    /// queued any close frame, and the pump writes the batch ahead of that frame. A peer
    /// that sends a message, then a bad frame, gets its echo, then 1002 (Autobahn 3.2,
    /// 4.1.3, 5.15 and the like). After the peer's own close frame, tungstenite refuses
    /// the write and sends its close reply anyway.
    fn apply(&self, _batch: &mut Vec<Message>, _client: &mut Client, _now: Instant) {}

    fn emit(&self, batch: &mut Vec<Message>, out: &mut Vec<Message>) {
        out.append(batch);
    }

    fn written(&self, (): (), _frames: usize) {}

    fn has_frames(&self) -> bool {
        !self.lock().is_empty()
    }

    async fn ready(&self) {
        std::future::pending().await
    }
}
