//! `idle`: N connections over M projects that only answer pings; what each one costs the
//! server in resident memory.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use anyhow::bail;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::{Ctx, round3};

pub(crate) async fn run(
    ctx: &Ctx,
    connections: usize,
    projects: usize,
    settle: Duration,
) -> anyhow::Result<Value> {
    if ctx.server_pid.is_none() {
        bail!("idle needs --server-pid to read the server's RSS");
    }
    // The server has just started: let it finish its own start-up allocations.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ctx.server_rss();
    eprintln!(
        "idle: {connections} connections over {projects} projects, {} source address(es)",
        ctx.endpoint.source_ips().max(1)
    );
    let opened = ctx
        .open_many(connections, |i| format!("idle-{}", i % projects))
        .await;
    let connected = opened.conns.len();
    let summary = opened.summary();
    // Each connection reads on (answering pings) until the server ends it.
    let closed = Rc::new(Cell::new(0_usize));
    let mut tasks = Vec::with_capacity(connected);
    for (_, mut ws) in opened.conns {
        let closed = Rc::clone(&closed);
        tasks.push(tokio::task::spawn_local(async move {
            while let Some(Ok(_)) = ws.next().await {}
            closed.set(closed.get() + 1);
        }));
    }
    // RSS two seconds after the last connection (handshake leftovers included), then at the
    // end of the settle time (the steady state, which is what is reported).
    let early_at = Duration::from_secs(2).min(settle);
    tokio::time::sleep(early_at).await;
    let early = ctx.server_rss();
    tokio::time::sleep(settle - early_at).await;
    let after = ctx.server_rss();
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if connected > 0 => {
            Some(round3((a.saturating_sub(b)) as f64 / connected as f64))
        }
        _ => None,
    };
    let mut result = json!({
        "case": "idle",
        "connections": connections,
        "projects": projects,
        "source_ips": ctx.endpoint.source_ips(),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": per_conn,
        "settle_s": settle.as_secs_f64(),
        "rss_2s_kib": early,
        "kib_per_conn_2s": match (before, early) {
            (Some(b), Some(a)) if connected > 0 => Some(round3((a.saturating_sub(b)) as f64 / connected as f64)),
            _ => None,
        },
        "closed_while_idle": closed.get(),
    });
    merge(&mut result, summary);
    for task in tasks {
        task.abort();
    }
    Ok(result)
}

/// Adds the fields of `extra` to `into`.
pub(crate) fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        into.extend(extra);
    }
}
