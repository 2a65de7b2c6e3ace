//! Cross-node fan-out through Redis, beside the single-node figure.
//!
//! `cargo xtask bench` runs it (or `cargo bench -p server --bench redis_fanout`). It needs
//! `redis-server` on `PATH` (`cargo xtask test` installs it) and starts everything itself on
//! loopback ports: one `redis-server`, then for each case the `wshub` nodes, `CLIENTS`
//! WebSocket clients spread over the nodes, and four publishing connections per node that
//! send their share of `MESSAGES` as fast as they can (client publishes, one project).
//!
//! Reported per case: wall time from the first publish to the last delivery, deliveries per
//! second (messages × clients / time), and the publish → delivery latency (p50, p99).
//! Knobs: `WSHUB_BENCH_CLIENTS` (default 200) and `WSHUB_BENCH_MESSAGES` (default 2000);
//! `-- --json` prints one JSON object per case instead of the table.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use ws_auth::{Claims, JwtSigner};

const SECRET: &str = "bench-secret-0123456789abcdef";
const PROJECT: &str = "bench";
/// Publishing connections per node: one connection's publishes are sequential (each waits
/// for its `ack`), so the load comes from several, as from many clients.
const PUBLISHERS_PER_NODE: usize = 4;

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_redis(dir: &Dir) -> (Proc, u16) {
    for _ in 0..20 {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (`cargo xtask test` installs it)");
        let mut child = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.0.try_wait() {
                break;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0) {
                    return (child, port);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("redis-server did not start");
}

fn start_wshub(dir: &Dir, name: &str, broker: &str) -> (Proc, SocketAddr) {
    let config = dir.0.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"info\"\n\n\
             [auth]\nhs256_secrets = [\"{SECRET}\"]\n\n\
             [limits]\nclient_publish_rate = 1000000\nsend_queue_frames = 1000000\nsend_queue_bytes = 1000000000\nmax_connections_per_user = 100000\nhandshake_rate_per_ip = 1000000\n\n\
             {broker}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "listening"
            {
                let _ = tx.send(v["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("wshub did not start");
    (Proc(child), addr)
}

async fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let mut out = String::new();
            let asked =
                s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            if asked.is_ok()
                && s.read_to_string(&mut out).is_ok()
                && out.starts_with("HTTP/1.1 200")
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{addr} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr, user: &str) -> Ws {
    let token = JwtSigner::hs256(SECRET)
        .sign(&Claims::new(user, [PROJECT], Duration::from_secs(3600)))
        .unwrap();
    let mut request = format!("ws://{addr}/ws/projects/{PROJECT}")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let welcome = ws.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains("welcome"));
    ws
}

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

struct Figures {
    elapsed: Duration,
    deliveries: usize,
    p50: Duration,
    p99: Duration,
}

/// `clients` members spread over `nodes`, one publisher per node; every member must get
/// every message.
async fn run_case(nodes: &[SocketAddr], clients: usize, messages: usize) -> Figures {
    for node in nodes {
        wait_ready(*node).await;
    }
    let mut readers = Vec::new();
    let last_delivery = Arc::new(std::sync::Mutex::new(Instant::now()));
    let received = Arc::new(AtomicUsize::new(0));
    for i in 0..clients {
        let ws = connect(nodes[i % nodes.len()], &format!("member-{i}")).await;
        let last = Arc::clone(&last_delivery);
        let received = Arc::clone(&received);
        readers.push(tokio::spawn(async move {
            let (_sink, mut stream) = ws.split();
            let mut latencies = Vec::with_capacity(messages);
            while latencies.len() < messages {
                let Some(Ok(Message::Text(text))) = stream.next().await else {
                    panic!("member {i} lost its connection");
                };
                if !text.as_str().starts_with(r#"{"type":"message""#) {
                    continue;
                }
                let now = micros();
                let frame: Value = serde_json::from_str(&text).unwrap();
                latencies.push(now.saturating_sub(frame["data"]["t"].as_u64().unwrap()));
                received.fetch_add(1, Ordering::Relaxed);
            }
            *last.lock().unwrap() = Instant::now();
            latencies
        }));
    }
    let mut publishers = Vec::new();
    for p in 0..nodes.len() * PUBLISHERS_PER_NODE {
        publishers.push(connect(nodes[p % nodes.len()], &format!("publisher-{p}")).await);
    }
    let started = Instant::now();
    let share = messages / publishers.len();
    let extra = messages - share * publishers.len();
    let sends = publishers.into_iter().enumerate().map(|(n, ws)| {
        let count = if n == 0 { share + extra } else { share };
        tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let drain = tokio::spawn(async move { while stream.next().await.is_some() {} });
            for _ in 0..count {
                let frame = json!({"type": "publish", "data": {"t": micros()}}).to_string();
                sink.feed(Message::text(frame)).await.unwrap();
            }
            sink.flush().await.unwrap();
            (sink, drain)
        })
    });
    let mut keep = Vec::new();
    for send in sends {
        keep.push(send.await.unwrap());
    }
    let mut latencies = Vec::with_capacity(clients * messages);
    for reader in readers {
        let got = tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .expect("deliveries stalled")
            .unwrap();
        latencies.extend(got);
    }
    let elapsed = last_delivery.lock().unwrap().duration_since(started);
    drop(keep);
    latencies.sort_unstable();
    let at = |q: f64| Duration::from_micros(latencies[((latencies.len() - 1) as f64 * q) as usize]);
    Figures {
        elapsed,
        deliveries: received.load(Ordering::Relaxed),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to list
    }
    // `--json`: one JSON object per case instead of the table (for `cargo xtask bench`).
    let json = std::env::args().any(|a| a == "--json");
    let clients = env_or("WSHUB_BENCH_CLIENTS", 200);
    let messages = env_or("WSHUB_BENCH_MESSAGES", 2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = Dir(std::env::temp_dir().join(format!("wshub-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let (_redis, port) = start_redis(&dir);
    let redis = format!("[broker]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"");
    if !json {
        print_header(clients, messages);
    }
    let cases: [(&str, usize, &str); 4] = [
        ("1 node, memory broker", 1, ""),
        ("1 node, redis broker", 1, &redis),
        ("2 nodes, redis broker", 2, &redis),
        ("3 nodes, redis broker", 3, &redis),
    ];
    for (c, (name, n, broker)) in cases.into_iter().enumerate() {
        let procs: Vec<(Proc, SocketAddr)> = (0..n)
            .map(|i| start_wshub(&dir, &format!("case{c}-node{i}"), broker))
            .collect();
        let addrs: Vec<SocketAddr> = procs.iter().map(|(_, a)| *a).collect();
        let figures = runtime.block_on(run_case(&addrs, clients, messages));
        assert_eq!(figures.deliveries, clients * messages);
        let per_second = figures.deliveries as f64 / figures.elapsed.as_secs_f64();
        if json {
            // One line per case for `cargo xtask bench`, which takes medians over runs.
            println!(
                "{}",
                json!({
                    "case": name,
                    "nodes": n,
                    "broker": if broker.is_empty() { "memory" } else { "redis" },
                    "clients": clients,
                    "messages": messages,
                    "deliveries": figures.deliveries,
                    "elapsed_ms": figures.elapsed.as_secs_f64() * 1e3,
                    "deliveries_per_s": per_second,
                    "p50_ms": figures.p50.as_secs_f64() * 1e3,
                    "p99_ms": figures.p99.as_secs_f64() * 1e3,
                })
            );
        } else {
            println!(
                "{:<34} {:>10.2?} {:>16.0} {:>10.2?} {:>10.2?}",
                name, figures.elapsed, per_second, figures.p50, figures.p99
            );
        }
        drop(procs);
    }
}

fn print_header(clients: usize, messages: usize) {
    println!(
        "fan-out to {clients} members of one project, {messages} messages (client publishes from {PUBLISHERS_PER_NODE} connections per node), loopback, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:>10} {:>16} {:>10} {:>10}",
        "case", "time", "deliveries/s", "p50", "p99"
    );
}
