//! `fanout`: S subscribers in each of P projects, `--publishers` publisher connections per
//! project (one by default).
//!
//! Every payload is a JSON string `"b:<seq>:<µs>:xxx…"` of `--payload` bytes (quotes
//! included): `seq` counts the project's publishes from 0 and `µs` is the generator's clock at
//! the publish, so a subscriber knows the latency of each delivery and spots losses,
//! duplicates and reorders. With several publishers per project, each numbers its own
//! publishes (`"b:<seq>:<µs>:<publisher>:xxx…"`): the server orders one connection's
//! publishes, not several connections' against each other. Publishes go round-robin over the projects, at a fixed total rate
//! (`--rate`) or as fast as a window of undelivered messages allows (`--rate 0`). Before the
//! measurement, warm-up publishes (`"w:…"`) prove that every subscriber is in its room.
//!
//! `--protocol v2` speaks wshub's v2 on `GET /ws`: every connection (the publisher too, so
//! that the server does the same work as on v1, where the publisher is in its room and
//! receives its own messages) subscribes to its project in the query (`?subscribe=fan-N`),
//! and publishes name their project. The accounting is the same as on v1. `--ephemeral`
//! marks every publish `"ephemeral": true` (no offset, no history); the accounting never
//! relies on offsets, only on the sequence number in the payload.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{Protocol, Target, Ws, close_code};
use crate::idle::merge;
use crate::stats::Histogram;
use crate::{Ctx, humantime_duration, ms, round1, round3};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Projects (rooms), each with its subscribers and one publisher.
    #[arg(long, default_value_t = 1)]
    pub(crate) projects: usize,
    /// Subscribers per project (the publishers not counted).
    #[arg(long, default_value_t = 1000)]
    pub(crate) subscribers: usize,
    /// Publishing connections per project; publishes go round-robin over them.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Publishes per second over all projects; 0: as fast as `--window` allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// How long to publish.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    duration: Duration,
    /// Stop publishing after this many messages (0: only `--duration` stops).
    #[arg(long, default_value_t = 0)]
    messages: u64,
    /// At `--rate 0`: messages published but not yet delivered to every subscriber.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Bytes of each payload (the JSON string, quotes included).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// After the last publish, how long deliveries may take before the rest count as lost.
    #[arg(long, default_value = "10s", value_parser = humantime_duration)]
    drain: Duration,
    /// The wshub protocol: v1 (`/ws/projects/<p>`) or v2 (`/ws?subscribe=<p>`).
    #[arg(long, value_enum, default_value = "v1")]
    pub(crate) protocol: Protocol,
    /// Publish with `"ephemeral": true` (wshub only).
    #[arg(long)]
    ephemeral: bool,
}

