//! Prometheus metrics, kept in atomics with fixed label sets: no project or user id ever
//! becomes a label, so the series count is bounded whatever the traffic.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ws_core::CloseCode;

/// Every metric of a server. Shared through the [`SharedHub`](crate::SharedHub).
#[derive(Debug, Default)]
pub struct Metrics {
    handshakes: [AtomicU64; HANDSHAKE_OUTCOMES.len()],
    closes: [[AtomicU64; CLOSE_CODES.len() + 1]; 2],
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    published: AtomicU64,
    slow_consumers: AtomicU64,
    broker_errors: AtomicU64,
    /// Requests a networked broker sent for publishes (a command or a pipeline, answered
    /// together): a Redis batch is one, an embedded broker never counts any.
    publish_round_trips: AtomicU64,
    fanout_latency: Histogram<LATENCY_BUCKETS>,
    broker_latency: Histogram<LATENCY_BUCKETS>,
    queue_depth: Histogram<DEPTH_BUCKETS>,
    /// A gauge kept here rather than measured at scrape time: the memory broker counts its
    /// retained bytes in it on every publish, the Redis broker sets it after every sweep.
    history_bytes: AtomicU64,
    /// The memory broker's streams (projects it keeps an order and history for); a Redis
    /// broker keeps none on the node.
    history_streams: AtomicU64,
    /// The webhook sender's (`[webhooks]`): all zero when webhooks are off.
    webhooks: WebhookMetrics,
}

/// The webhook sender's counters: events delivered, failed requests, dropped events by
/// reason, the backlog, and the delivery latency.
#[derive(Debug, Default)]
struct WebhookMetrics {
    events_sent: AtomicU64,
    requests_failed: AtomicU64,
    /// `backlog`, `expired`.
    dropped: [AtomicU64; 2],
    backlog: AtomicU64,
    latency: Histogram<WEBHOOK_BUCKETS>,
}

/// From an event's arrival at the sender to the receiver's 2xx: seconds normally, minutes
/// while a receiver is down (retries for `webhooks.retry_for`).
const WEBHOOK_BUCKETS: usize = 12;
const WEBHOOK_BOUNDS: [f64; WEBHOOK_BUCKETS] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 600.0,
];

/// The HTTP statuses a handshake may end with; anything else counts as `other`.
const HANDSHAKE_OUTCOMES: [&str; 11] = [
    "101", "400", "401", "403", "404", "405", "426", "429", "500", "503", "other",
];

/// The close codes wshub sends or expects; others are counted as `other`.
const CLOSE_CODES: [u16; 15] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1013, 4001, 4003, 4008, 4000,
];

const LATENCY_BUCKETS: usize = 12;
const LATENCY_BOUNDS: [f64; LATENCY_BUCKETS] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const DEPTH_BUCKETS: usize = 8;
const DEPTH_BOUNDS: [f64; DEPTH_BUCKETS] = [0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0];

/// Who sent a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseSide {
    /// The server sent it (or dropped the connection).
    Server,
    /// The client sent it.
    Client,
}

/// The message counters of [`Metrics`] as they stand, for a JSON view (`/api/admin/stats`)
/// that cannot read the Prometheus text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Messages accepted by the broker (`wshub_published_total`).
    pub published: u64,
    /// Text frames received from clients (`wshub_messages_in_total`).
    pub messages_in: u64,
    /// Frames written to clients (`wshub_messages_out_total`).
    pub messages_out: u64,
}

impl Metrics {
    /// The message counters now.
    pub fn totals(&self) -> Totals {
        Totals {
            published: self.published.load(Relaxed),
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
        }
    }

    /// A handshake on the WebSocket route ended with HTTP `status`.
    pub fn handshake(&self, status: u16) {
        let label = status.to_string();
        let i = HANDSHAKE_OUTCOMES
            .iter()
            .position(|o| *o == label)
            .unwrap_or(HANDSHAKE_OUTCOMES.len() - 1);
        self.handshakes[i].fetch_add(1, Relaxed);
    }

    /// A connection ended with `code`, closed by `side`.
    pub fn close(&self, code: CloseCode, side: CloseSide) {
        let i = CLOSE_CODES
            .iter()
            .position(|c| *c == code.as_u16())
            .unwrap_or(CLOSE_CODES.len());
        self.closes[side as usize][i].fetch_add(1, Relaxed);
    }

