//! Cross-node fan-out through Redis, beside the single-node figure.
//!
//! `cargo xtask bench` runs it (or `cargo bench -p server --bench redis_fanout`). It needs
//! `redis-server` on `PATH` (`cargo xtask test` installs it) and starts everything itself on
//! loopback ports: one `redis-server`, then for each case the `wshub` nodes, `CLIENTS`
//! WebSocket clients spread over the nodes, and four publishing connections per node that
//! send their share of `MESSAGES` as fast as they can (client publishes, one project).
//!
//! Reported per case: wall time from the first publish to the last delivery, deliveries per
//! second (messages × clients / time), the publish → delivery latency (p50, p99), and the CPU
//! time every `redis-server` spent from the first publish to the last delivery (`INFO cpu`
//! before and after), with what it sent: one message per subscribing *node* and project.
//! Knobs: `WSHUB_BENCH_CLIENTS` (default 200) and `WSHUB_BENCH_MESSAGES` (default 2000);
//! `-- --json` prints one JSON object per case instead of the table.
//!
//! `-- --cluster` runs the cluster configurations instead: a Redis Cluster of three masters
//! (no replicas), 1, 2 and 3 nodes, and one project per shard (project ids picked by `CLUSTER
//! KEYSLOT`), the members and publishers spread over nodes and projects so that every node
//! subscribes to every shard. It needs `redis-cli` too (`redis-cli --cluster create`).
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
/// The project of the one-`redis-server` cases.
const PROJECT: &str = "bench";
/// The masters of the cluster cases: one project per master.
const SHARDS: usize = 3;
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
    start_redis_with(&dir.0, &[])
}

