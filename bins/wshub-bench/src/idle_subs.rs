//! `idle-subs`: what a v2 subscription costs the server in resident memory, on top of an
//! idle v2 connection.
//!
//! N connections open on `GET /ws` with no subscription; after `--settle` the server's RSS
//! gives the cost of an idle v2 connection. Then every connection subscribes in band to K
//! distinct projects drawn from a pool of `--pool` (connection `i` takes projects
//! `i·K … i·K + K − 1` modulo the pool: every project ends up with about N·K / pool members),
//! pipelined, and waits for its K `subscribed` answers; after `--settle` again, the growth of
//! the RSS divided by N·K is the cost of one subscription (the pool's projects, created by
//! their first subscriber, are counted in it: a pool much smaller than N·K amortises them).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::Ws;
use crate::idle::merge;
use crate::{Ctx, humantime_duration, round1, round3};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Connections (v2, each subscribed to `--subscriptions` projects).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) connections: usize,
    /// Subscriptions per connection (the server's `limits.max_subscriptions` is 128).
    #[arg(long, default_value_t = 20)]
    subscriptions: usize,
    /// Distinct projects the subscriptions are spread over.
    #[arg(long, default_value_t = 1_000)]
    pool: usize,
    /// How long the connections sit idle before each RSS reading: long enough for the
    /// allocator to return what the handshakes and requests left behind (jemalloc: 10 s).
    #[arg(long, default_value = "15s", value_parser = humantime_duration)]
    settle: Duration,
    /// How long the subscribing phase may take before the case fails.
    #[arg(long, default_value = "60s", value_parser = humantime_duration)]
    subscribe_timeout: Duration,
}

/// Subscribes `ws` (connection `index`) to its `k` projects, pipelined; returns once every
/// answer is in. An `error` answer fails the connection.
async fn subscribe_all(ws: &mut Ws, index: usize, k: usize, pool: usize) -> anyhow::Result<()> {
    for j in 0..k {
        let project = (index * k + j) % pool;
        let frame = format!(r#"{{"type":"subscribe","id":"{j}","project":"subs-{project}"}}"#);
        ws.feed(Message::text(frame)).await?;
    }
    ws.flush().await?;
    let mut answered = 0;
    while answered < k {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains(r#""type":"subscribed""#) => answered += 1,
            Some(Ok(Message::Text(t))) if t.contains(r#""type":"error""#) => {
                bail!("subscribe refused: {t}")
            }
            Some(Ok(Message::Close(frame))) => bail!("closed while subscribing: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the stream ended while subscribing"),
        }
    }
    Ok(())
}

pub(crate) async fn run(ctx: &Ctx, o: Options) -> anyhow::Result<Value> {
    if ctx.server_pid.is_none() {
        bail!("idle-subs needs --server-pid to read the server's RSS");
    }
    let k = o.subscriptions;
    let pool = o.pool.max(k).max(1);
    // The server has just started: let it finish its own start-up allocations.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ctx.server_rss();
    eprintln!(
        "idle-subs: {} v2 connections, then {k} subscriptions each over {pool} projects, {} source address(es)",
        o.connections,
        ctx.endpoint.source_ips().max(1)
    );
    let opened = ctx.open_many(o.connections, |_| String::new()).await;
    let connected = opened.conns.len();
    let summary = opened.summary();
    if connected == 0 {
        bail!(
            "no connection opened: {}",
            opened.first_error.unwrap_or_default()
        );
    }
    tokio::time::sleep(o.settle).await;
    let with_conns = ctx.server_rss();

    // Every connection subscribes, then reads on (answering pings) until the server ends it
    // or the case is over.
    let started = Instant::now();
    let subscribed = Rc::new(Cell::new(0_usize));
    let failed = Rc::new(Cell::new(0_usize));
    let first_error = Rc::new(std::cell::RefCell::new(None::<String>));
    let closed = Rc::new(Cell::new(0_usize));
    let mut tasks = Vec::with_capacity(connected);
    for (i, mut ws) in opened.conns {
        let (subscribed, failed, first_error, closed) = (
            Rc::clone(&subscribed),
            Rc::clone(&failed),
            Rc::clone(&first_error),
            Rc::clone(&closed),
        );
        tasks.push(tokio::task::spawn_local(async move {
            match subscribe_all(&mut ws, i, k, pool).await {
                Ok(()) => subscribed.set(subscribed.get() + 1),
                Err(e) => {
                    failed.set(failed.get() + 1);
                    first_error
                        .borrow_mut()
                        .get_or_insert_with(|| format!("{e:#}"));
                    return;
                }
            }
            while let Some(Ok(_)) = ws.next().await {}
            closed.set(closed.get() + 1);
        }));
    }
    let deadline = started + o.subscribe_timeout;
    while subscribed.get() + failed.get() < connected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subscribe_s = started.elapsed().as_secs_f64();
    let timed_out = connected - subscribed.get() - failed.get();
    eprintln!(
        "idle-subs: {} connections subscribed in {subscribe_s:.2} s ({} failed, {timed_out} unanswered); settling {:?}",
        subscribed.get(),
        failed.get(),
        o.settle
    );
    tokio::time::sleep(o.settle).await;
    let with_subs = ctx.server_rss();

    let subs = subscribed.get() * k;
    let kib_per_conn = match (before, with_conns) {
        (Some(b), Some(a)) => Some(round3(a.saturating_sub(b) as f64 / connected as f64)),
        _ => None,
    };
    let bytes_per_sub = match (with_conns, with_subs) {
        (Some(b), Some(a)) if subs > 0 => {
            Some(round1(a.saturating_sub(b) as f64 * 1024.0 / subs as f64))
        }
        _ => None,
    };
    let mut result = json!({
        "case": "idle-subs",
        "connections": o.connections,
        "subscriptions_per_conn": k,
        "pool": pool,
        "source_ips": ctx.endpoint.source_ips(),
        "settle_s": o.settle.as_secs_f64(),
        "rss_before_kib": before,
        "rss_conns_kib": with_conns,
        "rss_subs_kib": with_subs,
        "kib_per_conn": kib_per_conn,
        "subscriptions": subs,
        "bytes_per_sub": bytes_per_sub,
        "subscribe_s": round3(subscribe_s),
        "subscribes_per_s": round1(subs as f64 / subscribe_s.max(1e-9)),
        // Connections whose subscribing failed or went unanswered: losses for the report.
        "failed": failed.get() + timed_out,
        "first_error": first_error.borrow().clone(),
        "closed_while_idle": closed.get(),
    });
    merge(&mut result, summary);
    for task in tasks {
        task.abort();
    }
    Ok(result)
}
