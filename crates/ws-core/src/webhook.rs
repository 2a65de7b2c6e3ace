//! Webhooks (SPEC §14): the events a deployment reports to the operator's backend, and
//! [`Webhooks`], the machine that batches them, retries failed deliveries with backoff and
//! keeps the backlog bounded.
//!
//! ```text
//!   event ──► handle_event(now, e) ──► backlog (≤ max_backlog; the oldest dropped first)
//!                                           │ ≥ max_batch queued, or the oldest waited `linger`
//!                                           ▼
//!   poll_transmit(now) ──► Batch { id, body } ──► the sender POSTs it
//!   handle_delivered(now, id) ◄── 2xx          handle_failed(now, id) ◄── error, timeout, non-2xx
//!        report Delivered                           events older than `retry_for` dropped,
//!                                                   the rest retried after backoff + jitter
//! ```
//!
//! One batch is in flight at a time: a receiver sees the events in the order they happened,
//! and a dead receiver costs one request per backoff, not one per batch. The batch being
//! retried keeps its events (and their ids), so a receiver that took a batch but failed to
//! answer gets the same ids again and can deduplicate; nothing is lost while its events are
//! younger than `retry_for`. What waits behind it is the backlog, bounded by
//! `max_backlog`: the oldest events go first, each reported, so memory never grows with a
//! receiver's outage.
//!
//! # Driving it
//!
//! After every `handle_*` call, drain [`Webhooks::poll_transmit`] (at most one batch leaves
//! at a time) and [`Webhooks::poll_report`] (for metrics and logs), then sleep until
//! [`Webhooks::poll_timeout`]; instants passed in must never go backwards. Jitter comes from
//! a seeded generator, so a test replays the same schedule.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ws_core::webhook::{EventName, WebhookConfig, WebhookEvent, Webhooks};
//! use ws_core::ProjectId;
//!
//! let start = Instant::now();
//! let mut hooks = Webhooks::new(WebhookConfig::default(), 7);
//! let p = ProjectId::parse("room").unwrap();
//! hooks.handle_event(start, WebhookEvent::new("n1-1", EventName::ProjectOccupied, 1000, p, None));
//! assert!(hooks.poll_transmit(start).is_none(), "waits up to a second for more");
//! let at = hooks.poll_timeout().unwrap();
//! let batch = hooks.poll_transmit(at).unwrap();
//! assert!(batch.body.starts_with(r#"{"events":[{"id":"n1-1","name":"project_occupied""#));
//! hooks.handle_delivered(at, batch.id);
//! assert!(hooks.is_idle());
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ids::{ProjectId, UserId};

/// The four events of SPEC §14.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventName {
    /// A project's first member anywhere.
    ProjectOccupied,
    /// A project's last member gone.
    ProjectVacated,
    /// A user's first connection to a project anywhere.
    UserJoined,
    /// A user's last connection to a project gone.
    UserLeft,
}

impl EventName {
    /// Every event, in the order of SPEC §14.
    pub const ALL: [Self; 4] = [
        Self::ProjectOccupied,
        Self::ProjectVacated,
        Self::UserJoined,
        Self::UserLeft,
    ];

    /// The name on the wire and in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProjectOccupied => "project_occupied",
            Self::ProjectVacated => "project_vacated",
            Self::UserJoined => "user_joined",
            Self::UserLeft => "user_left",
        }
    }

    /// The event named `name`, if it is one of the four.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which events a deployment reports (`webhooks.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSet(u8);

impl EventSet {
    /// All four.
    pub fn all() -> Self {
        Self(EventName::ALL.iter().fold(0, |bits, e| bits | e.bit()))
    }

    /// None.
    pub fn none() -> Self {
        Self(0)
    }

    /// These events.
    pub fn of(events: impl IntoIterator<Item = EventName>) -> Self {
        Self(events.into_iter().fold(0, |bits, e| bits | e.bit()))
    }

    /// Whether `event` is reported.
    pub fn contains(self, event: EventName) -> bool {
        self.0 & event.bit() != 0
    }

    /// Whether no event is reported.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One event, as the receiver gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// Stable across retries: the receiver deduplicates by it.
    pub id: String,
    /// What happened.
    pub name: EventName,
    /// When it happened, in Unix milliseconds.
    pub time_ms: u64,
    /// The project.
    pub project: ProjectId,
    /// The user, for `user_joined` and `user_left`.
    pub user: Option<UserId>,
}

impl WebhookEvent {
    /// An event with its id.
    pub fn new(
        id: impl Into<String>,
        name: EventName,
        time_ms: u64,
        project: ProjectId,
        user: Option<UserId>,
    ) -> Self {
        Self {
            id: id.into(),
            name,
            time_ms,
            project,
            user,
        }
    }
}

