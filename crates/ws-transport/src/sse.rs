//! The life of one server-sent event stream (SPEC §14): a hub member like a v1 connection,
//! written to through an HTTP body instead of a WebSocket.
//!
//! The same discipline as `connection.rs`: registered in the hub first (so fan-out,
//! presence, per-user limits, kicks, the drain and the slow-consumer verdict apply
//! unchanged), then recovered from the broker, then the opening (`event: welcome`, or
//! `event: reset` for a lost recovery) and the replay, then live frames through a
//! [`Watermark`]: no gap, no duplicate. The timers (heartbeat, expiry, drain) are
//! `ws_core::sse::Stream`'s; this file only writes what it decides.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout};
use tracing::{debug, warn};
use ws_core::envelope::ServerFrame;
use ws_core::history::Watermark;
use ws_core::sse::{self, EventId, Output, Stream};
use ws_core::{Close, CloseCode, ConnId};

use crate::broker::{Broker, Position, Replay};
use crate::config::TransportConfig;
use crate::connection::{Admitted, deadline, join, leave};
use crate::hub::{Refused, SharedHub};
use crate::outbox::{Outbox, Outgoing};
use crate::pump::{release_burst, tokio_instant};

/// Chunks waiting between the stream's task and hyper: little, so a reader that stops
/// reading holds the task up soon, and its backlog is counted in the outbox, where the
/// slow-consumer verdict sees it.
pub(crate) const CHANNEL_CHUNKS: usize = 2;

/// Runs a stream from its `200` to its last event; it ends when the client goes away, when
/// a write is stuck past `write_timeout`, or after an `event: close`.
pub(crate) async fn run(
    tx: mpsc::Sender<Bytes>,
    hub: SharedHub,
    broker: Arc<dyn Broker>,
    config: Arc<TransportConfig>,
    conn: ConnId,
    who: Admitted,
) {
    let writer = Writer {
        tx,
        config: &config,
    };
    let now = Instant::now();
    let outbox = match join(&hub, conn, &who, now) {
        Ok(outbox) => outbox,
        Err(Refused(close)) => {
            debug!(%close, "event stream refused");
            let _ = writer.close(&close).await;
            return;
        }
    };
    let since = who.since.as_ref().map(|(o, e)| (*o, e.as_str()));
    match broker
        .recover(&who.project, Position::from_since(since))
        .await
    {
        Ok(replay) => {
            let mut stream = Stream::new(config.client.ping_interval, Instant::now());
            if let Some(at) = deadline(Instant::now(), who.expires_at) {
                stream.set_expiry(at);
            }
            let live = Live {
                writer: &writer,
                outbox: &outbox,
                epoch: replay.epoch.clone(),
                stream,
            };
            live.run(conn, &who, replay, &config).await;
        }
        Err(e) => {
            warn!(error = %e, "recovery failed; ending the event stream");
            let close = Close::new(CloseCode::TRY_AGAIN_LATER, "broker unavailable");
            let _ = writer.close(&close).await;
        }
    }
    leave(&hub, conn, &who);
}

/// The sending side of the body.
struct Writer<'a> {
    tx: mpsc::Sender<Bytes>,
    config: &'a TransportConfig,
}

impl Writer<'_> {
    /// Hands `text` to the body within `write_timeout`; false when the client is gone or
    /// does not read.
    async fn write(&self, text: String) -> bool {
        let sent = timeout(
            self.config.client.write_timeout,
            self.tx.send(Bytes::from(text)),
        )
        .await;
        matches!(sent, Ok(Ok(())))
    }

    async fn close(&self, close: &Close) -> bool {
        let mut text = String::new();
        sse::close_event(&mut text, close);
        self.write(text).await && self.taken().await
    }

    /// Waits (within `write_timeout`) until the body took every chunk handed to it. The
    /// stream's task ends after its last one, and shutdown stops waiting for the HTTP
    /// connection soon after the tasks ended: without this, a drained stream's `event:
    /// close` could still sit in the channel when the process exits.
    async fn taken(&self) -> bool {
        let all = self.tx.max_capacity();
        let taken = timeout(self.config.client.write_timeout, self.tx.reserve_many(all)).await;
        matches!(taken, Ok(Ok(_)))
    }
}

struct Live<'a> {
    writer: &'a Writer<'a>,
    outbox: &'a Outbox,
    /// The epoch the ids of live messages name: the stream's when it was read.
    epoch: String,
    stream: Stream,
}

