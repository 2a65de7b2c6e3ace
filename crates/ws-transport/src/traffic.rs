//! What both hub applications (v1 `connection.rs`, v2 `session.rs`) count and report the
//! same way: frames in and out, the fan-out latency of each write, and the one line and
//! metrics every connection ends with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use ws_core::client::{Closed, Initiator};

use crate::hub::SharedHub;
use crate::metrics::CloseSide;

/// A connection's traffic so far, for its closing log line.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
}

/// What one write carried, for the metrics.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) bytes: usize,
    /// The oldest message of the batch stands for the batch in the latency histogram:
    /// one observation per write, not per frame, keeps the hot path free of contention.
    pub(crate) oldest: Option<Instant>,
}

impl Traffic {
    /// A text frame of `len` bytes arrived.
    pub(crate) fn received(&self, hub: &SharedHub, len: usize) {
        hub.metrics().message_in(len);
        self.messages_in.fetch_add(1, Ordering::Relaxed);
    }

    /// `frames` were written, `written` says what they carried.
    pub(crate) fn wrote(&self, hub: &SharedHub, written: Written, frames: usize) {
        let metrics = hub.metrics();
        metrics.messages_out(frames, written.bytes);
        self.messages_out
            .fetch_add(frames as u64, Ordering::Relaxed);
        if let Some(accepted) = written.oldest {
            metrics.fanout_latency(accepted.elapsed());
        }
    }

    /// The connection ended as `closed` after `duration`; `written_before` frames went out
    /// before the pumps ran (the welcome and a replay). Counts the close and logs the line.
    pub(crate) fn closed(
        &self,
        hub: &SharedHub,
        closed: &Closed,
        duration: Duration,
        written_before: u64,
    ) {
        hub.metrics().close(
            closed.code,
            match closed.initiator {
                Initiator::Local => CloseSide::Server,
                Initiator::Remote => CloseSide::Client,
            },
        );
        log_closed(
            closed,
            duration,
            self.messages_in.load(Ordering::Relaxed),
            self.messages_out.load(Ordering::Relaxed) + written_before,
        );
    }
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
