//! The processes and sockets of a chaos run, each started here and stopped by its PID:
//! one `redis-server` (append-only file, fsync on every write, so a restart keeps what it
//! acknowledged unless the run wipes its directory), the `wshub` nodes, and one TCP proxy per
//! node between the node and Redis, which the run can cut; or, with `--redis cluster`, a
//! Redis Cluster of six `redis-server`s ([`RedisCluster`]) and no proxy.
//!
//! Why no proxy on a cluster: the client library learns the nodes' addresses from the
//! cluster itself (`CLUSTER SLOTS`, `MOVED`), which announces their own ports, so a node
//! seeded with proxies would still connect around them. A cut there is `CLIENT KILL ADDR`
//! on every cluster node for each of the `wshub` process's connections (found with `ss`).

use std::fs;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A free loopback port (the kernel's pick; closed again at once).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts on `addr`, or `child` exits, or 20 s pass.
fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited before listening on {addr} ({status})");
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on {addr} within 20 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a `redis-server` on `port` keeping every write (append-only file, fsync on each),
/// its files in `dir` and its output appended to `log`, with `extra` arguments; returns once
/// it listens. `what` names it in errors.
fn spawn_redis(
    port: u16,
    dir: &Path,
    log: &Path,
    extra: &[&str],
    what: &str,
) -> anyhow::Result<Child> {
    let log = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(extra)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
        .args(["--protected-mode", "no", "--loglevel", "warning", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting redis-server (`cargo xtask test` installs it)")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match wait_listening(addr, &mut child, what) {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Sends `signal` (`STOP`, `CONT`) to `pid`, a process this run started.
pub(crate) fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed ({status})");
    }
    Ok(())
}

/// Our `redis-server`.
pub(crate) struct Redis {
    pub(crate) port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Self> {
        let data = dir.join("redis-data");
        let _ = fs::remove_dir_all(&data);
        fs::create_dir_all(&data)?;
        let mut redis = Self {
            port: free_port()?,
            dir: data,
            log: dir.join("redis.log"),
            child: None,
        };
        redis.spawn()?;
        Ok(redis)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = spawn_redis(self.port, &self.dir, &self.log, &[], "redis-server")?;
        self.child = Some(child);
        Ok(())
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then start again on the same port; with `wipe`, its data directory is
    /// emptied in between (a restart without persistence: every key is gone).
    pub(crate) fn restart(&mut self, wipe: bool, down: Duration) -> anyhow::Result<()> {
        self.kill();
        if wipe {
            fs::remove_dir_all(&self.dir)?;
            fs::create_dir_all(&self.dir)?;
        }
        thread::sleep(down);
        self.spawn()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) process too.
        self.kill();
    }
}

/// A `wshub` node: its configuration file, its port, its log (appended across restarts).
pub(crate) struct Node {
    pub(crate) addr: SocketAddr,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub(crate) fn start(
        binary: &Path,
        dir: &Path,
        index: usize,
        broker_keys: &str,
        secret: &str,
        api_key: &str,
    ) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let config = dir.join(format!("node-{index}.toml"));
        fs::write(&config, node_config(addr, broker_keys, secret, api_key))?;
        let log = dir.join(format!("node-{index}.log"));
        let _ = fs::remove_file(&log);
        let mut node = Self {
            addr,
            binary: binary.to_owned(),
            config,
            log,
            child: None,
        };
        node.spawn()?;
        Ok(node)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let waited = wait_listening(self.addr, &mut child, "wshub");
        self.child = Some(child);
        waited
    }

    /// SIGKILL, `down` of nothing, then the same node again on the same port.
    pub(crate) fn kill_and_restart(&mut self, down: Duration) -> anyhow::Result<()> {
        self.kill();
        thread::sleep(down);
        self.spawn()
    }

    /// Whether the node is still running (it was never meant to exit by itself).
    pub(crate) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nodes' configuration: auth on (the generator mints tokens with `secret`), Redis with
/// short timeouts so an outage is noticed within a second, no client publish rate and no
/// handshake limit (every client reconnects from 127.0.0.1, often). `broker_keys` names the
/// Redis: `redis_url = "…"` or `redis_cluster = […]`.
fn node_config(addr: SocketAddr, broker_keys: &str, secret: &str, api_key: &str) -> String {
    format!(
        r#"[server]
listen = "{addr}"

[log]
format = "json"
level = "warn"

[auth]
hs256_secrets = ["{secret}"]
api_keys = ["{api_key}"]

[limits]
max_connections_per_user = 100000
client_publish_rate = 0
handshake_rate_per_ip = 1000000

[broker]
kind = "redis"
{broker_keys}
presence_ttl = "2s"
command_timeout = "1s"
connect_timeout = "1s"

[shutdown]
drain = "1s"
"#
    )
}

/// A TCP proxy on a loopback port to `upstream`; [`Proxy::cut`] resets every connection
/// through it and refuses new ones until [`Proxy::heal`]. Threads, one per direction.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    state: Arc<ProxyState>,
}

struct ProxyState {
    upstream: SocketAddr,
    down: AtomicBool,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    pub(crate) fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState {
            upstream,
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        thread::spawn(move || accept_loop(&listener, &shared));
        Ok(Self { addr, state })
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub(crate) fn cut(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        self.close_all();
    }

    pub(crate) fn heal(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }

    fn close_all(&self) {
        let conns = std::mem::take(&mut *self.state.conns.lock().expect("proxy lock"));
        for conn in conns {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.close_all();
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<ProxyState>) {
    for conn in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        if state.down.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&state.upstream, Duration::from_secs(1)) else {
            continue;
        };
        let pipes = (|| -> io::Result<_> {
            let mut conns = state.conns.lock().expect("proxy lock");
            conns.push(client.try_clone()?);
            conns.push(server.try_clone()?);
            Ok((client.try_clone()?, server.try_clone()?))
        })();
        let Ok((client2, server2)) = pipes else {
            continue;
        };
        thread::spawn(move || pipe(client, server2));
        thread::spawn(move || pipe(server, client2));
    }
}

/// Copies `from` into `to` until either ends, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Our Redis Cluster: three primaries with a replica each (`redis-cli --cluster create`),
/// every node with an append-only file (fsync always) and its `nodes.conf` in a directory
/// of its own, so a killed node started again rejoins as itself (as the replica of whoever
/// took its slots). Failure detection: `cluster-node-timeout` 2 s.
pub(crate) struct RedisCluster {
    pub(crate) nodes: Vec<ClusterNode>,
}

/// One `redis-server --cluster-enabled yes`.
pub(crate) struct ClusterNode {
    pub(crate) port: u16,
    bus: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A primary as `CLUSTER NODES` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Primary {
    pub(crate) port: u16,
    pub(crate) slots: Vec<(u16, u16)>,
}

/// How long a primary may be unreachable before the others fail it over (ms).
pub(crate) const NODE_TIMEOUT_MS: u64 = 2000;

impl RedisCluster {
    /// Starts 6 nodes, joins them (3 primaries, 1 replica each) and waits until every node
    /// says `cluster_state:ok` and every replica is in sync.
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut cluster = Self { nodes: Vec::new() };
        for i in 0..6 {
            let data = dir.join(format!("redis-cluster-{i}"));
            let _ = fs::remove_dir_all(&data);
            fs::create_dir_all(&data)?;
            let mut node = ClusterNode {
                port: free_port()?,
                bus: free_port()?,
                dir: data,
                log: dir.join(format!("redis-cluster-{i}.log")),
                child: None,
            };
            let _ = fs::remove_file(&node.log);
            // A free port may be taken between its pick and the bind: pick again.
            let mut tries = 0;
            while let Err(e) = node.spawn() {
                tries += 1;
                node.kill();
                if tries == 5 {
                    return Err(e);
                }
                node.port = free_port()?;
                node.bus = free_port()?;
            }
            cluster.nodes.push(node);
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("running redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_ok(Duration::from_secs(30))?;
        cluster.wait_replicas_in_sync(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// `redis_cluster = [...]` for a node's `[broker]`: every cluster node as a seed.
    pub(crate) fn broker_keys(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"redis://127.0.0.1:{}\"", n.port))
            .collect();
        format!("redis_cluster = [{}]", seeds.join(", "))
    }

    pub(crate) fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    fn live(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// The primaries serving slots, as the first live node sees them, by port.
    pub(crate) fn primaries(&self) -> anyhow::Result<Vec<Primary>> {
        let node = self.live().next().context("no cluster node is running")?;
        let mut out = parse_primaries(&cli(node.port, &["CLUSTER", "NODES"])?);
        out.sort_by_key(|p| p.port);
        Ok(out)
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub(crate) fn slot(&self, key: &str) -> anyhow::Result<u16> {
        let node = self.live().next().context("no cluster node is running")?;
        let answer = cli(node.port, &["CLUSTER", "KEYSLOT", key])?;
        answer
            .parse()
            .with_context(|| format!("CLUSTER KEYSLOT answered {answer:?}"))
    }

    pub(crate) fn pid(&self, port: u16) -> Option<u32> {
        self.node(port)
            .and_then(|n| n.child.as_ref().map(Child::id))
    }

    fn node(&self, port: u16) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.port == port)
    }

    /// SIGKILL the node on `port` (no shutdown, nothing saved beyond its append-only file).
    pub(crate) fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.kill();
        }
    }

    /// Starts the node on `port` again, on its data and its `nodes.conf`.
    pub(crate) fn restart(&mut self, port: u16) -> anyhow::Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .context("no such cluster node")?;
        node.spawn()
    }

    /// Waits until every live node says `cluster_state:ok` and they agree on every slot's
    /// primary (all 16 384 slots served).
    pub(crate) fn wait_ok(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<Vec<Primary>> = self
                .live()
                .map(|n| {
                    let ok = cli(n.port, &["CLUSTER", "INFO"])
                        .is_ok_and(|i| i.contains("cluster_state:ok"));
                    let mut view = if ok {
                        parse_primaries(&cli(n.port, &["CLUSTER", "NODES"]).unwrap_or_default())
                    } else {
                        Vec::new()
                    };
                    view.sort_by_key(|p| p.port);
                    view
                })
                .collect();
            let covered = |v: &Vec<Primary>| {
                v.iter()
                    .flat_map(|p| &p.slots)
                    .map(|(a, b)| u32::from(b - a) + 1)
                    .sum::<u32>()
                    == 16_384
            };
            if !views.is_empty()
                && views.iter().all(covered)
                && views.windows(2).all(|w| w[0] == w[1])
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the cluster did not settle within {within:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the primary on `port` serves no slot any more in the live nodes' view:
    /// its replica took over.
    pub(crate) fn wait_replaced(&self, port: u16, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while self.primaries()?.iter().any(|p| p.port == port) {
            if Instant::now() > deadline {
                bail!("the primary on {port} was not replaced within {within:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Waits until every live replica's link to its primary is up.
    pub(crate) fn wait_replicas_in_sync(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        for node in self.live() {
            loop {
                let role = cli(node.port, &["ROLE"]).unwrap_or_default();
                let info = cli(node.port, &["INFO", "replication"]).unwrap_or_default();
                if !role.starts_with("slave") || info.contains("master_link_status:up") {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the replica on {} did not sync within {within:?}",
                        node.port
                    );
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Closes every connection the process `pid` has to a cluster node, with `CLIENT KILL
    /// ADDR` on that node (its local address is the client's address there). Returns how
    /// many were closed.
    pub(crate) fn kill_clients_of(&self, pid: u32) -> anyhow::Result<usize> {
        let out = Command::new("ss")
            .args(["-tnpH", "state", "established"])
            .output()
            .context("running ss")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut killed = 0;
        for (local, peer_port) in connections_of(&text, pid) {
            if self.node(peer_port).is_none_or(|n| n.child.is_none()) {
                continue;
            }
            // The filter form answers how many clients it closed (`:1`).
            let answer = resp_line(peer_port, &format!("CLIENT KILL ADDR {local}"))?;
            killed += answer
                .trim()
                .strip_prefix(':')
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
        }
        Ok(killed)
    }
}

impl ClusterNode {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let timeout = NODE_TIMEOUT_MS.to_string();
        let bus = self.bus.to_string();
        let cluster = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &timeout,
            "--cluster-port",
            &bus,
            // A replica may take over however long it was cut off; replicas sync at once.
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync-delay",
            "0",
        ];
        let child = spawn_redis(
            self.port,
            &self.dir,
            &self.log,
            &cluster,
            "redis-server (cluster)",
        )?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-cli -p port ARGS…` answer, trimmed.
pub(crate) fn cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running redis-cli")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Sends one inline command to the Redis on `port` and reads its one-line answer (`+OK`,
/// `-ERR …`, `:1`): cheaper than a `redis-cli` process when a cut kills many clients.
fn resp_line(port: u16, command: &str) -> io::Result<String> {
    use std::io::{BufRead as _, BufReader, Write as _};
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}

/// The primaries with slots in a `CLUSTER NODES` answer (failed ones left out).
fn parse_primaries(text: &str) -> Vec<Primary> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || (flags.contains("fail") && !flags.contains("fail?")) {
                return None;
            }
            let port = fields
                .get(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let slots: Vec<(u16, u16)> = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            (!slots.is_empty()).then_some(Primary { port, slots })
        })
        .collect()
}

/// The established TCP connections of process `pid` in an `ss -tnpH` listing: (its local
/// address, the peer's port).
fn connections_of(ss: &str, pid: u32) -> Vec<(String, u16)> {
    let tag = format!("pid={pid},");
    ss.lines()
        .filter(|l| l.contains(&tag))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            // State Recv-Q Send-Q Local Peer Process (with `state established`: no State).
            let (local, peer) = if fields.first() == Some(&"ESTAB") {
                (fields.get(3)?, fields.get(4)?)
            } else {
                (fields.get(2)?, fields.get(3)?)
            };
            let port = peer.rsplit(':').next()?.parse().ok()?;
            Some(((*local).to_owned(), port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_come_from_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922 [10923->-c3]
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
e5 127.0.0.1:7004@17004 master - 0 0 7 connected 10923-16383";
        assert_eq!(
            parse_primaries(text),
            [
                Primary {
                    port: 7000,
                    slots: vec![(0, 5460)]
                },
                Primary {
                    port: 7001,
                    slots: vec![(5461, 10922)]
                },
                Primary {
                    port: 7004,
                    slots: vec![(10923, 16383)]
                },
            ]
        );
    }

    #[test]
    fn a_process_connections_come_from_ss() {
        let ss = "\
0 0 127.0.0.1:50000 127.0.0.1:7000 users:((\"wshub\",pid=42,fd=9))
0 0 127.0.0.1:50001 127.0.0.1:7001 users:((\"wshub\",pid=420,fd=9))
ESTAB 0 0 127.0.0.1:50002 127.0.0.1:7002 users:((\"wshub\",pid=42,fd=10))";
        assert_eq!(
            connections_of(ss, 42),
            [
                ("127.0.0.1:50000".to_owned(), 7000),
                ("127.0.0.1:50002".to_owned(), 7002)
            ]
        );
    }
}