impl Live<'_> {
    async fn run(mut self, conn: ConnId, who: &Admitted, replay: Replay, config: &TransportConfig) {
        let Some(delivered) = self.open(conn, who, replay, config).await else {
            debug!("the opening of the event stream could not be written");
            return;
        };
        let mut delivered = Watermark::new(delivered);
        let mut frames = Vec::new();
        let mut text = String::new();
        loop {
            if !self.outbox.has_frames() {
                let wake = self.stream.poll_timeout().map(tokio_instant);
                tokio::select! {
                    () = self.outbox.ready() => {}
                    () = async {
                        match wake {
                            Some(at) => sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => {}
                    () = self.writer.tx.closed() => {
                        debug!("event stream client gone");
                        return;
                    }
                }
            }
            let now = Instant::now();
            let commands = self.outbox.take(&mut frames, config.batch_frames);
            if let Some(ending) = commands.ending {
                if let Some(close) = ending.close {
                    if close.discards_queued() {
                        frames.clear();
                    }
                    self.stream.close(close);
                }
                if let Some(at) = ending.drain_at {
                    self.stream.handle_drain(now, at);
                }
            }
            self.stream.handle_timeout(now);
            for outgoing in frames.drain(..) {
                self.render(&mut text, &mut delivered, outgoing);
            }
            release_burst(&mut frames);
            let mut closed = false;
            while let Some(output) = self.stream.poll_output() {
                match output {
                    Output::Heartbeat => text.push_str(sse::HEARTBEAT),
                    Output::Close(close) => {
                        debug!(%close, "event stream closing");
                        sse::close_event(&mut text, &close);
                        closed = true;
                    }
                }
            }
            if !text.is_empty() {
                if !self.writer.write(std::mem::take(&mut text)).await {
                    debug!("event stream write failed or stuck; ending it");
                    return;
                }
                self.stream.handle_written(Instant::now());
            }
            if closed {
                self.writer.taken().await;
                return;
            }
        }
    }

    /// Writes the opening and the replay; returns the watermark for live delivery, or
    /// `None` when a write failed. A close arriving meanwhile cuts the replay: nothing live
    /// may pass then (a gap), the loop writes the close.
    async fn open(
        &mut self,
        conn: ConnId,
        who: &Admitted,
        replay: Replay,
        config: &TransportConfig,
    ) -> Option<u64> {
        let mut text = String::new();
        if who.since.is_some() && !replay.recovered {
            sse::reset_event(&mut text, &replay.epoch, replay.top);
        } else {
            // A fresh stream's id is the present, so a reconnect before any message recovers
            // from it; a recovery keeps the client's own id.
            let id = who.since.is_none().then(|| EventId {
                epoch: replay.epoch.clone(),
                offset: replay.top,
            });
            let welcome = ServerFrame::Welcome {
                conn: conn.0,
                user: who.user.as_str(),
                project: who.project.as_str(),
                epoch: &replay.epoch,
                offset: replay.top,
                recovered: replay.recovered,
                missed: replay.missed.len() as u64,
                ping_interval_ms: config.client.ping_interval.as_millis() as u64,
            }
            .to_json();
            sse::write_event(&mut text, id.as_ref(), "welcome", &welcome);
        }
        let mut delivered = replay.top;
        let mut missed = replay.missed.into_iter().peekable();
        loop {
            for message in missed.by_ref().take(config.batch_frames) {
                let id = EventId {
                    epoch: self.epoch.clone(),
                    offset: message.offset,
                };
                sse::write_event(&mut text, Some(&id), "message", message.frame.as_str());
                delivered = delivered.max(message.offset);
            }
            if !self.writer.write(std::mem::take(&mut text)).await {
                return None;
            }
            self.stream.handle_written(Instant::now());
            if missed.peek().is_none() {
                return Some(delivered);
            }
            if self.outbox.close_pending() {
                debug!(delivered, "replay cut short by a close");
                return Some(u64::MAX);
            }
        }
    }

    /// Appends the event of one queued frame: a message with its id (once: the watermark
    /// drops live copies of replayed ones), an ephemeral message without one, anything else
    /// (presence join and leave) as `event: presence`.
    fn render(&self, text: &mut String, delivered: &mut Watermark, outgoing: Outgoing) {
        match outgoing.offset {
            Some(offset) if delivered.admit(offset) => {
                let id = EventId {
                    epoch: self.epoch.clone(),
                    offset,
                };
                sse::write_event(text, Some(&id), "message", outgoing.frame.as_str());
            }
            Some(_) => {}
            // An ephemeral message has no offset, so no id: it cannot be recovered.
            None if outgoing.frame.starts_with(r#"{"type":"message""#) => {
                sse::write_event(text, None, "message", outgoing.frame.as_str());
            }
            None => sse::write_event(text, None, "presence", outgoing.frame.as_str()),
        }
    }
}
