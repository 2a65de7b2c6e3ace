//! `wshub-bench`: the load generator of `cargo xtask bench`.
//!
//! It runs one case against one server and prints one JSON line with the results on stdout
//! (progress goes to stderr). It speaks wshub's v1 protocol (`--target wshub`, a JWT on every
//! handshake; `fanout --protocol v2`, `idle-subs` and `sub-churn` speak v2 on `GET /ws`) or plain room broadcast (`--target raw`, the baseline servers of
//! `shared/peers`). It runs on one thread: pin it to a core of its own (`taskset -c 1`), away
//! from the server, and check `generator_cpu_pct` in its output: near 100 means the generator,
//! not the server, set the pace.
//!
//! ```text
//! wshub-bench --addr 127.0.0.1:8080 --server-pid 1234 idle --connections 10000 --projects 100
//! wshub-bench --addr 127.0.0.1:8080 fanout --subscribers 1000 --seconds 5
//! wshub-bench --addr 127.0.0.1:8080 fanout --subscribers 10000 --rate 20 --seconds 10
//! wshub-bench --addr 127.0.0.1:8080 fanout --projects 1000 --subscribers 10 --seconds 5
//! wshub-bench --addr 127.0.0.1:8080 handshake --seconds 5
//! wshub-bench --addr 127.0.0.1:8080 --server-pid 1234 churn --clients 5000 --duration 5m
//! wshub-bench --addr 127.0.0.1:8080 fanout --subscribers 1000 --protocol v2 --ephemeral
//! wshub-bench --addr 127.0.0.1:8080 --server-pid 1234 idle-subs --connections 10000 --subscriptions 20
//! wshub-bench --addr 127.0.0.1:8080 sub-churn --connections 1000 --window 8 --duration 5s
//! ```

mod chaos;
mod churn;
mod conn;
mod fanout;
mod handshake;
mod idle;
mod idle_subs;
mod stats;
mod sub_churn;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::conn::{Endpoint, Protocol, Target, Ws};

#[derive(Debug, Parser)]
#[command(
    name = "wshub-bench",
    version,
    about = "Load generator for wshub and the baseline servers"
)]
struct Cli {
    /// The server's address.
    #[arg(long)]
    addr: SocketAddr,
    /// The protocol to speak.
    #[arg(long, value_enum, default_value = "wshub")]
    target: Target,
    /// The server's process id: its RSS and CPU time are read from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The HS256 secret that signs wshub tokens (`auth.hs256_secrets[0]` of its configuration).
    #[arg(long, env = "WSHUB_BENCH_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Distinct users (and tokens) connections cycle through.
    #[arg(long, default_value_t = 1)]
    users: usize,
    /// Spread connections over this many source addresses 127.0.0.2, .3, …; 0: 64 for
    /// `handshake`, else one per 2 000 connections when there are more than 16 000 (none below).
    #[arg(long, default_value_t = 0)]
    source_ips: usize,
    /// Handshakes in flight while connections are opened.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    #[command(subcommand)]
    case: Case,
}

