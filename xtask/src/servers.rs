//! The processes of a load run, for `cargo xtask bench` and `cargo xtask soak`: the server
//! under test (the `wshub` binary with its bench configuration, or a baseline of
//! `../shared/peers` copied into `target/peers` and built there), started on a free loopback
//! port, pinned to a core, waited for until it listens and killed by its PID when dropped;
//! the release builds of `wshub` and the generator; and the generator's run and JSON result.

use std::fs;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::tools::succeeds;
use crate::{cargo, exec, show, wait_or_kill};

/// The HS256 secret of the bench configuration (tokens are minted by the generator).
pub(crate) const SECRET: &str = "wshub-bench-secret-0123456789abcdef";

/// Builds `wshub` and the load generator (`bins/wshub-bench`) with the release profile.
pub(crate) fn build_release(root: &Path) -> anyhow::Result<ReleaseBuild> {
    println!("==> release builds: wshub and the load generator");
    build_wshub_and_generator(true)?;
    Ok(ReleaseBuild {
        wshub: Server::Wshub {
            binary: root.join("target/release/wshub"),
        },
        generator: root.join("target/release/wshub-bench"),
    })
}

/// `cargo build` of `wshub` and the load generator (`bins/wshub-bench`), with the release
/// profile or the debug one.
pub(crate) fn build_wshub_and_generator(release: bool) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args([
        "build",
        "-p",
        "server",
        "--bin",
        "wshub",
        "-p",
        "wshub-bench",
        // Without it, `--bin wshub` alone would leave the generator unbuilt or stale.
        "--bin",
        "wshub-bench",
    ]);
    if release {
        build.arg("--release");
    }
    exec(&mut build)
}

/// What [`build_release`] built.
#[derive(Debug)]
pub(crate) struct ReleaseBuild {
    /// The release `wshub`, as a server to start.
    pub(crate) wshub: Server,
    /// The load generator's binary.
    pub(crate) generator: PathBuf,
}

/// A server under test.
#[derive(Debug, Clone)]
pub(crate) enum Server {
    Wshub { binary: PathBuf },
    Peer { name: &'static str, dir: PathBuf },
}

impl Server {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Wshub { .. } => "wshub",
            Self::Peer { name, .. } => name,
        }
    }

    pub(crate) fn target(&self) -> &'static str {
        match self {
            Self::Wshub { .. } => "wshub",
            Self::Peer { .. } => "raw",
        }
    }
}

/// Whether server and generator get a core each.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pinning {
    Pinned,
    NoTaskset,
    OneCore,
}

impl Pinning {
    pub(crate) fn detect() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let has_taskset = succeeds(Command::new("taskset").arg("--version"));
        match (cores >= 2, has_taskset) {
            (false, _) => Self::OneCore,
            (true, false) => Self::NoTaskset,
            (true, true) => Self::Pinned,
        }
    }

    pub(crate) fn pinned(self) -> bool {
        matches!(self, Self::Pinned)
    }

    pub(crate) fn describe(self) -> String {
        match self {
            Self::Pinned => "server on CPU 0, generator on CPU 1 (taskset)".to_owned(),
            Self::NoTaskset => "not pinned: `taskset` is missing (util-linux)".to_owned(),
            Self::OneCore => {
                "not pinned: fewer than 2 cores, server and generator share".to_owned()
            }
        }
    }

    /// `program` under `bash`, with the descriptor limit raised to the hard limit and, when
    /// pinned, on `cpu`. `exec` all the way down, so the child's PID is the program's.
    pub(crate) fn command(self, cpu: u32, program: &Path) -> Command {
        let mut cmd = Command::new("bash");
        let script = if self.pinned() {
            format!("ulimit -n \"$(ulimit -Hn)\" && exec taskset -c {cpu} \"$0\" \"$@\"")
        } else {
            "ulimit -n \"$(ulimit -Hn)\" && exec \"$0\" \"$@\"".to_owned()
        };
        cmd.arg("-c").arg(script).arg(program);
        cmd
    }
}

