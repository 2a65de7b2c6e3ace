//! `chaos`: the workload of `cargo xtask chaos`. Clients and publishers spread over several
//! `wshub` nodes while the xtask kills nodes and breaks Redis under them; this side only
//! records, and `xtask/src/chaos/check.rs` judges.
//!
//! - Clients: v1 (`/ws/projects/{p}`, one project each) and v2 (`GET /ws?subscribe=a,b`,
//!   two projects each). Whenever a connection ends they reconnect, to the next node, with
//!   `since`/`epoch` (v1) or `since.<p>`/`epoch.<p>` per subscription (v2), after a short
//!   jittered pause.
//! - Publishers: on every node, one v1 WebSocket per project publishing with an `id` and
//!   waiting for its `ack`, and one HTTP client (`POST /api/projects/{p}/messages`). Each
//!   message's `data` is `{"id": "<unique>"}`; an acknowledged publish is recorded with the
//!   offset it was given, a failed or unanswered one as not acknowledged.
//! - The trace (one JSON object a line, `--trace`): `session` (a welcome or `subscribed`:
//!   node, what was asked, epoch, offset, recovered), `msg` (client, project, offset, id),
//!   `unsub` (the server ended a v2 subscription; the client subscribes again in-band with
//!   `since`/`epoch`), `end` (why a connection ended), `ack` and `nack`. Written once the run ends.
//!
//! After `--duration` the publishers stop; the clients stay until nothing has arrived for
//! `--quiet` (at most `--settle`), so every client can catch up once the faults have stopped.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use ws_auth::{Claims, JwtSigner};

use crate::conn::{Ws, close_code};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Every node's address, comma-separated (clients and publishers go round them).
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<SocketAddr>,
    /// Clients in all (v1 and v2).
    #[arg(long, default_value_t = 300)]
    clients: usize,
    /// Percent of the clients that speak v2 (two subscriptions each).
    #[arg(long, default_value_t = 20)]
    v2_pct: usize,
    /// Projects the clients and publishers share.
    #[arg(long, default_value_t = 8)]
    projects: usize,
    /// How long the publishers publish.
    #[arg(long, default_value = "60s", value_parser = crate::humantime_duration)]
    duration: Duration,
    /// Pause between two publishes of one publisher.
    #[arg(long, default_value = "1s", value_parser = crate::humantime_duration)]
    interval: Duration,
    /// After the publishers stop: the run ends once nothing arrived for this long...
    #[arg(long, default_value = "3s", value_parser = crate::humantime_duration)]
    quiet: Duration,
    /// ... or after this long, whichever comes first.
    #[arg(long, default_value = "30s", value_parser = crate::humantime_duration)]
    settle: Duration,
    /// The API key of the HTTP publishers.
    #[arg(long)]
    api_key: String,
    /// Where the trace goes.
    #[arg(long)]
    trace: PathBuf,
}

/// Milliseconds since the Unix epoch: the trace and the xtask's fault log share this clock.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What every task shares (one thread: `Rc`).
struct Shared {
    nodes: Vec<SocketAddr>,
    token: HeaderValue,
    api_key: String,
    trace: RefCell<Vec<String>>,
    /// Set once the run is over: clients close and stop reconnecting.
    over: Cell<bool>,
    /// Set once the publishers must stop.
    publishing_over: Cell<bool>,
    last_delivery: Cell<Instant>,
    reconnects: Cell<u64>,
}

impl Shared {
    fn record(&self, event: Value) {
        self.trace.borrow_mut().push(event.to_string());
    }
}

/// A small xorshift for jitter: no `rand` in the generator.
struct Jitter(u64);

