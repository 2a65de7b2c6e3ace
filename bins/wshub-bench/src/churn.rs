//! `churn`: clients connecting, publishing and leaving in waves, some of them dropping TCP
//! abruptly, with the server's resources read before and after (`cargo xtask soak`).
//!
//! Each wave opens `--clients` connections, `--per-project` to a project. Once all of them
//! are in (their welcome read), each publishes one message `"churn:<wave>:<client>"` and
//! reads until it has its ack and the message of every connected client of its project,
//! itself included: a missing one is lost, a second copy a duplicate. Then the wave leaves:
//! `--abort-pct` percent of the clients reset their TCP connection (`SO_LINGER` 0, no close
//! frame), the others send a close frame and wait for the server's. The next wave starts
//! when every client of this one is gone.
//!
//! A warm-up wave runs first; `--settle` after it, the server's RSS, open descriptors and
//! live tokio tasks (`wshub_runtime_tasks_alive` of `/metrics`) are the baseline. Waves then
//! run for `--duration`, and `--settle` after the last one the same figures are read again.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::Ws;
use crate::{Ctx, humantime_duration, round1, round3};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Clients per wave.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) clients: usize,
    /// Clients per project: each client receives this many publishes per wave.
    #[arg(long, default_value_t = 20)]
    per_project: usize,
    /// Percent of each wave's clients that leave by resetting TCP, without a close frame.
    #[arg(long, default_value_t = 10)]
    abort_pct: usize,
    /// How long to keep starting waves after the warm-up wave.
    #[arg(long, default_value = "5m", value_parser = humantime_duration)]
    duration: Duration,
    /// The pause after the warm-up wave and after the last wave before the server's
    /// resources are read (the allocator returns memory after ~10 s).
    #[arg(long, default_value = "15s", value_parser = humantime_duration)]
    settle: Duration,
    /// How long a client waits for its project's publishes and its ack.
    #[arg(long, default_value = "30s", value_parser = humantime_duration)]
    deliver_timeout: Duration,
    /// How long a closing client waits for the server's close frame.
    #[arg(long, default_value = "10s", value_parser = humantime_duration)]
    close_timeout: Duration,
    /// Publishes per project before the warm-up wave, so that each project's history is
    /// full (the server keeps `history.size`, 1 000 by default) before the baseline: the
    /// messages retained would otherwise read as growth. 0: none.
    #[arg(long, default_value_t = 1_000)]
    fill_history: usize,
}

/// One client's view of its wave.
#[derive(Debug, Default)]
struct ClientReport {
    received: u64,
    duplicates: u64,
    acked: bool,
    /// The server ended the connection (or it failed) before the client was done.
    ended_early: bool,
    aborted: bool,
    /// The close handshake completed (the server's close frame arrived).
    closed_clean: bool,
    close_timed_out: bool,
    first_error: Option<String>,
}

/// Totals over waves.
#[derive(Debug, Default)]
struct Totals {
    waves: u64,
    clients: u64,
    connected: u64,
    connect_failed: u64,
    expected: u64,
    delivered: u64,
    duplicates: u64,
    acks_missing: u64,
    ended_early: u64,
    aborted: u64,
    closed_clean: u64,
    close_timeouts: u64,
    first_error: Option<String>,
    slowest_wave: Duration,
}

impl Totals {
    fn json(&self) -> Value {
        json!({
            "waves": self.waves,
            "clients": self.clients,
            "connected": self.connected,
            "connect_failed": self.connect_failed,
            "expected_deliveries": self.expected,
            "delivered": self.delivered,
            "lost": self.expected.saturating_sub(self.delivered),
            "duplicates": self.duplicates,
            "acks_missing": self.acks_missing,
            "ended_early": self.ended_early,
            "aborted": self.aborted,
            "closed_clean": self.closed_clean,
            "close_timeouts": self.close_timeouts,
            "first_error": self.first_error,
            "slowest_wave_s": round3(self.slowest_wave.as_secs_f64()),
        })
    }
}

