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
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--loglevel", "warning", "--dir"])
            .arg(&self.dir.0)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (`cargo xtask test` installs it)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // the port was taken meanwhile
            }
            let up = if self.tls {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                answers(self.port)
            };
            if up {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
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