/// The body of a webhook request: `{"events":[{"id","name","time_ms","project","user"?}, …]}`.
pub fn encode_batch<'a>(events: impl IntoIterator<Item = &'a WebhookEvent>) -> String {
    #[derive(Serialize)]
    struct Wire<'a> {
        id: &'a str,
        name: &'static str,
        time_ms: u64,
        project: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        events: Vec<Wire<'a>>,
    }
    let body = Body {
        events: events
            .into_iter()
            .map(|e| Wire {
                id: &e.id,
                name: e.name.as_str(),
                time_ms: e.time_ms,
                project: e.project.as_str(),
                user: e.user.as_ref().map(UserId::as_str),
            })
            .collect(),
    };
    // Strings and integers only: serialising cannot fail.
    serde_json::to_string(&body).unwrap_or_else(|_| r#"{"events":[]}"#.to_owned())
}

/// Batching, retries and the backlog bound.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// Events per request (SPEC: at most 100).
    pub max_batch: usize,
    /// How long the first event of a batch waits for others (SPEC: 1 s).
    pub linger: Duration,
    /// How long an event is retried before it is dropped (`webhooks.retry_for`, 10 min).
    pub retry_for: Duration,
    /// Events waiting behind the batch in flight; over it the oldest are dropped.
    pub max_backlog: usize,
    /// The backoff after the first failure; it doubles with each failure.
    pub first_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            max_batch: 100,
            linger: Duration::from_secs(1),
            retry_for: Duration::from_secs(600),
            max_backlog: 10_000,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Names one batch: a delivery outcome for another batch (a late answer) changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchId(u64);

/// A request to send: POST `body` to the receiver, then report the outcome with its `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Batch {
    /// Report the outcome with it.
    pub id: BatchId,
    /// The JSON body ([`encode_batch`]); the same bytes on every attempt unless events
    /// expired between them.
    pub body: String,
    /// Events in it.
    pub events: usize,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// Why events were dropped undelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The backlog was full: the oldest waiting events made room for new ones.
    Backlog,
    /// Retried for `retry_for` without success.
    Expired,
}

impl DropReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backlog => "backlog",
            Self::Expired => "expired",
        }
    }
}

/// What happened to events, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A batch was accepted by the receiver.
    Delivered {
        /// Events in it.
        events: usize,
        /// Attempts it took.
        attempts: u32,
        /// From the oldest event's arrival here to the receiver's answer.
        latency: Duration,
    },
    /// An attempt failed; the batch is retried after `retry_in`.
    Failed {
        /// Events in the batch.
        events: usize,
        /// Attempts so far.
        attempts: u32,
        /// The backoff chosen.
        retry_in: Duration,
    },
    /// Events were dropped undelivered. Consecutive drops for one reason are reported as
    /// one, so reports stay bounded however many events a dead receiver makes drop.
    Dropped {
        /// How many.
        events: usize,
        /// Why.
        reason: DropReason,
    },
}

#[derive(Debug)]
struct Queued {
    at: Instant,
    event: WebhookEvent,
}

#[derive(Debug)]
struct InFlight {
    id: BatchId,
    events: Vec<Queued>,
    body: String,
    /// Attempts made so far.
    attempts: u32,
    /// Sent and not yet answered.
    sending: bool,
    /// When to try again, after a failure.
    retry_at: Option<Instant>,
}

/// The webhook delivery machine. See the [module docs](self).
#[derive(Debug)]
pub struct Webhooks {
    config: WebhookConfig,
    backlog: VecDeque<Queued>,
    in_flight: Option<InFlight>,
    next_batch: u64,
    rng: u64,
    reports: VecDeque<Report>,
    /// Shutting down: what waits goes without waiting for `linger`.
    flushing: bool,
}

impl Webhooks {
    /// An idle machine; `seed` drives the jitter.
    pub fn new(config: WebhookConfig, seed: u64) -> Self {
        Self {
            config: WebhookConfig {
                max_batch: config.max_batch.max(1),
                max_backlog: config.max_backlog.max(1),
                ..config
            },
            backlog: VecDeque::new(),
            in_flight: None,
            next_batch: 0,
            rng: seed,
            reports: VecDeque::new(),
            flushing: false,
        }
    }

    /// An event happened. A full backlog drops its oldest event to make room.
    pub fn handle_event(&mut self, now: Instant, event: WebhookEvent) {
        if self.backlog.len() >= self.config.max_backlog {
            self.backlog.pop_front();
            self.report_dropped(1, DropReason::Backlog);
        }
        self.backlog.push_back(Queued { at: now, event });
    }