/// What the server holds: read from /proc and its `/metrics`.
#[derive(Debug, Clone, Copy)]
struct Resources {
    rss_kib: Option<u64>,
    fds: Option<u64>,
    tasks: Option<u64>,
}

impl Resources {
    fn json(self) -> Value {
        json!({ "rss_kib": self.rss_kib, "fds": self.fds, "tasks": self.tasks })
    }
}

pub(crate) async fn run(ctx: &Ctx, o: Options) -> anyhow::Result<Value> {
    let Some(pid) = ctx.server_pid else {
        bail!("churn needs --server-pid to read the server's resources");
    };
    let per_project = o.per_project.max(1);
    eprintln!(
        "churn: waves of {} clients ({per_project} per project, {}% reset), for {:?}, \
         {} source address(es)",
        o.clients,
        o.abort_pct,
        o.duration,
        ctx.endpoint.source_ips().max(1)
    );
    let idle = resources(ctx, pid).await;

    let projects = o.clients.div_ceil(per_project);
    if o.fill_history > 0 {
        let started = Instant::now();
        fill_history(ctx, projects, o.fill_history)
            .await
            .context("filling the projects' history")?;
        eprintln!(
            "churn: {} publishes to each of {projects} projects in {:.1} s (history full)",
            o.fill_history,
            started.elapsed().as_secs_f64()
        );
    }

    let mut warmup = Totals::default();
    wave(ctx, &o, 0, &mut warmup).await;
    eprintln!("churn: warm-up wave done; settling {:?}", o.settle);
    tokio::time::sleep(o.settle).await;
    let before = resources(ctx, pid).await;
    eprintln!("churn: baseline {before:?}");

    let mut totals = Totals::default();
    let started = Instant::now();
    let mut last_report = Instant::now();
    while started.elapsed() < o.duration {
        wave(ctx, &o, totals.waves + 1, &mut totals).await;
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!(
                "  … {} waves, {} clients, {} lost, {} duplicates, {} failed to connect",
                totals.waves,
                totals.clients,
                totals.expected.saturating_sub(totals.delivered),
                totals.duplicates,
                totals.connect_failed
            );
        }
    }
    let churn_s = started.elapsed().as_secs_f64();
    eprintln!(
        "churn: {} waves in {churn_s:.0} s; settling {:?}",
        totals.waves, o.settle
    );
    tokio::time::sleep(o.settle).await;
    let after = resources(ctx, pid).await;
    eprintln!("churn: after {after:?}");

    let mut result = totals.json();
    if let Value::Object(map) = &mut result {
        map.insert("case".to_owned(), json!("churn"));
        map.insert("clients_per_wave".to_owned(), json!(o.clients));
        map.insert("per_project".to_owned(), json!(per_project));
        map.insert("abort_pct".to_owned(), json!(o.abort_pct));
        map.insert("fill_history".to_owned(), json!(o.fill_history));
        map.insert("churn_s".to_owned(), json!(round1(churn_s)));
        map.insert("settle_s".to_owned(), json!(o.settle.as_secs_f64()));
        map.insert("source_ips".to_owned(), json!(ctx.endpoint.source_ips()));
        map.insert(
            "connections_per_s".to_owned(),
            json!(round1(totals.connected as f64 / churn_s.max(0.001))),
        );
        map.insert("server_idle".to_owned(), idle.json());
        map.insert("server_before".to_owned(), before.json());
        map.insert("server_after".to_owned(), after.json());
        map.insert("warmup".to_owned(), warmup.json());
    }
    Ok(result)
}

