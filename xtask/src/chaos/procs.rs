//! The processes and sockets of a chaos run, each started here and stopped by its PID:
//! one `redis-server` (append-only file, fsync on every write, so a restart keeps what it
//! acknowledged unless the run wipes its directory), the `wshub` nodes, and one TCP proxy per
//! node between the node and Redis, which the run can cut.

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
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--protected-mode", "no", "--loglevel", "warning", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting redis-server (`cargo xtask test` installs it)")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let waited = wait_listening(addr, &mut child, "redis-server");
        self.child = Some(child);
        waited
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
        redis_url: &str,
        secret: &str,
        api_key: &str,
    ) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let config = dir.join(format!("node-{index}.toml"));
        fs::write(&config, node_config(addr, redis_url, secret, api_key))?;
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
/// handshake limit (every client reconnects from 127.0.0.1, often).
fn node_config(addr: SocketAddr, redis_url: &str, secret: &str, api_key: &str) -> String {
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
redis_url = "{redis_url}"
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