    /// The next request to send, if one is due now: a new batch (full, or its oldest event
    /// waited `linger`) or the retry of a failed one. `None` while one is being sent.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Batch> {
        if let Some(flight) = &mut self.in_flight {
            if flight.sending || flight.retry_at.is_some_and(|at| now < at) {
                return None;
            }
            flight.sending = true;
            flight.attempts += 1;
            return Some(Batch {
                id: flight.id,
                body: flight.body.clone(),
                events: flight.events.len(),
                attempt: flight.attempts,
            });
        }
        self.expire_backlog(now);
        let due = self.flushing
            || self.backlog.len() >= self.config.max_batch
            || self
                .backlog
                .front()
                .is_some_and(|q| now >= q.at + self.config.linger);
        if !due {
            return None;
        }
        let n = self.backlog.len().min(self.config.max_batch);
        let events: Vec<Queued> = self.backlog.drain(..n).collect();
        self.next_batch += 1;
        let id = BatchId(self.next_batch);
        let body = encode_batch(events.iter().map(|q| &q.event));
        self.in_flight = Some(InFlight {
            id,
            events,
            body: body.clone(),
            attempts: 1,
            sending: true,
            retry_at: None,
        });
        Some(Batch {
            id,
            events: n,
            body,
            attempt: 1,
        })
    }

    /// The receiver answered `id` with a 2xx.
    pub fn handle_delivered(&mut self, now: Instant, id: BatchId) {
        let Some(flight) = self.in_flight.take_if(|f| f.id == id && f.sending) else {
            return;
        };
        let oldest = flight.events.iter().map(|q| q.at).min().unwrap_or(now);
        self.reports.push_back(Report::Delivered {
            events: flight.events.len(),
            attempts: flight.attempts,
            latency: now.saturating_duration_since(oldest),
        });
    }

    /// Sending `id` failed: no answer within the timeout, a refused connection, a non-2xx
    /// answer. Its events older than `retry_for` are dropped; the rest are retried after
    /// an exponential backoff with jitter.
    pub fn handle_failed(&mut self, now: Instant, id: BatchId) {
        let Some(mut flight) = self.in_flight.take_if(|f| f.id == id && f.sending) else {
            return;
        };
        let before = flight.events.len();
        let retry_for = self.config.retry_for;
        flight
            .events
            .retain(|q| now.saturating_duration_since(q.at) < retry_for);
        let expired = before - flight.events.len();
        if expired > 0 {
            self.report_dropped(expired, DropReason::Expired);
        }
        if flight.events.is_empty() {
            return;
        }
        if expired > 0 {
            flight.body = encode_batch(flight.events.iter().map(|q| &q.event));
        }
        let retry_in = self.backoff(flight.attempts);
        flight.sending = false;
        flight.retry_at = Some(now + retry_in);
        self.reports.push_back(Report::Failed {
            events: flight.events.len(),
            attempts: flight.attempts,
            retry_in,
        });
        self.in_flight = Some(flight);
    }

    /// When [`Webhooks::poll_transmit`] may next return a batch; `None` while one is being
    /// sent or nothing waits.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.in_flight {
            Some(flight) if flight.sending => None,
            Some(flight) => flight.retry_at,
            None => self.backlog.front().map(|q| {
                if self.flushing || self.backlog.len() >= self.config.max_batch {
                    q.at
                } else {
                    q.at + self.config.linger
                }
            }),
        }
    }

    /// The server is stopping: from now on batches leave without waiting for `linger`
    /// (retries keep their backoff).
    pub fn handle_flush(&mut self) {
        self.flushing = true;
    }

    /// The next report.
    #[must_use]
    pub fn poll_report(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }

    /// Events waiting behind the batch in flight.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// Events held in all: the backlog and the batch in flight.
    pub fn held(&self) -> usize {
        self.backlog.len() + self.in_flight.as_ref().map_or(0, |f| f.events.len())
    }

    /// Whether nothing waits and nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.held() == 0
    }

    /// Waiting events older than `retry_for` will never be sent: dropped before a batch is
    /// made of them (they waited behind a failing batch).
    fn expire_backlog(&mut self, now: Instant) {
        let retry_for = self.config.retry_for;
        let expired = self
            .backlog
            .iter()
            .take_while(|q| now.saturating_duration_since(q.at) >= retry_for)
            .count();
        if expired > 0 {
            self.backlog.drain(..expired);
            self.report_dropped(expired, DropReason::Expired);
        }
    }

    fn report_dropped(&mut self, events: usize, reason: DropReason) {
        if let Some(Report::Dropped {
            events: n,
            reason: last,
        }) = self.reports.back_mut()
            && *last == reason
        {
            *n += events;
            return;
        }
        self.reports.push_back(Report::Dropped { events, reason });
    }

    /// "Equal jitter": half the exponential delay, plus a random part of the other half, so
    /// nodes that failed together do not retry together, and no retry comes sooner than
    /// half the schedule.
    fn backoff(&mut self, attempts: u32) -> Duration {
        let doubled = self
            .config
            .first_backoff
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let base = doubled.min(self.config.max_backoff);
        let half = base / 2;
        let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        let random = if span == 0 {
            0
        } else {
            self.next_random() % (span + 1)
        };
        half + Duration::from_micros(random)
    }

    /// splitmix64: small and good enough for jitter.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests;