    /// A text frame of `bytes` arrived from a client.
    pub fn message_in(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    /// `frames` frames of `bytes` in all were written to a client.
    pub fn messages_out(&self, frames: usize, bytes: usize) {
        self.messages_out.fetch_add(frames as u64, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    /// A publish was accepted by the broker after `took`.
    pub fn published(&self, took: Duration) {
        self.published.fetch_add(1, Relaxed);
        self.broker_latency.observe(took.as_secs_f64());
    }

    /// The broker failed a call.
    pub fn broker_error(&self) {
        self.broker_errors.fetch_add(1, Relaxed);
    }

    /// A networked broker sent one request for publishes (one command, or one pipeline of
    /// them) and waited for its answer: a round trip.
    pub fn publish_round_trip(&self) {
        self.publish_round_trips.fetch_add(1, Relaxed);
    }

    /// A member was judged a slow consumer (4008).
    pub fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Relaxed);
    }

    /// A message reached a client's socket `latency` after the broker accepted it.
    pub fn fanout_latency(&self, latency: Duration) {
        self.fanout_latency.observe(latency.as_secs_f64());
    }

    /// A write pump found `frames` waiting in a send queue.
    pub fn queue_depth(&self, frames: usize) {
        self.queue_depth.observe(frames as f64);
    }

    /// Adds `delta` (negative: subtracts) to the retained history's bytes; returns the
    /// new value.
    pub fn history_bytes_add(&self, delta: i64) -> u64 {
        // Two's complement: adding the wrapped delta is subtracting.
        let delta = delta as u64;
        self.history_bytes
            .fetch_add(delta, Relaxed)
            .wrapping_add(delta)
    }

    /// Sets the retained history's bytes (a broker that measures it elsewhere).
    pub fn set_history_bytes(&self, bytes: u64) {
        self.history_bytes.store(bytes, Relaxed);
    }

    /// A webhook request delivering `events` got a 2xx, `latency` after its oldest event
    /// reached the sender.
    pub fn webhook_delivered(&self, events: usize, latency: Duration) {
        let w = &self.webhooks;
        w.events_sent.fetch_add(events as u64, Relaxed);
        w.latency
            .observe_with(latency.as_secs_f64(), &WEBHOOK_BOUNDS);
    }

    /// A webhook request failed (no answer in time, refused, or not a 2xx).
    pub fn webhook_failed(&self) {
        self.webhooks.requests_failed.fetch_add(1, Relaxed);
    }

    /// `events` webhook events were dropped undelivered: `expired` (retried for
    /// `webhooks.retry_for`) or not (the backlog was full).
    pub fn webhook_dropped(&self, events: usize, expired: bool) {
        self.webhooks.dropped[usize::from(expired)].fetch_add(events as u64, Relaxed);
    }

    /// Webhook events waiting to be sent.
    pub fn set_webhook_backlog(&self, events: usize) {
        self.webhooks.backlog.store(events as u64, Relaxed);
    }

    /// The retained history's bytes.
    pub fn history_bytes(&self) -> u64 {
        self.history_bytes.load(Relaxed)
    }

    /// Adds `delta` streams (negative: freed) to the memory broker's stream count.
    pub fn history_streams_add(&self, delta: i64) {
        self.history_streams.fetch_add(delta as u64, Relaxed);
    }

    /// The memory broker's streams now.
    pub fn history_streams(&self) -> u64 {
        self.history_streams.load(Relaxed)
    }

    /// The text exposition format, with the gauges the caller measured now.
    pub fn encode(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let _ = self.write(&mut out, gauges);
        out
    }

    fn write(&self, out: &mut String, gauges: &Gauges) -> std::fmt::Result {
        writeln!(out, "# HELP wshub_build_info Build information.")?;
        writeln!(out, "# TYPE wshub_build_info gauge")?;
        writeln!(out, "wshub_build_info{{version=\"{}\"}} 1", gauges.version)?;

        writeln!(out, "# HELP wshub_connections Open WebSocket connections.")?;
        writeln!(out, "# TYPE wshub_connections gauge")?;
        writeln!(out, "wshub_connections {}", gauges.connections)?;

        writeln!(
            out,
            "# HELP wshub_projects Projects with members on this node, by member count."
        )?;
        writeln!(out, "# TYPE wshub_projects gauge")?;
        for (bucket, n) in &gauges.projects_by_size {
            writeln!(out, "wshub_projects{{members=\"{bucket}\"}} {n}")?;
        }

        writeln!(
            out,
            "# HELP wshub_history_bytes Bytes of retained history: this node's (memory broker), or the deployment's as of the last sweep (Redis broker)."
        )?;
        writeln!(out, "# TYPE wshub_history_bytes gauge")?;
        writeln!(out, "wshub_history_bytes {}", self.history_bytes())?;

        writeln!(
            out,
            "# HELP wshub_history_streams Projects the memory broker keeps a stream (order, history, keys) for on this node; 0 with the Redis broker."
        )?;
        writeln!(out, "# TYPE wshub_history_streams gauge")?;
        writeln!(out, "wshub_history_streams {}", self.history_streams())?;

        writeln!(
            out,
            "# HELP wshub_handshakes_total WebSocket handshakes by HTTP outcome."
        )?;
        writeln!(out, "# TYPE wshub_handshakes_total counter")?;
        for (outcome, n) in HANDSHAKE_OUTCOMES.iter().zip(&self.handshakes) {
            writeln!(
                out,
                "wshub_handshakes_total{{status=\"{outcome}\"}} {}",
                n.load(Relaxed)
            )?;
        }

        writeln!(
            out,
            "# HELP wshub_closes_total Connection ends by close code and by who closed."
        )?;
        writeln!(out, "# TYPE wshub_closes_total counter")?;
        for (side, row) in ["server", "client"].iter().zip(&self.closes) {
            for (i, n) in row.iter().enumerate() {
                let code = CLOSE_CODES
                    .get(i)
                    .map_or_else(|| "other".to_owned(), u16::to_string);
                writeln!(
                    out,
                    "wshub_closes_total{{code=\"{code}\",by=\"{side}\"}} {}",
                    n.load(Relaxed)
                )?;
            }
        }

        let counters = [
            (
                "wshub_messages_in_total",
                "Text frames received from clients.",
                &self.messages_in,
            ),
            (
                "wshub_bytes_in_total",
                "Bytes of text frames received from clients.",
                &self.bytes_in,
            ),
            (
                "wshub_messages_out_total",
                "Frames written to clients.",
                &self.messages_out,
            ),
            (
                "wshub_bytes_out_total",
                "Bytes of frames written to clients.",
                &self.bytes_out,
            ),
            (
                "wshub_published_total",
                "Messages accepted by the broker.",
                &self.published,
            ),
            (
                "wshub_slow_consumers_total",
                "Connections closed with 4008 (send queue overflow).",
                &self.slow_consumers,
            ),
            (
                "wshub_broker_errors_total",
                "Broker calls that failed.",
                &self.broker_errors,
            ),
            (
                "wshub_broker_publish_round_trips_total",
                "Round trips to a networked broker for publishes (a Redis batch takes one).",
                &self.publish_round_trips,
            ),
        ];
        for (name, help, value) in counters {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} counter")?;
            writeln!(out, "{name} {}", value.load(Relaxed))?;
        }

        self.fanout_latency.write(
            out,
            "wshub_fanout_latency_seconds",
            "From a publish accepted to its frame written to a client's socket.",
            &LATENCY_BOUNDS,
        )?;
        self.broker_latency.write(
            out,
            "wshub_broker_publish_seconds",
            "How long the broker took to accept a publish.",
            &LATENCY_BOUNDS,
        )?;
        self.queue_depth.write(
            out,
            "wshub_send_queue_depth",
            "Frames waiting in a send queue when its writer takes a batch.",
            &DEPTH_BOUNDS,
        )?;
        self.webhooks.write(out)
    }
}

