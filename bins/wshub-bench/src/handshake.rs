//! `handshake`: workers that open a connection (TCP, upgrade with a token, for wshub the
//! welcome), close it with a close frame and wait for the server's answer, in a loop.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::conn::Ws;
use crate::stats::Histogram;
use crate::{Ctx, humantime_duration, ms, round1, round3};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Connections opened and closed at the same time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    duration: Duration,
    /// Stop after this many cycles (0: only `--duration` stops).
    #[arg(long, default_value_t = 0)]
    cycles: u64,
}

#[derive(Default)]
struct Counts {
    started: Cell<u64>,
    completed: Cell<u64>,
    /// Completed cycles whose close was answered with a close frame.
    close_frames: Cell<u64>,
    failed: Cell<u64>,
    first_error: RefCell<Option<String>>,
    /// From `connect` to the welcome (wshub) or the 101 (raw).
    open: RefCell<Histogram>,
    /// From sending the close frame to the end of the connection.
    close: RefCell<Histogram>,
}

/// One cycle; `Ok(true)` when the server answered the close with a close frame.
async fn cycle(ctx: &Ctx, index: usize, counts: &Counts) -> anyhow::Result<bool> {
    let started = Instant::now();
    let mut ws = ctx.endpoint.open("handshake", index).await?;
    let opened = Instant::now();
    counts.open.borrow_mut().record(micros(opened - started));
    let result = close(ctx, &mut ws).await;
    counts.close.borrow_mut().record(micros(opened.elapsed()));
    result
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Sends a close frame and reads until the server ends the connection.
async fn close(ctx: &Ctx, ws: &mut Ws) -> anyhow::Result<bool> {
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await?;
    let mut answered = false;
    let deadline = tokio::time::Instant::now() + ctx.endpoint.timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => anyhow::bail!("no end of the connection in time after the close"),
            Ok(Some(Ok(Message::Close(_)))) => answered = true,
            Ok(Some(Ok(_))) => {}
            // The end of the stream, a reset, or tungstenite's "already closed".
            Ok(Some(Err(_)) | None) => return Ok(answered),
        }
    }
}

pub(crate) async fn run(ctx: &Ctx, o: Options) -> anyhow::Result<Value> {
    let concurrency = o.concurrency.max(1);
    eprintln!(
        "handshake: {concurrency} in flight, {:?}, {} source address(es)",
        o.duration,
        ctx.endpoint.source_ips().max(1)
    );
    let counts = Rc::new(Counts::default());
    let server_cpu = ctx.server_cpu();
    let cores = crate::stats::CoreMeter::start();
    let started = Instant::now();
    let end = started + o.duration;
    let worker = |counts: Rc<Counts>| async move {
        loop {
            let index = counts.started.get();
            if Instant::now() >= end || (o.cycles != 0 && index >= o.cycles) {
                break;
            }
            counts.started.set(index + 1);
            #[allow(clippy::cast_possible_truncation)]
            match cycle(ctx, index as usize, &counts).await {
                Ok(answered) => {
                    counts.completed.set(counts.completed.get() + 1);
                    if answered {
                        counts.close_frames.set(counts.close_frames.get() + 1);
                    }
                }
                Err(e) => {
                    counts.failed.set(counts.failed.get() + 1);
                    counts
                        .first_error
                        .borrow_mut()
                        .get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    };
    futures_util::future::join_all((0..concurrency).map(|_| worker(Rc::clone(&counts)))).await;
    let elapsed = started.elapsed().as_secs_f64();
    let completed = counts.completed.get();
    let server_cpu_pct = server_cpu.and_then(|m| m.percent());
    let busy = cores.busy_percent();
    let rate = completed as f64 / elapsed.max(1e-9);
    Ok(json!({
        "case": "handshake",
        "concurrency": concurrency,
        "source_ips": ctx.endpoint.source_ips(),
        "cycles": completed,
        "failed": counts.failed.get(),
        "first_error": counts.first_error.borrow().clone(),
        "elapsed_s": round3(elapsed),
        "handshakes_per_s": round1(rate),
        "close_frames": counts.close_frames.get(),
        "close_frame_share": if completed == 0 { 0.0 } else { round3(counts.close_frames.get() as f64 / completed as f64) },
        "open_p50_ms": ms(counts.open.borrow().quantile(0.5)),
        "open_p99_ms": ms(counts.open.borrow().quantile(0.99)),
        "close_p50_ms": ms(counts.close.borrow().quantile(0.5)),
        "close_p99_ms": ms(counts.close.borrow().quantile(0.99)),
        "server_cpu_pct": server_cpu_pct.map(round1),
        "handshakes_per_server_cpu_s": server_cpu_pct
            .filter(|pct| *pct > 0.0)
            .map(|pct| round1(rate / (pct / 100.0))),
        "cpu0_busy_pct": busy.first().copied().map(round1),
        "cpu1_busy_pct": busy.get(1).copied().map(round1),
    }))
}