impl Jitter {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

pub(crate) async fn run(options: Options) -> anyhow::Result<Value> {
    let signer = JwtSigner::hs256(
        std::env::var("WSHUB_BENCH_SECRET").context("WSHUB_BENCH_SECRET is not set")?,
    );
    let claims = Claims::new("chaos", ["*"], Duration::from_secs(86_400));
    let token = HeaderValue::from_str(&format!("Bearer {}", signer.sign(&claims)?))?;
    let shared = Rc::new(Shared {
        nodes: options.nodes.clone(),
        token,
        api_key: options.api_key.clone(),
        trace: RefCell::new(Vec::new()),
        over: Cell::new(false),
        publishing_over: Cell::new(false),
        last_delivery: Cell::new(Instant::now()),
        reconnects: Cell::new(0),
    });
    let projects: Vec<String> = (0..options.projects.max(1))
        .map(|p| format!("chaos-{p}"))
        .collect();
    let v2_clients = options.clients * options.v2_pct.min(100) / 100;
    let mut clients = Vec::new();
    for c in 0..options.clients {
        let shared = Rc::clone(&shared);
        let subs: Vec<String> = if c < v2_clients {
            vec![
                projects[c % projects.len()].clone(),
                projects[(c + 1) % projects.len()].clone(),
            ]
        } else {
            vec![projects[c % projects.len()].clone()]
        };
        clients.push(tokio::task::spawn_local(client(
            shared,
            c,
            subs,
            c < v2_clients,
        )));
    }
    // Everyone connects before anyone publishes, so that every client's first session
    // starts before the first message (not needed by the checker, but it makes the
    // deliveries count).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut publishers = Vec::new();
    for node in 0..shared.nodes.len() {
        for (p, project) in projects.iter().enumerate() {
            publishers.push(tokio::task::spawn_local(ws_publisher(
                Rc::clone(&shared),
                node,
                project.clone(),
                options.interval,
                (node * 1000 + p) as u64 + 1,
            )));
        }
        publishers.push(tokio::task::spawn_local(http_publisher(
            Rc::clone(&shared),
            node,
            projects.clone(),
            options.interval / 3,
        )));
    }
    tokio::time::sleep(options.duration).await;
    shared.publishing_over.set(true);
    for publisher in publishers {
        let _ = publisher.await;
    }
    let stopped = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let quiet = shared.last_delivery.get().elapsed() >= options.quiet
            && stopped.elapsed() >= options.quiet;
        if quiet || stopped.elapsed() >= options.settle {
            break;
        }
    }
    shared.over.set(true);
    for client in clients {
        let _ = client.await;
    }
    let trace = shared.trace.borrow();
    let mut text = trace.join("\n");
    text.push('\n');
    std::fs::write(&options.trace, text)
        .with_context(|| format!("writing {}", options.trace.display()))?;
    Ok(json!({
        "case": "chaos",
        "clients": options.clients,
        "v2_clients": v2_clients,
        "projects": projects.len(),
        "reconnects": shared.reconnects.get(),
        "trace_lines": trace.len(),
        "settled_s": crate::round1(stopped.elapsed().as_secs_f64()),
    }))
}

/// One WebSocket to `node` at `path_and_query`, with the token (and `wshub.v2` for v2).
async fn open(shared: &Shared, node: usize, path: &str, v2: bool) -> anyhow::Result<Ws> {
    let addr = shared.nodes[node];
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", shared.token.clone());
    if v2 {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("wshub.v2"),
        );
    }
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(ws)
}

/// Where a client is in one project: what it asks for when it recovers.
#[derive(Clone, Default)]
struct Position {
    epoch: Option<String>,
    offset: u64,
}

/// A client: connects, reads, reconnects with recovery until the run is over.
async fn client(shared: Rc<Shared>, id: usize, subs: Vec<String>, v2: bool) {
    let mut positions: HashMap<String, Position> = HashMap::new();
    let mut jitter = Jitter(id as u64 * 2_654_435_761 + 1);
    let mut attempt = 0usize;
    while !shared.over.get() {
        let node = (id + attempt) % shared.nodes.len();
        attempt += 1;
        if attempt > 1 {
            shared.reconnects.set(shared.reconnects.get() + 1);
        }
        let path = if v2 {
            let mut q = format!("/ws?subscribe={}", subs.join(","));
            for p in &subs {
                if let Some(Position {
                    epoch: Some(e),
                    offset,
                }) = positions.get(p)
                {
                    q.push_str(&format!("&since.{p}={offset}&epoch.{p}={e}"));
                }
            }
            q
        } else {
            let p = &subs[0];
            match positions.get(p) {
                Some(Position {
                    epoch: Some(e),
                    offset,
                }) => format!("/ws/projects/{p}?since={offset}&epoch={e}"),
                _ => format!("/ws/projects/{p}"),
            }
        };
        let opened = tokio::time::timeout(Duration::from_secs(5), open(&shared, node, &path, v2));
        let mut ws = match opened.await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                shared.record(json!({"k":"connect_failed","client":id,"node":node,"error":e.to_string(),"t":now_ms()}));
                tokio::time::sleep(Duration::from_millis(200 + jitter.below(400))).await;
                continue;
            }
            Err(_) => {
                shared.record(json!({"k":"connect_failed","client":id,"node":node,"error":"timeout","t":now_ms()}));
                continue;
            }
        };
        let mut asked = positions.clone();
        let ended = read_session(
            &shared,
            id,
            node,
            &subs,
            v2,
            &mut asked,
            &mut positions,
            &mut ws,
        )
        .await;
        shared.record(json!({"k":"end","client":id,"node":node,"reason":ended,"t":now_ms()}));
        if shared.over.get() {
            let _ = ws.close(None).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100 + jitter.below(400))).await;
    }
}