/// A `redis-server` on a free port of its own, with `args` after the defaults.
fn start_redis_with(dir: &std::path::Path, args: &[&str]) -> (Proc, u16) {
    std::fs::create_dir_all(dir).unwrap();
    for _ in 0..20 {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(dir)
            .args(args)
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

async fn connect(addr: SocketAddr, user: &str, project: &str) -> Ws {
    let token = JwtSigner::hs256(SECRET)
        .sign(&Claims::new(user, [project], Duration::from_secs(3600)))
        .unwrap();
    let mut request = format!("ws://{addr}/ws/projects/{project}")
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

/// One inline command to the Redis on `port`, its reply as text (a bulk or simple string, or
/// an integer); anything else (an error) panics, as a bench has nobody to report to.
fn command(port: u16, line: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    match head.as_bytes().first() {
        Some(b'$') => {
            let len: usize = head[1..].trim().parse().unwrap();
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).unwrap();
            String::from_utf8_lossy(&body[..len]).into_owned()
        }
        Some(b'+' | b':') => head[1..].trim().to_owned(),
        _ => panic!(
            "redis on port {port} answered `{line}` with `{}`",
            head.trim()
        ),
    }
}

/// The CPU time of a `redis-server` so far, in seconds: `used_cpu_sys + used_cpu_user`
/// (every thread), and the same of its main thread when `INFO` has it (Redis ≥ 7.0).
#[derive(Debug, Clone, Copy)]
struct Cpu {
    all: f64,
    main: Option<f64>,
}

fn redis_cpu(port: u16) -> Cpu {
    let info = command(port, "INFO cpu");
    let field = |name: &str| {
        info.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    Cpu {
        all: field("used_cpu_sys").expect("INFO cpu has used_cpu_sys")
            + field("used_cpu_user").expect("INFO cpu has used_cpu_user"),
        main: field("used_cpu_sys_main_thread")
            .zip(field("used_cpu_user_main_thread"))
            .map(|(sys, user)| sys + user),
    }
}

/// A Redis Cluster of [`SHARDS`] masters and no replicas (on two cores a replica would take
/// CPU from the masters whose throughput is measured); the masters' ports, once every one
/// says `cluster_state:ok`.
fn start_cluster(dir: &Dir) -> Vec<(Proc, u16)> {
    let nodes: Vec<(Proc, u16)> = (0..SHARDS)
        .map(|i| {
            let bus = free_port().to_string();
            start_redis_with(
                &dir.0.join(format!("shard{i}")),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                ],
            )
        })
        .collect();
    let mut create = Command::new("redis-cli");
    create.args(["--cluster", "create"]);
    for (_, port) in &nodes {
        create.arg(format!("127.0.0.1:{port}"));
    }
    let out = create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli on PATH (it comes with redis-server)");
    assert!(
        out.status.success(),
        "redis-cli --cluster create failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !nodes
        .iter()
        .all(|(_, port)| command(*port, "CLUSTER INFO").contains("cluster_state:ok"))
    {
        assert!(
            Instant::now() < deadline,
            "the cluster did not settle within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes
}

/// One project per master, in the order of `masters`: the first `bench-N` whose hash slot
/// (`CLUSTER KEYSLOT`; every key and the channel of a project carry its id as their hash tag)
/// the master serves.
fn project_per_master(masters: &[u16]) -> Vec<String> {
    let nodes = command(masters[0], "CLUSTER NODES");
    let slots_of = |port: u16| -> Vec<(u16, u16)> {
        nodes
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|f| {
                f.get(1)
                    .and_then(|a| a.split('@').next()?.rsplit(':').next())
                    .is_some_and(|p| p == port.to_string())
            })
            .expect("every master is in CLUSTER NODES")
            .iter()
            .skip(8)
            .filter_map(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect()
    };
    masters
        .iter()
        .map(|&port| {
            let slots = slots_of(port);
            (0..10_000)
                .map(|i| format!("bench-{i}"))
                .find(|name| {
                    let slot: u16 = command(masters[0], &format!("CLUSTER KEYSLOT {name}"))
                        .parse()
                        .unwrap();
                    slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
                })
                .expect("a project id on every master")
        })
        .collect()
}

/// What one project (and the Redis it lives on) carried in a case.
struct Share {
    /// Messages published to the project.
    messages: usize,
    /// Its members, over all nodes.
    members: usize,
    /// The nodes with a member of it: Redis sends each message once to each of them.
    subscribing_nodes: usize,
    /// CPU seconds of its Redis (`None` on the memory broker).
    cpu: Option<f64>,
    main_thread_cpu: Option<f64>,
}

struct Figures {
    elapsed: Duration,
    deliveries: usize,
    p50: Duration,
    p99: Duration,
    /// One per project, in the order of the projects (and of the Redis ports).
    shares: Vec<Share>,
}

/// `clients` members spread over `nodes` and `projects` (member i on node i mod nodes, in
/// project (i div nodes) mod projects, so every node has members of every project), and
/// per node [`PUBLISHERS_PER_NODE`] publishers spread over the projects likewise; every
/// member must get every message of its project. `redis[p]` is the port of project p's
/// Redis (none on the memory broker): its CPU time is read just before the first publish
/// and after the last delivery.
async fn run_case(
    nodes: &[SocketAddr],
    projects: &[String],
    redis: &[u16],
    clients: usize,
    messages: usize,
) -> Figures {
    for node in nodes {
        wait_ready(*node).await;
    }
    let n = nodes.len();
    let p = projects.len();
    // Publishers: (node, project), as many for every project on every node.
    let per_pair = PUBLISHERS_PER_NODE.div_ceil(p);
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|node| {
            (0..p).flat_map(move |project| (0..per_pair).map(move |_| (node, project)))
        })
        .collect();
    let share = messages / pairs.len();
    let extra = messages - share * pairs.len();
    let counts: Vec<usize> = (0..pairs.len())
        .map(|i| if i == 0 { share + extra } else { share })
        .collect();
    let mut sent = vec![0; p];
    for (&(_, project), count) in pairs.iter().zip(&counts) {
        sent[project] += count;
    }
    let member = |i: usize| (i % n, (i / n) % p);
    let mut members = vec![0; p];
    let mut on_node = vec![vec![false; n]; p];
    for i in 0..clients {
        let (node, project) = member(i);
        members[project] += 1;
        on_node[project][node] = true;
    }

    let mut readers = Vec::new();
    let last_delivery = Arc::new(std::sync::Mutex::new(Instant::now()));
    let received = Arc::new(AtomicUsize::new(0));
    for i in 0..clients {
        let (node, project) = member(i);
        let ws = connect(nodes[node], &format!("member-{i}"), &projects[project]).await;
        let last = Arc::clone(&last_delivery);
        let received = Arc::clone(&received);
        let expected = sent[project];
        readers.push(tokio::spawn(async move {
            let (_sink, mut stream) = ws.split();
            let mut latencies = Vec::with_capacity(expected);
            while latencies.len() < expected {
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
    for (i, &(node, project)) in pairs.iter().enumerate() {
        publishers.push(connect(nodes[node], &format!("publisher-{i}"), &projects[project]).await);
    }
    let cpu_before: Vec<Cpu> = redis.iter().map(|port| redis_cpu(*port)).collect();
    let started = Instant::now();
    let sends = publishers.into_iter().zip(counts).map(|(ws, count)| {
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
    let cpu_after: Vec<Cpu> = redis.iter().map(|port| redis_cpu(*port)).collect();
    drop(keep);
    latencies.sort_unstable();
    let at = |q: f64| Duration::from_micros(latencies[((latencies.len() - 1) as f64 * q) as usize]);
    let shares = (0..p)
        .map(|project| {
            let cpu = cpu_before.get(project).zip(cpu_after.get(project));
            Share {
                messages: sent[project],
                members: members[project],
                subscribing_nodes: on_node[project].iter().filter(|on| **on).count(),
                cpu: cpu.map(|(b, a)| a.all - b.all),
                main_thread_cpu: cpu.and_then(|(b, a)| Some(a.main? - b.main?)),
            }
        })
        .collect();
    Figures {
        elapsed,
        deliveries: received.load(Ordering::Relaxed),
        p50: at(0.50),
        p99: at(0.99),
        shares,
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
    let cluster = std::env::args().any(|a| a == "--cluster");
    let clients = env_or("WSHUB_BENCH_CLIENTS", 200);
    let messages = env_or("WSHUB_BENCH_MESSAGES", 2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = Dir(std::env::temp_dir().join(format!("wshub-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    // The Redis processes, killed when dropped; their ports, one per project.
    let (_redis, ports, projects, broker, topology) = if cluster {
        let masters = start_cluster(&dir);
        let ports: Vec<u16> = masters.iter().map(|(_, port)| *port).collect();
        let projects = project_per_master(&ports);
        let seeds: Vec<String> = ports
            .iter()
            .map(|port| format!("\"redis://127.0.0.1:{port}\""))
            .collect();
        let broker = format!(
            "[broker]\nkind = \"redis\"\nredis_cluster = [{}]",
            seeds.join(", ")
        );
        let procs: Vec<Proc> = masters.into_iter().map(|(proc, _)| proc).collect();
        (procs, ports, projects, broker, "redis cluster")
    } else {
        let (redis, port) = start_redis(&dir);
        let broker =
            format!("[broker]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"");
        (
            vec![redis],
            vec![port],
            vec![PROJECT.to_owned()],
            broker,
            "redis",
        )
    };
    if !json {
        print_header(clients, messages, &projects);
    }
    let cases: Vec<(String, usize, &str)> = if cluster {
        (1..=3)
            .map(|n| {
                let nodes = if n == 1 { "node" } else { "nodes" };
                (
                    format!("{n} {nodes}, redis cluster ({SHARDS} shards)"),
                    n,
                    broker.as_str(),
                )
            })
            .collect()
    } else {
        vec![
            ("1 node, memory broker".to_owned(), 1, ""),
            ("1 node, redis broker".to_owned(), 1, broker.as_str()),
            ("2 nodes, redis broker".to_owned(), 2, broker.as_str()),
            ("3 nodes, redis broker".to_owned(), 3, broker.as_str()),
        ]
    };
    for (c, (name, n, broker)) in cases.into_iter().enumerate() {
        let procs: Vec<(Proc, SocketAddr)> = (0..n)
            .map(|i| start_wshub(&dir, &format!("case{c}-node{i}"), broker))
            .collect();
        let addrs: Vec<SocketAddr> = procs.iter().map(|(_, a)| *a).collect();
        let on_redis = if broker.is_empty() {
            &[][..]
        } else {
            &ports[..]
        };
        // The memory broker has one project too: the single-node figure is of one project.
        let case_projects = if broker.is_empty() {
            &projects[..1]
        } else {
            &projects[..]
        };
        let figures =
            runtime.block_on(run_case(&addrs, case_projects, on_redis, clients, messages));
        let expected: usize = figures.shares.iter().map(|s| s.messages * s.members).sum();
        assert_eq!(figures.deliveries, expected);
        let per_second = figures.deliveries as f64 / figures.elapsed.as_secs_f64();
        let redis_cpu: Option<f64> = figures.shares.iter().map(|s| s.cpu).sum();
        if json {
            let shards: Vec<Value> = figures
                .shares
                .iter()
                .zip(on_redis)
                .zip(case_projects)
                .map(|((s, port), project)| {
                    json!({
                        "port": port,
                        "project": project,
                        "messages": s.messages,
                        "members": s.members,
                        "subscribing_nodes": s.subscribing_nodes,
                        "redis_messages": s.messages * s.subscribing_nodes,
                        "deliveries": s.messages * s.members,
                        "cpu_s": s.cpu,
                        "main_thread_cpu_s": s.main_thread_cpu,
                    })
                })
                .collect();
            // One line per case for `cargo xtask bench`, which takes medians over runs.
            println!(
                "{}",
                json!({
                    "case": name,
                    "nodes": n,
                    "broker": if broker.is_empty() { "memory" } else { topology },
                    "clients": clients,
                    "messages": messages,
                    "projects": case_projects.len(),
                    "deliveries": figures.deliveries,
                    "elapsed_ms": figures.elapsed.as_secs_f64() * 1e3,
                    "deliveries_per_s": per_second,
                    "p50_ms": figures.p50.as_secs_f64() * 1e3,
                    "p99_ms": figures.p99.as_secs_f64() * 1e3,
                    "redis_cpu_s": redis_cpu,
                    "shards": shards,
                })
            );
        } else {
            let per_delivery = redis_cpu.map_or_else(
                || "-".to_owned(),
                |cpu| format!("{:.3}", cpu * 1e6 / figures.deliveries as f64),
            );
            println!(
                "{:<34} {:>10.2?} {:>16.0} {:>10.2?} {:>10.2?} {:>14}",
                name, figures.elapsed, per_second, figures.p50, figures.p99, per_delivery
            );
        }
        drop(procs);
    }
}

fn print_header(clients: usize, messages: usize, projects: &[String]) {
    println!(
        "fan-out to {clients} members of {} project(s), {messages} messages (client publishes from {PUBLISHERS_PER_NODE} or more connections per node), loopback, {} cores",
        projects.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:>10} {:>16} {:>10} {:>10} {:>14}",
        "case", "time", "deliveries/s", "p50", "p99", "redis µs/deliv"
    );
}