#[derive(Debug, Subcommand)]
enum Case {
    /// N idle connections over M projects: the server's RSS before and after.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 100)]
        projects: usize,
        /// How long the connections sit idle before the RSS is read: long enough for the
        /// allocator to return what the handshakes left behind (jemalloc's decay is 10 s).
        #[arg(long, default_value = "15s", value_parser = humantime_duration)]
        settle: Duration,
    },
    /// S subscribers in each of P projects and one publisher per project: deliveries per second,
    /// latency from a timestamp in the payload, losses, duplicates, reorders.
    Fanout(fanout::Options),
    /// Open (with a token, for wshub the welcome read) and close with a close frame, in a loop.
    Handshake(handshake::Options),
    /// Waves of clients that connect, publish once each and leave, some by resetting TCP:
    /// losses, and the server's RSS, descriptors and tasks before and after (`cargo xtask soak`).
    Churn(churn::Options),
    /// N v2 connections, then K subscriptions on each: the server's RSS per idle v2
    /// connection and per subscription on top of it.
    IdleSubs(idle_subs::Options),
    /// M v2 connections subscribing and unsubscribing in a loop, a window of requests in
    /// flight each: subscribe + unsubscribe pairs per second.
    SubChurn(sub_churn::Options),
    /// Clients and publishers over several nodes, reconnecting with recovery, all they
    /// receive and are acknowledged written to a trace (`cargo xtask chaos` judges it).
    Chaos(chaos::Options),
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |at| s.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unit of {s:?} is not ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(result) => {
            println!("{result}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wshub-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Value> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let me = std::process::id();
    let generator_cpu = stats::CpuMeter::start(me);
    let mut result = local.block_on(&runtime, async move {
        let protocol = match &cli.case {
            Case::Fanout(o) => o.protocol,
            Case::IdleSubs(_) | Case::SubChurn(_) => Protocol::V2,
            Case::Idle { .. } | Case::Handshake(_) | Case::Churn(_) | Case::Chaos(_) => {
                Protocol::V1
            }
        };
        if protocol == Protocol::V2 && cli.target != Target::Wshub {
            anyhow::bail!("v2 cases are for wshub only (--target wshub)");
        }
        let endpoint = Endpoint::new(cli.addr, cli.target, cli.secret.as_deref(), cli.users)?
            .with_protocol(protocol);
        let wanted = match &cli.case {
            Case::Idle { connections, .. } => *connections,
            Case::Fanout(o) => o.projects * (o.subscribers + 1),
            Case::Handshake(_) => 0,
            Case::Churn(o) => o.clients,
            Case::IdleSubs(o) => o.connections,
            Case::SubChurn(o) => o.connections,
            Case::Chaos(_) => 0,
        };
        if u64::try_from(wanted)? + 16 > limit {
            anyhow::bail!("{wanted} connections need more descriptors than the limit ({limit})");
        }
        let source_ips = match cli.source_ips {
            // Closed connections linger in TIME_WAIT: spread them over addresses.
            0 if matches!(cli.case, Case::Handshake(_) | Case::Churn(_)) => 64,
            0 if wanted > 16_000 => wanted.div_ceil(2_000),
            n => n,
        };
        let endpoint = endpoint.with_source_ips(source_ips);
        let ctx = Ctx {
            endpoint,
            server_pid: cli.server_pid,
            connect_concurrency: cli.connect_concurrency.max(1),
        };
        match cli.case {
            Case::Idle {
                connections,
                projects,
                settle,
            } => idle::run(&ctx, connections, projects.max(1), settle).await,
            Case::Fanout(options) => fanout::run(&ctx, options).await,
            Case::Handshake(options) => handshake::run(&ctx, options).await,
            Case::Churn(options) => churn::run(&ctx, options).await,
            Case::IdleSubs(options) => idle_subs::run(&ctx, options).await,
            Case::SubChurn(options) => sub_churn::run(&ctx, options).await,
            Case::Chaos(options) => chaos::run(options).await,
        }
    })?;
    if let Value::Object(map) = &mut result {
        map.insert("target".to_owned(), json!(cli.target.name()));
        map.insert("users".to_owned(), json!(cli.users));
        map.insert(
            "generator_cpu_pct".to_owned(),
            json!(generator_cpu.percent().map(round1)),
        );
        map.insert(
            "generator_max_rss_kib".to_owned(),
            json!(stats::rss_kib(me)),
        );
    }
    Ok(result)
}

/// What every case needs.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) endpoint: Endpoint,
    pub(crate) server_pid: Option<u32>,
    pub(crate) connect_concurrency: usize,
}

/// Connections opened by [`Ctx::open_many`].
#[derive(Debug)]
pub(crate) struct Opened {
    /// `(index, connection)`, sorted by index.
    pub(crate) conns: Vec<(usize, Ws)>,
    pub(crate) failed: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
}

impl Opened {
    pub(crate) fn summary(&self) -> Value {
        let secs = self.elapsed.as_secs_f64();
        json!({
            "connected": self.conns.len(),
            "connect_failed": self.failed,
            "connect_first_error": self.first_error,
            "connect_s": round3(secs),
            "connects_per_s": round1(if secs > 0.0 { self.conns.len() as f64 / secs } else { 0.0 }),
        })
    }
}

impl Ctx {
    /// Opens connections `0..count`, connection `i` to project `project_of(i)`, with at most
    /// `connect_concurrency` handshakes in flight. Failures are counted, not fatal.
    pub(crate) async fn open_many(
        &self,
        count: usize,
        project_of: impl Fn(usize) -> String,
    ) -> Opened {
        let started = Instant::now();
        let endpoint = &self.endpoint;
        let mut results = futures_util::stream::iter(0..count)
            .map(|i| {
                let project = project_of(i);
                async move { (i, endpoint.open(&project, i).await) }
            })
            .buffer_unordered(self.connect_concurrency);
        let mut conns = Vec::with_capacity(count);
        let mut failed = 0;
        let mut first_error = None;
        let mut last_report = Instant::now();
        while let Some((i, result)) = results.next().await {
            match result {
                Ok(ws) => conns.push((i, ws)),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!("  … {} of {count} connected, {failed} failed", conns.len());
            }
        }
        conns.sort_unstable_by_key(|(i, _)| *i);
        Opened {
            conns,
            failed,
            first_error,
            elapsed: started.elapsed(),
        }
    }

    pub(crate) fn server_rss(&self) -> Option<u64> {
        self.server_pid.and_then(stats::rss_kib)
    }

    pub(crate) fn server_cpu(&self) -> Option<stats::CpuMeter> {
        self.server_pid.map(stats::CpuMeter::start)
    }
}

pub(crate) fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub(crate) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Milliseconds from microseconds, to 0.001 ms.
pub(crate) fn ms(micros: u64) -> f64 {
    round3(micros as f64 / 1000.0)
}