impl WebhookMetrics {
    fn write(&self, out: &mut String) -> std::fmt::Result {
        let counters = [
            (
                "wshub_webhook_events_sent_total",
                "Webhook events a receiver accepted (a retried event counts once per acceptance).",
                &self.events_sent,
            ),
            (
                "wshub_webhook_requests_failed_total",
                "Webhook requests that failed: no answer within webhooks.timeout, refused, or not a 2xx.",
                &self.requests_failed,
            ),
        ];
        for (name, help, value) in counters {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} counter")?;
            writeln!(out, "{name} {}", value.load(Relaxed))?;
        }
        writeln!(
            out,
            "# HELP wshub_webhook_events_dropped_total Webhook events dropped undelivered: the backlog was full (oldest first), or retried for webhooks.retry_for."
        )?;
        writeln!(out, "# TYPE wshub_webhook_events_dropped_total counter")?;
        for (reason, n) in ["backlog", "expired"].iter().zip(&self.dropped) {
            writeln!(
                out,
                "wshub_webhook_events_dropped_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            )?;
        }
        writeln!(
            out,
            "# HELP wshub_webhook_backlog Webhook events waiting to be sent (bounded by webhooks.max_backlog)."
        )?;
        writeln!(out, "# TYPE wshub_webhook_backlog gauge")?;
        writeln!(out, "wshub_webhook_backlog {}", self.backlog.load(Relaxed))?;
        self.latency.write(
            out,
            "wshub_webhook_delivery_seconds",
            "From a webhook event reaching the sender to the receiver's 2xx, per request (its oldest event).",
            &WEBHOOK_BOUNDS,
        )
    }
}

