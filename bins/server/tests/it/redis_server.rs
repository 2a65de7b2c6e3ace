//! A `redis-server` of a test's own on a free loopback port (`cargo xtask test` installs
//! `redis-server` when missing), shared by every suite that needs Redis.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Server, TempDir};

/// A `redis-server` of the test's own, killed when dropped.
pub(crate) struct Redis {
    pub(crate) child: Option<Child>,
    pub(crate) port: u16,
    pub(crate) args: Vec<String>,
    pub(crate) dir: TempDir,
    /// Serves TLS only: readiness is an accepted TCP connection, not a plain PING.
    pub(crate) tls: bool,
}

impl Redis {
    /// No persistence: a restart loses everything, like a cache-only Redis.
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    /// `args` come after the defaults (`--save "" --appendonly no`) and override them.
    pub(crate) fn start_with(args: &[&str]) -> Self {
        for _ in 0..20 {
            let mut redis = Self {
                child: None,
                port: free_port(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                dir: TempDir::new(),
                tls: false,
            };
            if redis.spawn() {
                return redis;
            }
        }
        panic!("redis-server did not start on any free port");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--loglevel", "warning", "--dir"])
            .arg(&self.dir.0)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (`cargo xtask test` installs it)");
        let (port, tls) = (self.port, self.tls);
        self.child = up_or_killed(child, || {
            if tls {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                answers(port)
            }
        });
        self.child.is_some()
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: no shutdown, no final save.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, with the same data directory.
    pub(crate) fn restart(&mut self) {
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// A `redis-cli` command's output.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli comes with redis-server");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits up to 5 s for a just-spawned `redis-server` to be `up`: the child when it is, or
/// `None` once it exited (its port was taken meanwhile) or the time ran out (then killed).
fn up_or_killed(mut child: Child, up: impl Fn() -> bool) -> Option<Child> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if up() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something answers a RESP PING on `port` (an error such as NOAUTH counts).
pub(crate) fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 64];
    stream.write_all(b"PING\r\n").is_ok() && stream.read(&mut buf).is_ok_and(|n| n > 0)
}

/// A `wshub` node on `redis_url`, with `broker_keys` in `[broker]` and `extra` sections.
pub(crate) fn node_on(redis_url: &str, broker_keys: &str, extra: &str) -> Server {
    Server::start(&format!(
        "[broker]\nkind = \"redis\"\nredis_url = \"{redis_url}\"\npresence_ttl = \"2s\"\ncommand_timeout = \"1s\"\nconnect_timeout = \"1s\"\n{broker_keys}\n\n[shutdown]\ndrain = \"1s\"\n\n{extra}"
    ))
}

/// A Redis Cluster of the test's own: `masters` primaries with one replica each, every node
/// a [`Redis`] on free loopback ports (client and cluster bus), killed when dropped.
pub(crate) struct RedisCluster {
    pub(crate) nodes: Vec<Redis>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub(crate) struct ClusterNode {
    pub(crate) id: String,
    pub(crate) port: u16,
    pub(crate) master: bool,
    pub(crate) failed: bool,
    /// For a replica: its primary's id.
    pub(crate) master_id: Option<String>,
    pub(crate) slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create` and waits until every
    /// node says `cluster_state:ok`. `args` go to every node (after the cluster's own).
    pub(crate) fn start(masters: usize, args: &[&str]) -> Self {
        let nodes: Vec<Redis> = (0..masters * 2)
            .map(|_| {
                let bus = free_port().to_string();
                let mut all = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-port",
                    &bus,
                    // A replica may take over at once, however long it was cut off.
                    "--cluster-replica-validity-factor",
                    "0",
                    // Replicas sync at once (the default waits 5 s to batch them).
                    "--repl-diskless-sync-delay",
                    "0",
                ];
                all.extend_from_slice(args);
                Redis::start_with(&all)
            })
            .collect();
        let cluster = Self { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli comes with redis-server");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok(Duration::from_secs(20));
        // Every replica in sync, so that a primary's death loses nothing it acknowledged
        // before the test starts.
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &cluster.nodes {
            while node.cli(&["ROLE"]).starts_with("slave")
                && !node
                    .cli(&["INFO", "replication"])
                    .contains("master_link_status:up")
            {
                assert!(Instant::now() < deadline, "a replica did not sync");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// `redis_cluster = [...]` for a node's `[broker]`: every node as a seed.
    pub(crate) fn broker_keys(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"redis://127.0.0.1:{}\"", n.port))
            .collect();
        format!("redis_cluster = [{}]", seeds.join(", "))
    }

    /// Waits until every live node says `cluster_state:ok` and agrees on every slot's owner.
    pub(crate) fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let live: Vec<&Redis> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
            let ok = live
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            let views: Vec<Vec<(u16, u16, u16)>> = live.iter().map(|n| owners(n)).collect();
            if ok && views.windows(2).all(|w| w[0] == w[1]) && !views[0].is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle within {within:?}: {}",
                live[0].cli(&["CLUSTER", "NODES"])
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node with `port`.
    pub(crate) fn node(&self, port: u16) -> &Redis {
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    /// `CLUSTER NODES` as seen by a live node.
    pub(crate) fn topology(&self) -> Vec<ClusterNode> {
        let live = self.nodes.iter().find(|n| n.child.is_some()).unwrap();
        parse_nodes(&live.cli(&["CLUSTER", "NODES"]))
    }

    /// The hash slot of `key`.
    pub(crate) fn slot(&self, key: &str) -> u16 {
        let live = self.nodes.iter().find(|n| n.child.is_some()).unwrap();
        live.cli(&["CLUSTER", "KEYSLOT", key]).parse().unwrap()
    }

    /// The port of the primary serving `key`.
    pub(crate) fn master_of(&self, key: &str) -> u16 {
        let slot = self.slot(key);
        self.topology()
            .into_iter()
            .find(|n| {
                n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.port)
            .unwrap()
    }

    /// The port of a replica of the primary on `port`.
    pub(crate) fn replica_of(&self, port: u16) -> u16 {
        let nodes = self.topology();
        let master = nodes.iter().find(|n| n.port == port).unwrap();
        nodes
            .iter()
            .find(|n| n.master_id.as_deref() == Some(master.id.as_str()) && !n.failed)
            .map(|n| n.port)
            .unwrap()
    }
}

impl RedisCluster {
    /// How to move the slot of `key` to the primary on `to`, runnable on another thread
    /// while the test publishes ([`SlotMove::run`]).
    pub(crate) fn slot_move(&self, key: &str, to: u16) -> SlotMove {
        let from = self.master_of(key);
        let nodes = self.topology();
        let id = |port: u16| nodes.iter().find(|n| n.port == port).unwrap().id.clone();
        SlotMove {
            slot: self.slot(key).to_string(),
            from,
            from_id: id(from),
            to,
            to_id: id(to),
            primaries: nodes
                .iter()
                .filter(|n| n.master && !n.failed)
                .map(|n| n.port)
                .collect(),
        }
    }
}

/// A slot to move from one primary to another, as a resharding does.
pub(crate) struct SlotMove {
    slot: String,
    from: u16,
    from_id: String,
    to: u16,
    to_id: String,
    primaries: Vec<u16>,
}

impl SlotMove {
    /// Marks the slot importing and migrating, moves its keys a few at a time with
    /// `MIGRATE`, then tells every primary the new owner.
    pub(crate) fn run(&self) {
        let cli = |port: u16, args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string()])
                .args(args)
                .output()
                .expect("redis-cli comes with redis-server");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let slot = self.slot.as_str();
        let answer = cli(
            self.to,
            &["CLUSTER", "SETSLOT", slot, "IMPORTING", &self.from_id],
        );
        assert_eq!(answer, "OK");
        let answer = cli(
            self.from,
            &["CLUSTER", "SETSLOT", slot, "MIGRATING", &self.to_id],
        );
        assert_eq!(answer, "OK");
        let to_port = self.to.to_string();
        loop {
            // Two keys at a time: the publishes meet a slot half moved.
            let keys = cli(self.from, &["CLUSTER", "GETKEYSINSLOT", slot, "2"]);
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend(keys.lines());
            assert_eq!(cli(self.from, &args), "OK");
        }
        for &port in &self.primaries {
            let answer = cli(port, &["CLUSTER", "SETSLOT", slot, "NODE", &self.to_id]);
            assert_eq!(answer, "OK", "SETSLOT NODE on {port}");
        }
    }
}

/// Every slot range with its owner's port, as `node` sees them.
fn owners(node: &Redis) -> Vec<(u16, u16, u16)> {
    let mut out: Vec<(u16, u16, u16)> = parse_nodes(&node.cli(&["CLUSTER", "NODES"]))
        .into_iter()
        .filter(|n| n.master && !n.failed)
        .flat_map(|n| n.slots.into_iter().map(move |(a, b)| (a, b, n.port)))
        .collect();
    out.sort_unstable();
    out
}

fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields
                .get(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields.get(2)?;
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_owned(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                master_id: Some(fields.get(3)?.to_string()).filter(|m| *m != "-"),
                slots,
            })
        })
        .collect()
}

/// A WebSocket client of a project whose frames a task of its own collects, for the
/// cluster and Sentinel suites.
pub(crate) struct Watcher {
    pub(crate) frames: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Joins `project` on `server` (`query`: e.g. `?since=3&epoch=…`, or empty) and waits
    /// for the welcome, which it returns.
    pub(crate) async fn join(
        server: &Server,
        project: &str,
        user: &str,
        query: &str,
    ) -> (Self, serde_json::Value) {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let url = format!("{}{query}", server.url(project));
        let ws = crate::harness::try_connect(&url, Some(&crate::harness::token(user, &[project])))
            .await
            .expect("connect");
        let (_sink, mut stream) = ws.split();
        let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = std::sync::Arc::clone(&frames);
        let reader = tokio::spawn(async move {
            let _sink = _sink; // the connection stays open while the reader runs
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Text(text) => collected
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(&text).unwrap()),
                    Message::Close(frame) => {
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        collected
                            .lock()
                            .unwrap()
                            .push(serde_json::json!({"type": "(close)", "code": code}));
                        return;
                    }
                    _ => {}
                }
            }
        });
        let watcher = Self { frames, reader };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let first = watcher.frames.lock().unwrap().first().cloned();
            if let Some(welcome) = first {
                assert_eq!(welcome["type"], "welcome", "{welcome}");
                return (watcher, welcome);
            }
            assert!(Instant::now() < deadline, "no welcome on {project}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The `message` frames so far.
    pub(crate) fn messages(&self) -> Vec<serde_json::Value> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f["type"] == "message")
            .cloned()
            .collect()
    }

    /// Waits until `n` messages arrived, then a little longer so that a duplicate shows.
    pub(crate) async fn wait_messages(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let started = Instant::now();
        while self.messages().len() < n {
            assert!(
                started.elapsed() < within,
                "{} of {n} messages within {within:?}: {:?}",
                self.messages().len(),
                self.frames
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.messages()
    }

    pub(crate) fn is_open(&self) -> bool {
        !self.reader.is_finished()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The offsets of `messages`.
pub(crate) fn offsets_of(messages: &[serde_json::Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect()
}

/// `/readyz`'s status.
pub(crate) async fn readyz(server: &Server) -> u16 {
    crate::harness::http("GET", &server.http("/readyz"), &[], "")
        .await
        .0
}

/// Waits until `/readyz` answers `status`; returns how long that took.
pub(crate) async fn wait_readyz(server: &Server, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    while readyz(server).await != status {
        assert!(
            started.elapsed() < within,
            "/readyz did not answer {status} within {within:?}: {:#?}",
            server.logs().iter().rev().take(30).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    started.elapsed()
}

/// Publishes `data` to `project` through the HTTP API: the status and the answer.
pub(crate) async fn publish_via_api(
    server: &Server,
    project: &str,
    data: serde_json::Value,
) -> (u16, serde_json::Value) {
    crate::harness::api(
        server,
        "POST",
        &format!("/api/projects/{project}/messages"),
        &serde_json::json!({ "data": data }).to_string(),
    )
    .await
}

/// Publishes `{"i": i}` to `project` through the HTTP API of one of `nodes`, in turn by
/// `i`, and records an accepted publish as `offset → i` in `accepted` (an offset given twice
/// fails the test). Returns whether it was accepted; a `503` is a refusal, any other answer
/// fails the test.
pub(crate) async fn publish_alternating(
    nodes: [&Server; 2],
    project: &str,
    i: u64,
    accepted: &mut std::collections::BTreeMap<u64, u64>,
) -> bool {
    let node = nodes[(i % 2) as usize];
    let (status, body) = publish_via_api(node, project, serde_json::json!({ "i": i })).await;
    match status {
        202 => {
            let offset = body["offset"].as_u64().unwrap();
            assert!(
                accepted.insert(offset, i).is_none(),
                "offset {offset} twice"
            );
            true
        }
        503 => false,
        other => panic!("publish answered {other}: {body}"),
    }
}

/// A `wshub` node whose `[broker]` names its Redis with `broker_keys` (a cluster's seeds,
/// sentinels…) instead of `redis_url`.
pub(crate) fn node_with(broker_keys: &str) -> Server {
    node_with_extra(broker_keys, "")
}

/// [`node_with`], with `extra` sections (e.g. `[webhooks]`).
pub(crate) fn node_with_extra(broker_keys: &str, extra: &str) -> Server {
    Server::start(&format!(
        "[broker]\nkind = \"redis\"\n{broker_keys}\npresence_ttl = \"2s\"\ncommand_timeout = \"1s\"\nconnect_timeout = \"1s\"\n\n[shutdown]\ndrain = \"1s\"\n\n{extra}"
    ))
}

/// A `redis-server --sentinel` of the test's own watching `master` under the name `main`
/// (quorum 1, down after 1 s, failover timeout 5 s; `auth_pass`: the master's password),
/// killed when dropped.
pub(crate) struct Sentinel {
    child: Option<Child>,
    pub(crate) port: u16,
    _dir: TempDir,
}

impl Sentinel {
    pub(crate) fn start(master_port: u16, auth_pass: Option<&str>) -> Self {
        let auth = auth_pass.map_or_else(String::new, |p| format!("sentinel auth-pass main {p}\n"));
        for _ in 0..20 {
            let dir = TempDir::new();
            let port = free_port();
            let conf = dir.0.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                     sentinel monitor main 127.0.0.1 {master_port} 1\n\
                     sentinel down-after-milliseconds main 1000\n\
                     sentinel failover-timeout main 5000\n\
                     sentinel parallel-syncs main 1\n{auth}",
                    dir.0.display()
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .args(["--sentinel", "--loglevel", "warning"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            if let Some(child) = up_or_killed(child, || answers(port)) {
                return Self {
                    child: Some(child),
                    port,
                    _dir: dir,
                };
            }
        }
        panic!("redis-server --sentinel did not start on any free port");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A `redis-cli` command's output, asked of this sentinel.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli comes with redis-server");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The port of the master this sentinel names now.
    pub(crate) fn master_port(&self) -> Option<u16> {
        self.cli(&["SENTINEL", "get-master-addr-by-name", "main"])
            .lines()
            .nth(1)
            .and_then(|p| p.parse().ok())
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