/// Publishes `count` messages to each of `projects` projects from one connection each, in
/// batches of 100 acknowledged before the next (the server's send queue holds 1 024 frames).
async fn fill_history(ctx: &Ctx, projects: usize, count: usize) -> anyhow::Result<()> {
    const BATCH: usize = 100;
    let opened = ctx.open_many(projects, |p| format!("churn-{p}")).await;
    if opened.failed > 0 {
        bail!(
            "{} of {projects} connections failed: {}",
            opened.failed,
            opened.first_error.unwrap_or_default()
        );
    }
    let tasks: Vec<_> = opened
        .conns
        .into_iter()
        .map(|(p, mut ws)| {
            tokio::task::spawn_local(async move {
                let mut sent = 0;
                while sent < count {
                    let batch = BATCH.min(count - sent);
                    for n in sent..sent + batch {
                        let frame =
                            format!(r#"{{"type":"publish","id":"f{n}","data":"fill:{p}:{n}"}}"#);
                        ws.feed(Message::text(frame)).await?;
                    }
                    ws.flush().await?;
                    sent += batch;
                    let mut acks = 0;
                    while acks < batch {
                        match ws.next().await {
                            Some(Ok(Message::Text(t))) if t.contains(r#""type":"ack""#) => {
                                acks += 1
                            }
                            Some(Ok(Message::Close(frame))) => {
                                bail!("closed while filling: {frame:?}")
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(e.into()),
                            None => bail!("the stream ended while filling"),
                        }
                    }
                }
                ws.close(None).await?;
                while let Some(Ok(_)) = ws.next().await {}
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// One wave: connect all, publish once each, collect, leave.
async fn wave(ctx: &Ctx, o: &Options, wave: u64, totals: &mut Totals) {
    let started = Instant::now();
    let per_project = o.per_project.max(1);
    let opened = ctx
        .open_many(o.clients, |i| format!("churn-{}", i / per_project))
        .await;
    totals.waves += 1;
    totals.clients += o.clients as u64;
    totals.connected += opened.conns.len() as u64;
    totals.connect_failed += opened.failed as u64;
    if totals.first_error.is_none() {
        totals.first_error.clone_from(&opened.first_error);
    }
    // Who is in each project this wave: every one of them receives every one's publish.
    let mut members: BTreeMap<usize, u64> = BTreeMap::new();
    for (i, _) in &opened.conns {
        *members.entry(i / per_project).or_default() += 1;
    }
    totals.expected += members.values().map(|n| n * n).sum::<u64>();
    let deadline = tokio::time::Instant::now() + o.deliver_timeout;
    let close_timeout = o.close_timeout;
    let tasks: Vec<_> = opened
        .conns
        .into_iter()
        .map(|(i, ws)| {
            let expected = members[&(i / per_project)];
            let abort = i % 100 < o.abort_pct;
            tokio::task::spawn_local(client(
                ws,
                wave,
                i,
                expected,
                abort,
                deadline,
                close_timeout,
            ))
        })
        .collect();
    for task in tasks {
        let report = match task.await {
            Ok(report) => report,
            Err(e) => ClientReport {
                ended_early: true,
                first_error: Some(format!("client task: {e}")),
                ..ClientReport::default()
            },
        };
        totals.delivered += report.received;
        totals.duplicates += report.duplicates;
        totals.acks_missing += u64::from(!report.acked);
        totals.ended_early += u64::from(report.ended_early);
        totals.aborted += u64::from(report.aborted);
        totals.closed_clean += u64::from(report.closed_clean);
        totals.close_timeouts += u64::from(report.close_timed_out);
        if totals.first_error.is_none() {
            totals.first_error = report.first_error;
        }
    }
    totals.slowest_wave = totals.slowest_wave.max(started.elapsed());
}

/// Client `index` of `wave`: publish, collect `expected` messages and the ack, then leave.
async fn client(
    mut ws: Ws,
    wave: u64,
    index: usize,
    expected: u64,
    abort: bool,
    deadline: tokio::time::Instant,
    close_timeout: Duration,
) -> ClientReport {
    let mut report = ClientReport::default();
    let id = format!("{wave}-{index}");
    let publish = format!(r#"{{"type":"publish","id":"{id}","data":"churn:{wave}:{index}"}}"#);
    if let Err(e) = ws.send(Message::text(publish)).await {
        report.ended_early = true;
        report.first_error = Some(format!("publishing: {e}"));
        return report;
    }
    let ack = format!(r#""id":"{id}""#);
    let mut seen: HashSet<u64> = HashSet::new();
    while !(report.acked && seen.len() as u64 >= expected) {
        let Ok(next) = tokio::time::timeout_at(deadline, ws.next()).await else {
            report.first_error.get_or_insert_with(|| {
                format!(
                    "client {index} of wave {wave}: {} of {expected} messages, ack {}, \
                     after the deliver timeout",
                    seen.len(),
                    report.acked
                )
            });
            break;
        };
        match next {
            Some(Ok(Message::Text(text))) => {
                if let Some(sender) = churn_sender(&text, wave) {
                    if !seen.insert(sender) {
                        report.duplicates += 1;
                    }
                } else if text.contains(r#""type":"ack""#) && text.contains(&ack) {
                    report.acked = true;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                report.ended_early = true;
                report.first_error = Some(format!("closed by the server: {frame:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                report.ended_early = true;
                report.first_error = Some(format!("reading: {e}"));
                break;
            }
            None => {
                report.ended_early = true;
                report.first_error = Some("the stream ended".to_owned());
                break;
            }
        }
    }
    report.received = seen.len() as u64;
    if report.ended_early {
        return report;
    }
    if abort {
        // RST instead of FIN: the kernel discards the socket at once, no close frame.
        report.aborted = ws.get_ref().set_zero_linger().is_ok();
        drop(ws);
        return report;
    }
    if ws.close(None).await.is_err() {
        report.close_timed_out = true;
        return report;
    }
    let closing = async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(_)) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };
    match tokio::time::timeout(close_timeout, closing).await {
        Ok(clean) => report.closed_clean = clean,
        Err(_) => report.close_timed_out = true,
    }
    report
}

/// The sender of a `message` frame of `wave` (`"churn:<wave>:<client>"` in its data).
fn churn_sender(text: &str, wave: u64) -> Option<u64> {
    if !text.contains(r#""type":"message""#) {
        return None;
    }
    let at = text.find("\"churn:")?;
    let mut fields = text[at + 7..].splitn(3, [':', '"']);
    let w: u64 = fields.next()?.parse().ok()?;
    let sender = fields.next()?.parse().ok()?;
    (w == wave).then_some(sender)
}

async fn resources(ctx: &Ctx, pid: u32) -> Resources {
    let rss_kib = ctx.server_rss();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|dir| dir.count() as u64);
    let tasks = match scrape_tasks(ctx).await {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("churn: no task count from /metrics: {e:#}");
            None
        }
    };
    Resources {
        rss_kib,
        fds,
        tasks,
    }
}

/// `wshub_runtime_tasks_alive` from the server's `/metrics`, over a plain HTTP/1.1 request.
async fn scrape_tasks(ctx: &Ctx) -> anyhow::Result<u64> {
    let mut stream = tokio::net::TcpStream::connect(ctx.endpoint.addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: wshub\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut body))
        .await
        .context("reading /metrics")??;
    body.lines()
        .find_map(|l| l.strip_prefix("wshub_runtime_tasks_alive "))
        .context("no wshub_runtime_tasks_alive in /metrics")?
        .trim()
        .parse()
        .context("parsing wshub_runtime_tasks_alive")
}

#[cfg(test)]
mod tests {
    use super::churn_sender;

    #[test]
    fn finds_the_sender_of_this_wave() {
        let frame =
            r#"{"type":"message","offset":3,"from":"bench-0","data":"churn:7:1234","ts":1}"#;
        assert_eq!(churn_sender(frame, 7), Some(1234));
        assert_eq!(churn_sender(frame, 8), None);
        assert_eq!(churn_sender(r#"{"type":"ack","id":"7-1234"}"#, 7), None);
    }
}