/// Reads one connection until it ends or the run is over; returns why it ended.
#[allow(clippy::too_many_arguments)]
async fn read_session(
    shared: &Shared,
    id: usize,
    node: usize,
    subs: &[String],
    v2: bool,
    asked: &mut HashMap<String, Position>,
    positions: &mut HashMap<String, Position>,
    ws: &mut Ws,
) -> String {
    loop {
        if shared.over.get() {
            return "run over".to_owned();
        }
        let next = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
        let frame = match next {
            Err(_) => continue,
            Ok(None) => return "stream ended".to_owned(),
            Ok(Some(Err(e))) => return format!("error: {e}"),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Some(code) = close_code(&frame) {
            return format!("close {code}");
        }
        let Message::Text(text) = frame else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return format!("not JSON: {text}");
        };
        let kind = v["type"].as_str().unwrap_or("");
        let project = if v2 {
            v["project"].as_str().unwrap_or("").to_owned()
        } else {
            subs[0].clone()
        };
        match kind {
            "welcome" if v2 => {}
            "welcome" | "subscribed" => {
                let ask = asked.get(&project);
                shared.record(json!({
                    "k": "session", "client": id, "node": node, "v2": v2, "project": project,
                    "since": ask.map(|a| a.offset), "asked_epoch": ask.and_then(|a| a.epoch.clone()),
                    "epoch": v["epoch"], "offset": v["offset"], "recovered": v["recovered"],
                    "lost_reason": v["lost_reason"], "t": now_ms(),
                }));
                let epoch = v["epoch"].as_str().map(str::to_owned);
                let offset = if v["recovered"] == json!(true) {
                    ask.map_or(0, |a| a.offset)
                } else {
                    v["offset"].as_u64().unwrap_or(0)
                };
                positions.insert(project, Position { epoch, offset });
            }
            "message" => {
                let offset = v["offset"].as_u64();
                shared.record(json!({
                    "k": "msg", "client": id, "project": project, "offset": offset,
                    "id": v["data"]["id"],
                }));
                shared.last_delivery.set(Instant::now());
                if let (Some(pos), Some(offset)) = (positions.get_mut(&project), offset) {
                    pos.offset = offset;
                }
            }
            // A v2 subscription the server ended (its history was lost, ...): subscribe
            // again on the same connection, recovering from where it was.
            "unsubscribed" if v2 => {
                shared.record(json!({
                    "k": "unsub", "client": id, "project": project, "reason": v["reason"],
                    "t": now_ms(),
                }));
                let at = positions.get(&project).cloned().unwrap_or_default();
                let mut frame = json!({"type": "subscribe", "project": project});
                if let Some(epoch) = &at.epoch {
                    frame["since"] = json!(at.offset);
                    frame["epoch"] = json!(epoch);
                }
                asked.insert(project, at);
                if ws.send(Message::text(frame.to_string())).await.is_err() {
                    return "send failed".to_owned();
                }
            }
            _ => {}
        }
    }
}