/// A server process we started; killed (by its PID, through `Child`) when dropped.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Running {
    /// Stops the server; returns whether it was still running until then.
    pub(crate) fn stop(mut self) -> anyhow::Result<bool> {
        let alive = self.child.try_wait()?.is_none();
        drop(self);
        Ok(alive)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn start_server(
    server: &Server,
    work: &Path,
    log: &Path,
    pinning: Pinning,
) -> anyhow::Result<Running> {
    start_server_with(server, work, log, pinning, "")
}

/// [`start_server`], with `extra` appended to wshub's configuration (other sections, such
/// as a `[broker]`); baselines take no configuration.
pub(crate) fn start_server_with(
    server: &Server,
    work: &Path,
    log: &Path,
    pinning: Pinning,
    extra: &str,
) -> anyhow::Result<Running> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = match server {
        Server::Wshub { binary } => {
            let config = work.join("wshub-bench.toml");
            fs::write(&config, format!("{}\n{extra}", wshub_config(addr)))?;
            let mut cmd = pinning.command(0, binary);
            cmd.arg("--config").arg(&config).env_remove("RUST_LOG");
            cmd
        }
        Server::Peer { dir, .. } => {
            let mut cmd = pinning.command(0, &dir.join("start.sh"));
            cmd.arg(port.to_string());
            cmd
        }
    };
    let log_file = fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", show(&cmd)))?;
    let mut running = Running { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(running);
        }
        if let Some(status) = running.child.try_wait()? {
            bail!(
                "{} exited before listening ({status}); its log: {}",
                server.name(),
                log.display()
            );
        }
        if Instant::now() > deadline {
            bail!("{} did not listen on {addr} within 20 s", server.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The configuration wshub is benchmarked with: the defaults as deployed, auth on; no client
/// publish rate (the generator publishes over the WebSocket as fast as it can), no per-user
/// or per-address handshake limit (every connection comes from one user on 127.0.0.x).
fn wshub_config(addr: SocketAddr) -> String {
    format!(
        r#"[server]
listen = "{addr}"

[log]
format = "json"
level = "warn"

[auth]
hs256_secrets = ["{SECRET}"]
api_keys = ["wshub-bench-api-key"]

[limits]
max_connections = 100000
max_connections_per_user = 100000
client_publish_rate = 0
handshake_rate_per_ip = 1000000
"#
    )
}

/// `target/release/wshub` when it is newer than every source file it is built from.
pub(crate) fn fresh_release_wshub(root: &Path) -> Option<PathBuf> {
    let binary = root.join("target/release/wshub");
    let built = fs::metadata(&binary).and_then(|m| m.modified()).ok()?;
    let mut newest = SystemTime::UNIX_EPOCH;
    for dir in ["crates", "bins/server", "Cargo.lock", "Cargo.toml"] {
        newest = newest.max(newest_mtime(&root.join(dir)));
    }
    (built >= newest).then_some(binary)
}

fn newest_mtime(path: &Path) -> SystemTime {
    let Ok(meta) = fs::metadata(path) else {
        return SystemTime::UNIX_EPOCH;
    };
    let own = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if !meta.is_dir() {
        return own;
    }
    fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| newest_mtime(&entry.path()))
        .fold(own, SystemTime::max)
}

/// Copies `../shared/peers/<peer>` into `target/peers/<peer>` (the original is read-only)
/// and runs its `build.sh` there.
pub(crate) fn build_peer(root: &Path, peer: &str) -> anyhow::Result<PathBuf> {
    let peers = std::env::var_os("WSHUB_BENCH_PEERS")
        .map_or_else(|| root.join("../shared/peers"), PathBuf::from);
    let source = peers.join(peer);
    if !source.join("start.sh").is_file() {
        bail!("{} has no start.sh", source.display());
    }
    let dir = root.join("target/peers").join(peer);
    copy_tree(&source, &dir)?;
    let mut build = Command::new("bash");
    build
        .arg("build.sh")
        .current_dir(&dir)
        // The peer is a project of its own: its target/ lives in its own folder.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("RUSTFLAGS");
    exec(&mut build)?;
    Ok(dir)
}

/// Copies the files of `from` into `to`, writing only those whose content differs (so cargo
/// and npm see nothing new on a second run), and skipping build outputs.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "target" || name == "node_modules" {
            continue;
        }
        let (source, dest) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            copy_tree(&source, &dest)?;
            continue;
        }
        let content = fs::read(&source)?;
        if fs::read(&dest).ok().as_deref() != Some(content.as_slice()) {
            // The source is read-only; the copy must stay writable for the next update.
            let _ = fs::remove_file(&dest);
            fs::write(&dest, &content)?;
        }
        let mode = fs::metadata(&source)?.permissions();
        let mut perms = mode.clone();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(&dest, perms)?;
    }
    Ok(())
}

/// Runs the generator `cmd` (its stdout piped) to its end and returns its exit status and
/// stdout; kills it (by its PID, through `Child`) when it runs over `limit`.
pub(crate) fn run_generator(
    cmd: &mut Command,
    limit: Duration,
) -> anyhow::Result<(ExitStatus, String)> {
    let mut child = cmd.spawn().context("starting the generator")?;
    let mut stdout = child.stdout.take().context("generator stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let Some(status) = wait_or_kill(&mut child, limit)? else {
        bail!("the generator ran over {limit:?} and was killed");
    };
    Ok((status, reader.join().unwrap_or_default()))
}

/// The generator's result: the last line of its output that is a JSON object.
pub(crate) fn generator_result(out: &str) -> anyhow::Result<Value> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the generator printed no JSON result")?;
    serde_json::from_str(line).context("parsing the generator's result")
}
