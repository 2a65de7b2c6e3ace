//! Starting `wshub`, minting tokens, and WebSocket clients with deadlines.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ws_auth::{Claims, JwtSigner};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single awaited event may take before a test fails.
pub(crate) const STEP: Duration = Duration::from_secs(10);

pub(crate) const SECRET: &str = "integration-test-secret-0123456789";
pub(crate) const API_KEY: &str = "integration-test-api-key";

/// A running `wshub` process, killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl Server {
    /// Starts `wshub` with the test secret and API key plus `extra` TOML sections. The API
    /// key opens the admin routes too, as `auth.admin_api_keys`, so no fallback warning is
    /// logged.
    pub(crate) fn start(extra: &str) -> Self {
        Self::start_on("127.0.0.1:0", extra)
    }

    pub(crate) fn start_on(listen: &str, extra: &str) -> Self {
        Self::start_with_server_keys(listen, "", extra)
    }

    /// Like [`Server::start_on`], with more keys of the `[server]` section.
    pub(crate) fn start_with_server_keys(listen: &str, server_keys: &str, extra: &str) -> Self {
        let toml = format!(
            "[server]\nlisten = \"{listen}\"\n{server_keys}\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n[auth]\nhs256_secrets = [\"{SECRET}\"]\napi_keys = [\"{API_KEY}\"]\nadmin_api_keys = [\"{API_KEY}\"]\n\n{extra}\n"
        );
        Self::start_in(TempDir::new(), &toml)
    }

    /// Starts `wshub` with exactly `toml` as its configuration, written to `wshub.toml` in
    /// `dir`, which lives as long as the server: tests put key files beside it and rewrite it
    /// (see [`Server::config_path`]). `[log]` should say `format = "json"`. The handshake rate
    /// limit is lifted unless `toml` sets `limits.handshake_rate_per_ip`.
    pub(crate) fn start_in(dir: TempDir, toml: &str) -> Self {
        Self::start_in_command(dir, toml, Command::new(env!("CARGO_BIN_EXE_wshub")))
    }

    /// Starts `wshub` with the test secret and API key plus `extra` TOML sections, through
    /// `sh` with its soft open-file limit lowered to `soft_nofile` first (`exec` keeps the
    /// PID: [`Server::pid`] is wshub's).
    pub(crate) fn start_with_soft_nofile(soft_nofile: u64, extra: &str) -> Self {
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n[auth]\nhs256_secrets = [\"{SECRET}\"]\napi_keys = [\"{API_KEY}\"]\nadmin_api_keys = [\"{API_KEY}\"]\n\n{extra}\n"
        );
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -Sn {soft_nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_wshub"));
        Self::start_in_command(TempDir::new(), &toml, command)
    }

    /// [`Server::start_in`] with `command` as the program that becomes wshub; `--config`
    /// and the path are appended to its arguments.
    pub(crate) fn start_in_command(dir: TempDir, toml: &str, mut command: Command) -> Self {
        let config = dir.0.join("wshub.toml");
        std::fs::write(&config, toml).unwrap();
        if !toml.contains("handshake_rate_per_ip") {
            // Tests open many connections from one address: lift the handshake rate limit
            // unless the test is about it.
            command.env("WSHUB__LIMITS__HANDSHAKE_RATE_PER_IP", "1000000");
        }
        let mut child = command
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting wshub");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ =
                        addr_tx.send(v["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        let Ok(addr) = addr_rx.recv_timeout(STEP) else {
            let _ = child.kill();
            panic!("wshub did not start: {:#?}", logs.lock().unwrap());
        };
        Self {
            child,
            addr,
            logs,
            _dir: dir,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The configuration file the server was started with.
    pub(crate) fn config_path(&self) -> PathBuf {
        self._dir.0.join("wshub.toml")
    }

    /// Sends SIGHUP: the server reloads its keys.
    pub(crate) fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub(crate) fn url(&self, project: &str) -> String {
        format!("ws://{}/ws/projects/{project}", self.addr)
    }

    pub(crate) fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every log line so far.
    pub(crate) fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Log lines at WARN or ERROR.
    pub(crate) fn warnings(&self) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|l| {
                l.contains(r#""level":"WARN""#)
                    || l.contains(r#""level":"ERROR""#)
                    || l.starts_with("stderr")
            })
            .collect()
    }

    /// Waits until a log line satisfies `pred`.
    pub(crate) async fn wait_for_log(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + STEP;
        let mut seen = 0;
        loop {
            {
                let logs = self.logs.lock().unwrap();
                if logs[seen..].iter().any(|l| pred(l)) {
                    return;
                }
                seen = logs.len();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line for {what}: {:#?}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait()
    }

    pub(crate) fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    /// Resident memory of the server process, in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "wshub-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A token for `user` granting `projects`, signed with the test secret.
pub(crate) fn token(user: &str, projects: &[&str]) -> String {
    token_ttl(user, projects, Duration::from_secs(3600))
}

pub(crate) fn token_ttl(user: &str, projects: &[&str], ttl: Duration) -> String {
    JwtSigner::hs256(SECRET)
        .sign(&Claims::new(user, projects.iter().copied(), ttl))
        .unwrap()
}

/// Opens a WebSocket with `token` in the Authorization header.
pub(crate) async fn try_connect(url: &str, token: Option<&str>) -> Result<Ws, WsError> {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    let (ws, response) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake timed out")?;
    assert_eq!(response.status(), 101);
    Ok(ws)
}

/// Connects as `user` to `project` and reads the welcome.
pub(crate) async fn join(server: &Server, project: &str, user: &str) -> (Ws, Value) {
    let mut ws = try_connect(&server.url(project), Some(&token(user, &[project])))
        .await
        .expect("connect");
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// The next text frame as JSON (control frames are skipped).
pub(crate) async fn recv_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("no frame in time")
            .expect("stream ended")
            .expect("read error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next `message` frame; presence and ack frames before it are skipped.
pub(crate) async fn recv_message<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let frame = recv_json(ws).await;
        match frame["type"].as_str() {
            Some("message") => return frame,
            Some("presence" | "ack") => {}
            _ => panic!("expected a message, got {frame}"),
        }
    }
}

/// Reads until the server's close frame; returns its code and reason.
/// Text frames before it are returned too.
pub(crate) async fn recv_close(ws: &mut Ws) -> (u16, String, Vec<Value>) {
    let mut texts = Vec::new();
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("no close frame in time");
        match msg {
            Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                return (code.into(), reason.to_string(), texts);
            }
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(Message::Text(t))) => texts.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("read error before the close frame (a 1006 in a browser): {e}"),
            None => panic!("stream ended without a close frame (a 1006 in a browser)"),
        }
    }
}

pub(crate) async fn publish(ws: &mut Ws, data: Value) {
    let frame = serde_json::json!({"type": "publish", "data": data}).to_string();
    ws.send(Message::text(frame)).await.unwrap();
}

/// A plain HTTP request: `(status, headers, body)`.
pub(crate) async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap();
    let mut stream = TcpStream::connect(host).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// Base64url without padding, as JWTs and JWKs use it.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A request to the HTTP API with the test API key: `(status, body as JSON)` (a body that is
/// not JSON comes back as a JSON string).
pub(crate) async fn api(server: &Server, method: &str, path: &str, body: &str) -> (u16, Value) {
    api_with(server, method, path, body, &[]).await
}

/// [`api`] with `extra` headers.
pub(crate) async fn api_with(
    server: &Server,
    method: &str,
    path: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let key = format!("Bearer {API_KEY}");
    let mut headers = vec![
        ("authorization", key.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    let (status, _, body) = http(method, &server.http(path), &headers, body).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}
