//! `sub-churn`: v2 connections that subscribe and unsubscribe in a loop, as fast as the
//! answers come back: subscription changes per second.
//!
//! M connections open on `GET /ws` with no subscription. Each then keeps `--window`
//! requests in flight, one per slot: slot `s` of connection `c` subscribes to a project,
//! unsubscribes from it when `subscribed` arrives, and subscribes to its next project when
//! `unsubscribed` arrives. Slot `s` walks the projects `c·W + s + k·W` (k = 0, 1, …) modulo
//! `--pool` (rounded up to a multiple of the window W), so the slots of one connection never
//! share a project and every project has a few members coming and going. Answers are read in
//! batches and the next requests written in one flush. After `--duration` no new request is
//! sent; the pairs (subscribe + unsubscribe, both answered) completed within the duration,
//! divided by it, are the result.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::Ws;
use crate::idle::merge;
use crate::stats::Histogram;
use crate::{Ctx, humantime_duration, ms, round1, round3};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Connections, each churning on its own.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) connections: usize,
    /// Requests in flight per connection (one per slot).
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Distinct projects the slots walk over.
    #[arg(long, default_value_t = 1_000)]
    pool: usize,
    /// How long to churn.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    duration: Duration,
    /// After `--duration`, how long the requests in flight may take before they count as
    /// unanswered.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    drain: Duration,
}

#[derive(Default)]
struct Counts {
    /// Subscribe + unsubscribe pairs answered within the duration.
    pairs: Cell<u64>,
    /// Requests answered (any time), errors included.
    answered: Cell<u64>,
    sent: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    /// Connections that ended (closed by the server, failed) before their last answer.
    ended: Cell<u64>,
    /// Request to answer.
    latency: RefCell<Histogram>,
}