/// What the subscribers report, shared on the generator's one thread.
struct Shared {
    t0: Instant,
    /// Deliveries of measured messages, each counted once per subscriber.
    delivered: Cell<u64>,
    /// Wake the publisher once `delivered` reaches this (0: nobody waits).
    wake_at: Cell<u64>,
    notify: Notify,
    /// Subscribers that saw a warm-up message.
    ready: Cell<usize>,
    latency: RefCell<Histogram>,
    duplicates: Cell<u64>,
    reordered: Cell<u64>,
    last_delivery: Cell<Option<Instant>>,
    /// Close codes the server sent to subscribers.
    closes: RefCell<BTreeMap<u16, usize>>,
    /// Subscribers whose connection ended (closed or failed) during the run.
    ended: Cell<usize>,
    read_errors: Cell<usize>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// What a frame carries for the generator.
#[derive(Debug, PartialEq, Eq)]
enum Mark {
    Bench {
        seq: u64,
        sent_us: u64,
        /// Which of the project's publishers sent it.
        publisher: usize,
    },
    Warmup,
}

/// Finds the payload in a frame: the frame itself for raw servers, its `data` for wshub.
fn parse(text: &str) -> Option<Mark> {
    if let Some(at) = text.find("\"b:") {
        let mut fields = text[at + 3..].splitn(4, ':');
        let seq = fields.next()?.parse().ok()?;
        let sent_us = fields.next()?.parse().ok()?;
        // The padding is `x`s: a number here names the publisher.
        let publisher = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        return Some(Mark::Bench {
            seq,
            sent_us,
            publisher,
        });
    }
    text.contains("\"w:").then_some(Mark::Warmup)
}

/// A payload of `size` bytes: `"b:<seq>:<µs>:xx…x"`, or `"b:<seq>:<µs>:<publisher>:xx…x"`
/// from a project's publisher other than the first.
fn payload(kind: char, seq: u64, sent_us: u64, publisher: usize, size: usize) -> String {
    let mut s = if publisher == 0 {
        format!("\"{kind}:{seq}:{sent_us}:")
    } else {
        format!("\"{kind}:{seq}:{sent_us}:{publisher}:")
    };
    let pad = size.saturating_sub(s.len() + 1);
    s.extend(std::iter::repeat_n('x', pad));
    s.push('"');
    s
}

/// How the publisher words a publish.
#[derive(Debug, Clone, Copy)]
struct Publish {
    target: Target,
    protocol: Protocol,
    ephemeral: bool,
}

impl Publish {
    fn frame(self, project: &str, payload: &str) -> Message {
        let ephemeral = if self.ephemeral {
            ",\"ephemeral\":true"
        } else {
            ""
        };
        Message::text(match (self.target, self.protocol) {
            (Target::Raw, _) => payload.to_owned(),
            (Target::Wshub, Protocol::V1) => {
                format!("{{\"type\":\"publish\",\"data\":{payload}{ephemeral}}}")
            }
            (Target::Wshub, Protocol::V2) => format!(
                "{{\"type\":\"publish\",\"project\":\"{project}\",\"data\":{payload}{ephemeral}}}"
            ),
        })
    }
}

async fn subscribe(mut ws: Ws, shared: Rc<Shared>) {
    // Per publisher of the project: the next sequence number expected.
    let mut nexts: Vec<u64> = vec![0];
    let mut missing = BTreeSet::new();
    let mut warm = false;
    while let Some(message) = ws.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(message @ Message::Close(_)) => {
                if let Some(code) = close_code(&message) {
                    *shared.closes.borrow_mut().entry(code).or_default() += 1;
                }
                continue;
            }
            Ok(_) => continue,
            Err(_) => {
                shared.read_errors.set(shared.read_errors.get() + 1);
                break;
            }
        };
        match parse(text.as_str()) {
            Some(Mark::Bench {
                seq,
                sent_us,
                publisher,
            }) => {
                if nexts.len() <= publisher {
                    nexts.resize(publisher + 1, 0);
                }
                let next = &mut nexts[publisher];
                let fresh = if seq == *next {
                    *next += 1;
                    true
                } else if seq > *next {
                    // A gap: the skipped ones count as reordered if they come later.
                    if seq - *next <= 1_000_000 {
                        missing.extend((*next..seq).map(|s| (publisher, s)));
                    }
                    *next = seq + 1;
                    true
                } else if missing.remove(&(publisher, seq)) {
                    shared.reordered.set(shared.reordered.get() + 1);
                    true
                } else {
                    shared.duplicates.set(shared.duplicates.get() + 1);
                    false
                };
                if fresh {
                    let now = shared.now_us();
                    shared
                        .latency
                        .borrow_mut()
                        .record(now.saturating_sub(sent_us));
                    let delivered = shared.delivered.get() + 1;
                    shared.delivered.set(delivered);
                    shared.last_delivery.set(Some(Instant::now()));
                    let wake_at = shared.wake_at.get();
                    if wake_at != 0 && delivered >= wake_at {
                        shared.wake_at.set(0);
                        shared.notify.notify_one();
                    }
                }
            }
            Some(Mark::Warmup) if !warm => {
                warm = true;
                shared.ready.set(shared.ready.get() + 1);
            }
            _ => {}
        }
    }
    shared.ended.set(shared.ended.get() + 1);
}