/// Values measured at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// The server's version.
    pub version: &'static str,
    /// Open connections.
    pub connections: usize,
    /// Projects by member-count bucket (`"1"`, `"2-10"`, …).
    pub projects_by_size: Vec<(&'static str, usize)>,
}

/// A histogram with fixed bounds: a count per bucket, the sum in micro-units, the count.
#[derive(Debug)]
struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe_with(&self, value: f64, bounds: &[f64; N]) {
        if let Some(i) = bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add((value * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn write(
        &self,
        out: &mut String,
        name: &str,
        help: &str,
        bounds: &[f64; N],
    ) -> std::fmt::Result {
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "# TYPE {name} histogram")?;
        let mut cumulative = 0;
        for (bound, n) in bounds.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}")?;
        }
        let count = self.count.load(Relaxed);
        writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}")?;
        writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        )?;
        writeln!(out, "{name}_count {count}")
    }
}

impl Histogram<LATENCY_BUCKETS> {
    fn observe(&self, seconds: f64) {
        self.observe_with(seconds, &LATENCY_BOUNDS);
    }
}

impl Histogram<DEPTH_BUCKETS> {
    fn observe(&self, frames: f64) {
        self.observe_with(frames, &DEPTH_BOUNDS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.handshake(101);
        m.handshake(401);
        m.handshake(418);
        m.close(CloseCode::MESSAGE_TOO_BIG, CloseSide::Server);
        m.close(CloseCode::new(4321), CloseSide::Client);
        m.fanout_latency(Duration::from_micros(300));
        m.fanout_latency(Duration::from_millis(30));
        assert_eq!(m.history_bytes_add(100), 100);
        assert_eq!(m.history_bytes_add(-40), 60);
        m.publish_round_trip();
        m.webhook_delivered(3, Duration::from_millis(700));
        m.webhook_dropped(5, false);
        m.webhook_failed();
        let text = m.encode(&Gauges {
            version: "1.2.3",
            connections: 2,
            projects_by_size: vec![("1", 2)],
        });
        for line in [
            "wshub_build_info{version=\"1.2.3\"} 1",
            "wshub_connections 2",
            "wshub_history_bytes 60",
            "wshub_projects{members=\"1\"} 2",
            "wshub_handshakes_total{status=\"101\"} 1",
            "wshub_handshakes_total{status=\"401\"} 1",
            "wshub_handshakes_total{status=\"other\"} 1",
            "wshub_closes_total{code=\"1009\",by=\"server\"} 1",
            "wshub_closes_total{code=\"other\",by=\"client\"} 1",
            "wshub_fanout_latency_seconds_bucket{le=\"0.0005\"} 1",
            "wshub_fanout_latency_seconds_bucket{le=\"0.025\"} 1",
            "wshub_fanout_latency_seconds_bucket{le=\"0.05\"} 2",
            "wshub_fanout_latency_seconds_bucket{le=\"+Inf\"} 2",
            "wshub_fanout_latency_seconds_count 2",
            "wshub_broker_publish_round_trips_total 1",
            "wshub_webhook_events_sent_total 3",
            "wshub_webhook_requests_failed_total 1",
            "wshub_webhook_events_dropped_total{reason=\"backlog\"} 5",
            "wshub_webhook_events_dropped_total{reason=\"expired\"} 0",
            "wshub_webhook_delivery_seconds_bucket{le=\"0.5\"} 0",
            "wshub_webhook_delivery_seconds_bucket{le=\"1\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