/// The id of an answer: `s<slot>` for `subscribed`, `u<slot>` for `unsubscribed`.
fn answer_id(text: &str) -> Option<(char, usize)> {
    let at = text.find(r#""id":""#)? + 6;
    let rest = &text[at..];
    let id = &rest[..rest.find('"')?];
    let mut chars = id.chars();
    let kind = chars.next()?;
    Some((kind, chars.as_str().parse().ok()?))
}

fn subscribe(slot: usize, project: usize) -> Message {
    Message::text(format!(
        r#"{{"type":"subscribe","id":"s{slot}","project":"churn-{project}"}}"#
    ))
}

fn unsubscribe(slot: usize, project: usize) -> Message {
    Message::text(format!(
        r#"{{"type":"unsubscribe","id":"u{slot}","project":"churn-{project}"}}"#
    ))
}

/// One connection's churn until `end`, then until its requests in flight are answered or
/// `hard_end` passes.
#[allow(clippy::too_many_arguments)]
async fn churn(
    mut ws: Ws,
    conn: usize,
    window: usize,
    pool: usize,
    end: Instant,
    hard_end: tokio::time::Instant,
    counts: Rc<Counts>,
) {
    let project = |slot: usize, k: usize| (conn * window + slot + k * window) % pool;
    let mut cycle = vec![0_usize; window];
    let mut sent_at = vec![Instant::now(); window];
    let mut in_flight = window;
    let fail = |counts: &Counts, e: String| {
        counts.ended.set(counts.ended.get() + 1);
        counts.first_error.borrow_mut().get_or_insert(e);
    };
    for slot in 0..window {
        if let Err(e) = ws.feed(subscribe(slot, project(slot, 0))).await {
            return fail(&counts, format!("sending: {e}"));
        }
    }
    if let Err(e) = ws.flush().await {
        return fail(&counts, format!("sending: {e}"));
    }
    counts.sent.set(counts.sent.get() + window as u64);
    while in_flight > 0 {
        let Ok(first) = tokio::time::timeout_at(hard_end, ws.next()).await else {
            break;
        };
        let mut next = Some(first);
        let mut sent = 0_u64;
        while let Some(message) = next {
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return fail(&counts, format!("closed by the server: {frame:?}"));
                }
                Some(Ok(_)) => {
                    next = ws.next().now_or_never();
                    continue;
                }
                Some(Err(e)) => return fail(&counts, format!("reading: {e}")),
                None => return fail(&counts, "the stream ended".to_owned()),
            };
            if let Some((kind, slot)) = answer_id(&text).filter(|(_, slot)| *slot < window) {
                let now = Instant::now();
                counts.answered.set(counts.answered.get() + 1);
                counts
                    .latency
                    .borrow_mut()
                    .record(u64::try_from((now - sent_at[slot]).as_micros()).unwrap_or(u64::MAX));
                let error = text.contains(r#""type":"error""#);
                if error {
                    counts.errors.set(counts.errors.get() + 1);
                    counts
                        .first_error
                        .borrow_mut()
                        .get_or_insert_with(|| text.to_string());
                }
                // After `subscribed`, unsubscribe; after `unsubscribed` (or a refusal), the
                // next project.
                let request = if kind == 's' && !error {
                    unsubscribe(slot, project(slot, cycle[slot]))
                } else {
                    if kind == 'u' && !error && now < end {
                        counts.pairs.set(counts.pairs.get() + 1);
                    }
                    cycle[slot] += 1;
                    subscribe(slot, project(slot, cycle[slot]))
                };
                if now < end {
                    sent_at[slot] = now;
                    if let Err(e) = ws.feed(request).await {
                        return fail(&counts, format!("sending: {e}"));
                    }
                    sent += 1;
                } else {
                    in_flight -= 1;
                }
            }
            next = ws.next().now_or_never();
        }
        if sent > 0 {
            if let Err(e) = ws.flush().await {
                return fail(&counts, format!("sending: {e}"));
            }
            counts.sent.set(counts.sent.get() + sent);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}

pub(crate) async fn run(ctx: &Ctx, o: Options) -> anyhow::Result<Value> {
    let window = o.window.max(1);
    let pool = o.pool.max(window).div_ceil(window) * window;
    eprintln!(
        "sub-churn: {} v2 connections x {window} requests in flight over {pool} projects, {:?}",
        o.connections, o.duration
    );
    let opened = ctx.open_many(o.connections, |_| String::new()).await;
    if opened.conns.is_empty() {
        bail!(
            "no connection opened: {}",
            opened.first_error.unwrap_or_default()
        );
    }
    let summary = opened.summary();
    let counts = Rc::new(Counts::default());
    let server_cpu = ctx.server_cpu();
    let cores = crate::stats::CoreMeter::start();
    let started = Instant::now();
    let end = started + o.duration;
    let hard_end = tokio::time::Instant::from_std(end + o.drain);
    let tasks: Vec<_> = opened
        .conns
        .into_iter()
        .map(|(conn, ws)| {
            tokio::task::spawn_local(churn(
                ws,
                conn,
                window,
                pool,
                end,
                hard_end,
                Rc::clone(&counts),
            ))
        })
        .collect();
    // The measurement ends with the duration; the drain only collects the last answers.
    tokio::time::sleep_until(end.into()).await;
    let server_cpu_pct = server_cpu.and_then(|m| m.percent());
    let busy = cores.busy_percent();
    let elapsed = started.elapsed().as_secs_f64();
    let pairs = counts.pairs.get();
    for task in tasks {
        let _ = task.await;
    }
    let rate = pairs as f64 / elapsed.max(1e-9);
    let latency = counts.latency.borrow();
    let mut result = json!({
        "case": "sub-churn",
        "connections": o.connections,
        "window": window,
        "pool": pool,
        "duration_s": round3(elapsed),
        "pairs": pairs,
        "subs_per_s": round1(rate),
        "requests_sent": counts.sent.get(),
        "requests_answered": counts.answered.get(),
        "unanswered": counts.sent.get().saturating_sub(counts.answered.get()),
        "errors": counts.errors.get(),
        "connections_ended": counts.ended.get(),
        "first_error": counts.first_error.borrow().clone(),
        "p50_ms": ms(latency.quantile(0.50)),
        "p99_ms": ms(latency.quantile(0.99)),
        "server_cpu_pct": server_cpu_pct.map(round1),
        "subs_per_server_cpu_s": server_cpu_pct
            .filter(|pct| *pct > 0.0)
            .map(|pct| round1(rate / (pct / 100.0))),
        "cpu0_busy_pct": busy.first().copied().map(round1),
        "cpu1_busy_pct": busy.get(1).copied().map(round1),
    });
    merge(&mut result, summary);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::answer_id;

    #[test]
    fn reads_answer_ids() {
        assert_eq!(
            answer_id(
                r#"{"type":"subscribed","id":"s7","project":"churn-3","epoch":"e","offset":0,"recovered":false,"missed":0}"#
            ),
            Some(('s', 7))
        );
        assert_eq!(
            answer_id(r#"{"type":"unsubscribed","id":"u12","project":"churn-3"}"#),
            Some(('u', 12))
        );
        assert_eq!(answer_id(r#"{"type":"pong"}"#), None);
        assert_eq!(answer_id(r#"{"type":"error","id":"sx","code":"c"}"#), None);
    }
}