/// Publishes `{"id"}` to `project` through `node` every `interval`, over a v1 WebSocket,
/// waiting for each ack; reconnects (without recovery: it only publishes) when it ends.
async fn ws_publisher(
    shared: Rc<Shared>,
    node: usize,
    project: String,
    interval: Duration,
    seed: u64,
) {
    let mut jitter = Jitter(seed * 7919);
    let mut seq = 0u64;
    tokio::time::sleep(Duration::from_millis(jitter.below(1000))).await;
    let mut attempts = 0u32;
    'connect: while !shared.publishing_over.get() {
        // Not straight back: while Redis is down a node refuses registrations at once (1013).
        if attempts > 0 {
            tokio::time::sleep(Duration::from_millis(200 + jitter.below(300))).await;
        }
        attempts += 1;
        let path = format!("/ws/projects/{project}");
        let Ok(Ok(mut ws)) =
            tokio::time::timeout(Duration::from_secs(5), open(&shared, node, &path, false)).await
        else {
            continue;
        };
        while !shared.publishing_over.get() {
            seq += 1;
            let msg_id = format!("ws-{node}-{project}-{seq}");
            let frame = json!({"type":"publish","id":msg_id,"data":{"id":msg_id}}).to_string();
            let sent_at = now_ms();
            if ws.send(Message::text(frame)).await.is_err() {
                shared.record(json!({"k":"nack","id":msg_id,"project":project,"why":"send failed","t":sent_at}));
                continue 'connect;
            }
            // The ack (or an error frame naming the id) within 5 s; messages in between are
            // the project's traffic, which the clients record.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let outcome = loop {
                match tokio::time::timeout_at(deadline, ws.next()).await {
                    Err(_) => break Err("no ack within 5 s".to_owned()),
                    Ok(None | Some(Err(_))) => break Err("connection ended".to_owned()),
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let Ok(v) = serde_json::from_str::<Value>(&text) else {
                            continue;
                        };
                        // A v1 error frame names no request (SPEC §4); one publish is in
                        // flight, so it is this one's.
                        if v["type"] == "error" && v["id"].is_null() {
                            break Err(format!("error {}", v["code"]));
                        }
                        if v["id"] != json!(msg_id) {
                            continue;
                        }
                        match (v["type"].as_str(), v["offset"].as_u64()) {
                            (Some("ack"), Some(offset)) => break Ok(offset),
                            _ => break Err(text.to_string()),
                        }
                    }
                    Ok(Some(Ok(other))) => {
                        if let Some(code) = close_code(&other) {
                            break Err(format!("closed {code}"));
                        }
                    }
                }
            };
            match outcome {
                Ok(offset) => shared.record(json!({
                    "k": "ack", "id": msg_id, "project": project, "offset": offset,
                    "via": "ws", "node": node, "sent": sent_at, "t": now_ms(),
                })),
                Err(why) => {
                    shared.record(
                        json!({"k":"nack","id":msg_id,"project":project,"why":why,"t":sent_at}),
                    );
                    continue 'connect;
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// Publishes through `POST /api/projects/{p}/messages` on `node`, cycling the projects.
async fn http_publisher(
    shared: Rc<Shared>,
    node: usize,
    projects: Vec<String>,
    interval: Duration,
) {
    let mut seq = 0u64;
    while !shared.publishing_over.get() {
        seq += 1;
        let project = &projects[seq as usize % projects.len()];
        let msg_id = format!("http-{node}-{seq}");
        let sent_at = now_ms();
        let body = json!({"data":{"id":msg_id}}).to_string();
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            http_post(
                shared.nodes[node],
                &format!("/api/projects/{project}/messages"),
                &shared.api_key,
                &body,
            ),
        )
        .await;
        match outcome {
            Ok(Ok((202, reply))) => match reply["offset"].as_u64() {
                Some(offset) => shared.record(json!({
                    "k": "ack", "id": msg_id, "project": project, "offset": offset,
                    "via": "http", "node": node, "sent": sent_at, "t": now_ms(),
                })),
                None => shared.record(json!({"k":"nack","id":msg_id,"project":project,"why":"202 without offset","t":sent_at})),
            },
            Ok(Ok((status, _))) => shared.record(
                json!({"k":"nack","id":msg_id,"project":project,"why":format!("HTTP {status}"),"t":sent_at}),
            ),
            Ok(Err(e)) => shared.record(
                json!({"k":"nack","id":msg_id,"project":project,"why":e.to_string(),"t":sent_at}),
            ),
            Err(_) => shared.record(
                json!({"k":"nack","id":msg_id,"project":project,"why":"timeout","t":sent_at}),
            ),
        }
        tokio::time::sleep(interval).await;
    }
}

/// One HTTP/1.1 POST with `Connection: close`; the status and the JSON body.
async fn http_post(
    addr: SocketAddr,
    path: &str,
    api_key: &str,
    body: &str,
) -> anyhow::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {api_key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    let reply = String::from_utf8_lossy(&reply);
    let status: u16 = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}