pub(crate) async fn run(ctx: &Ctx, o: Options) -> anyhow::Result<Value> {
    let projects = o.projects.max(1);
    let publishers = o.publishers.max(1);
    let per_project = o.subscribers;
    let subscribers = projects * per_project;
    let target = ctx.endpoint.target;
    if target == Target::Raw && (o.ephemeral || o.protocol == Protocol::V2) {
        bail!("--protocol v2 and --ephemeral are for wshub only");
    }
    let publish = Publish {
        target,
        protocol: ctx.endpoint.protocol,
        ephemeral: o.ephemeral,
    };
    let names: Vec<String> = (0..projects).map(|p| format!("fan-{p}")).collect();
    eprintln!(
        "fanout{}{}: {projects} project(s) x {per_project} subscribers, {publishers} publisher(s) each, {}, {:?}",
        if ctx.endpoint.v2() { " v2" } else { "" },
        if o.ephemeral { " ephemeral" } else { "" },
        if o.rate > 0.0 {
            format!("{} msg/s", o.rate)
        } else {
            format!("max rate, window {}", o.window)
        },
        o.duration
    );
    let shared = Rc::new(Shared {
        t0: Instant::now(),
        delivered: Cell::new(0),
        wake_at: Cell::new(0),
        notify: Notify::new(),
        ready: Cell::new(0),
        latency: RefCell::new(Histogram::default()),
        duplicates: Cell::new(0),
        reordered: Cell::new(0),
        last_delivery: Cell::new(None),
        closes: RefCell::new(BTreeMap::new()),
        ended: Cell::new(0),
        read_errors: Cell::new(0),
    });

    let rss_before = ctx.server_rss();
    let subs = ctx
        .open_many(subscribers, |i| names[i % projects].clone())
        .await;
    if subs.conns.len() != subscribers {
        bail!(
            "{} of {subscribers} subscribers could not connect: {}",
            subs.failed,
            subs.first_error.as_deref().unwrap_or("?")
        );
    }
    let connect_summary = subs.summary();
    let mut tasks = Vec::with_capacity(subscribers + projects);
    for (_, ws) in subs.conns {
        tasks.push(tokio::task::spawn_local(subscribe(ws, Rc::clone(&shared))));
    }
    // Publishers come after the subscribers in the connection numbering (source addresses, users).
    // Connection `k * projects + p` is publisher `k` of project `p`.
    let pub_count = projects * publishers;
    let pubs = ctx
        .open_many(pub_count, |i| names[i % projects].clone())
        .await;
    if pubs.conns.len() != pub_count {
        bail!(
            "{} of {pub_count} publishers could not connect: {}",
            pubs.failed,
            pubs.first_error.as_deref().unwrap_or("?")
        );
    }
    let publisher_closes = Rc::new(RefCell::new(BTreeMap::<u16, usize>::new()));
    let mut sinks: Vec<SplitSink<Ws, Message>> = Vec::with_capacity(pub_count);
    for (_, ws) in pubs.conns {
        let (sink, mut stream) = ws.split();
        sinks.push(sink);
        let closes = Rc::clone(&publisher_closes);
        // The publisher receives its own messages (and acks): read them so that its queue
        // on the server never fills.
        tasks.push(tokio::task::spawn_local(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Some(code) = close_code(&message) {
                    *closes.borrow_mut().entry(code).or_default() += 1;
                }
            }
        }));
    }

    // Warm-up: publish until every subscriber has seen one, so all are in their rooms.
    let warm_deadline = Instant::now() + Duration::from_secs(20);
    while shared.ready.get() < subscribers {
        if Instant::now() > warm_deadline {
            bail!(
                "only {} of {subscribers} subscribers received the warm-up",
                shared.ready.get()
            );
        }
        for (sink, name) in sinks.iter_mut().zip(&names) {
            let warm = payload('w', 0, 0, 0, o.payload);
            sink.send(publish.frame(name, &warm)).await?;
        }
        for _ in 0..20 {
            if shared.ready.get() >= subscribers {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    // Let the last warm-up copies drain before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let server_cpu = ctx.server_cpu();
    let cores = crate::stats::CoreMeter::start();
    let started = Instant::now();
    let end = started + o.duration;
    let per_message = per_project as u64;
    // Per publisher connection, in the order of `sinks`.
    let mut seqs = vec![0_u64; pub_count];
    let mut published = 0_u64;
    let mut stalled = false;
    let mut publish_error = None;
    loop {
        if o.messages != 0 && published >= o.messages {
            break;
        }
        if o.rate > 0.0 {
            let at = started + Duration::from_secs_f64(published as f64 / o.rate);
            if at >= end {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
        } else {
            if Instant::now() >= end {
                break;
            }
            let need = (published + 1).saturating_sub(o.window) * per_message;
            if shared.delivered.get() < need {
                shared.wake_at.set(need);
                let woken =
                    tokio::time::timeout(Duration::from_secs(2), shared.notify.notified()).await;
                if woken.is_err() && shared.delivered.get() < need {
                    stalled = true;
                    break;
                }
                continue;
            }
        }
        #[allow(clippy::cast_possible_truncation)]
        let project = (published % projects as u64) as usize;
        #[allow(clippy::cast_possible_truncation)]
        let publisher = ((published / projects as u64) % publishers as u64) as usize;
        let conn = publisher * projects + project;
        let seq = seqs[conn];
        seqs[conn] += 1;
        let data = payload('b', seq, shared.now_us(), publisher, o.payload);
        if let Err(e) = sinks[conn]
            .send(publish.frame(&names[project], &data))
            .await
        {
            publish_error = Some(e.to_string());
            seqs[conn] -= 1;
            break;
        }
        published += 1;
    }
    let publish_elapsed = started.elapsed();

    let expected = seqs.iter().sum::<u64>() * per_message;
    let drain_deadline = Instant::now() + o.drain;
    while shared.delivered.get() < expected && Instant::now() < drain_deadline {
        shared.wake_at.set(expected);
        let _ = tokio::time::timeout_at(drain_deadline.into(), shared.notify.notified()).await;
    }
    let server_cpu_pct = server_cpu.and_then(|m| m.percent());
    let busy = cores.busy_percent();
    let rss_after = ctx.server_rss();
    let delivered = shared.delivered.get();
    let window = shared
        .last_delivery
        .get()
        .map_or(publish_elapsed, |last| last.duration_since(started));
    let latency = shared.latency.borrow();
    let closes: BTreeMap<String, usize> = shared
        .closes
        .borrow()
        .iter()
        .map(|(code, n)| (code.to_string(), *n))
        .collect();
    let publisher_closes: BTreeMap<String, usize> = publisher_closes
        .borrow()
        .iter()
        .map(|(code, n)| (code.to_string(), *n))
        .collect();
    let mut result = json!({
        "case": "fanout",
        "protocol": if ctx.endpoint.v2() { 2 } else { 1 },
        "ephemeral": o.ephemeral,
        "projects": projects,
        "publishers": publishers,
        "subscribers": per_project,
        "rate": o.rate,
        "window": o.window,
        "payload_bytes": o.payload,
        "published": published,
        "publish_s": round3(publish_elapsed.as_secs_f64()),
        "publishes_per_s": round1(published as f64 / publish_elapsed.as_secs_f64().max(1e-9)),
        "expected": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "duplicates": shared.duplicates.get(),
        "reordered": shared.reordered.get(),
        "stalled": stalled,
        "publish_error": publish_error,
        "window_s": round3(window.as_secs_f64()),
        "deliveries_per_s": round1(delivered as f64 / window.as_secs_f64().max(1e-9)),
        "p50_ms": ms(latency.quantile(0.50)),
        "p99_ms": ms(latency.quantile(0.99)),
        "p999_ms": ms(latency.quantile(0.999)),
        "max_ms": ms(latency.max()),
        "subscriber_closes": closes,
        "subscribers_ended": shared.ended.get(),
        "subscriber_read_errors": shared.read_errors.get(),
        "publisher_closes": publisher_closes,
        "server_cpu_pct": server_cpu_pct.map(round1),
        "deliveries_per_server_cpu_s": server_cpu_pct
            .filter(|pct| *pct > 0.0)
            .map(|pct| round1(delivered as f64 / window.as_secs_f64().max(1e-9) / (pct / 100.0))),
        "cpu0_busy_pct": busy.first().copied().map(round1),
        "cpu1_busy_pct": busy.get(1).copied().map(round1),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
    });
    merge(&mut result, connect_summary);
    drop(latency);
    for task in tasks {
        task.abort();
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::{Mark, Publish, parse, payload};
    use crate::conn::{Protocol, Target};

    #[test]
    fn payloads_round_trip() {
        let p = payload('b', 42, 1_234_567, 0, 100);
        assert_eq!(p.len(), 100);
        assert!(p.starts_with("\"b:42:1234567:x") && p.ends_with("x\""));
        let wshub = format!(
            r#"{{"type":"message","offset":7,"from":"bench-0","data":{p},"ts":1795657378356}}"#
        );
        for text in [p.as_str(), wshub.as_str()] {
            assert_eq!(
                parse(text),
                Some(Mark::Bench {
                    seq: 42,
                    sent_us: 1_234_567,
                    publisher: 0,
                })
            );
        }
        assert_eq!(parse(&payload('w', 0, 0, 0, 100)), Some(Mark::Warmup));
        let third = payload('b', 7, 9, 3, 100);
        assert_eq!(third.len(), 100);
        assert_eq!(
            parse(&third),
            Some(Mark::Bench {
                seq: 7,
                sent_us: 9,
                publisher: 3,
            })
        );
        assert_eq!(parse(r#"{"type":"ack","offset":7}"#), None);
        // Longer than asked when the header alone does not fit.
        assert!(payload('b', u64::MAX, u64::MAX, 0, 10).len() > 10);
    }

    #[test]
    fn publishes_are_worded_per_protocol() {
        let frame = |target, protocol, ephemeral| {
            let publish = Publish {
                target,
                protocol,
                ephemeral,
            };
            publish.frame("fan-3", "\"b:1:2:x\"").into_text().unwrap()
        };
        assert_eq!(
            frame(Target::Wshub, Protocol::V1, false).as_str(),
            r#"{"type":"publish","data":"b:1:2:x"}"#
        );
        assert_eq!(
            frame(Target::Wshub, Protocol::V2, true).as_str(),
            r#"{"type":"publish","project":"fan-3","data":"b:1:2:x","ephemeral":true}"#
        );
        assert_eq!(
            frame(Target::Wshub, Protocol::V1, true).as_str(),
            r#"{"type":"publish","data":"b:1:2:x","ephemeral":true}"#
        );
        assert_eq!(
            frame(Target::Raw, Protocol::V1, false).as_str(),
            r#""b:1:2:x""#
        );
        // An ephemeral v2 delivery has no offset: the payload's sequence is what counts.
        let delivery = r#"{"type":"message","project":"fan-3","from":"bench-0","data":"b:5:9:xx","ts":1,"ephemeral":true}"#;
        assert_eq!(
            parse(delivery),
            Some(Mark::Bench {
                seq: 5,
                sent_us: 9,
                publisher: 0,
            })
        );
    }
}
