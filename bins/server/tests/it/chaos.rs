//! Chaos clients: each misbehaves in one way while 100 well-behaved clients, over two
//! projects, exchange messages. Each chaos client gets its documented reaction
//! (docs/close-codes.md), read from the close frame on the raw socket or from the TCP end;
//! afterwards every well-behaved client has received every message of its project exactly
//! once and in order, and a new client still connects.
//!
//! Over 800 lines on purpose: the crowd and the raw frame builder are shared by every chaos
//! client, and each chaos client is a few dozen lines beside them.
//!
//! Chaos clients speak raw WebSocket over a tokio `TcpStream`: the upgrade by hand, then
//! frames built byte by byte (masked, as a client's must be), so they can send what no
//! WebSocket library would.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// The well-behaved clients: two projects of 50.
const PROJECTS: [&str; 2] = ["crowd-a", "crowd-b"];
const PER_PROJECT: usize = 50;
/// Each well-behaved client publishes once per `PACE`: 500 publishes a second in all, each
/// delivered to 50 members.
const PACE: Duration = Duration::from_millis(200);
/// Each publishes at least this many messages, so the traffic lasts at least a second
/// even around a chaos client that is dealt with at once.
const MIN_ROUNDS: u64 = 6;

// Opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

// === the well-behaved crowd ===

/// What one well-behaved client published and received.
#[derive(Debug)]
struct Tally {
    user: String,
    project: usize,
    sent: u64,
    acks: u64,
    received: u64,
    /// Per sender: how many messages it said it published (its `last` message's `seq` + 1).
    senders: BTreeMap<String, u64>,
}

/// 100 clients publishing every [`PACE`] until told to stop, each checking what it reads.
struct Crowd {
    stop: watch::Sender<bool>,
    members: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Crowd {
    /// Connects every member and returns once each has published at least once.
    async fn start(server: &Server) -> Self {
        let (stop, stopped) = watch::channel(false);
        let (started_tx, mut started) = mpsc::channel(PROJECTS.len() * PER_PROJECT);
        let joined = futures_util::stream::iter(
            (0..PROJECTS.len()).flat_map(|p| (0..PER_PROJECT).map(move |i| (p, i))),
        )
        .map(|(p, i)| async move {
            let user = format!("{}-{i}", PROJECTS[p]);
            let (ws, welcome) = join(server, PROJECTS[p], &user).await;
            (p, user, ws, welcome["offset"].as_u64().unwrap())
        })
        .buffer_unordered(20)
        .collect::<Vec<_>>()
        .await;
        // Nobody publishes before everyone is in: each member must see every message.
        let members = joined
            .into_iter()
            .map(|(p, user, ws, offset)| {
                tokio::spawn(member(
                    ws,
                    p,
                    user,
                    offset,
                    stopped.clone(),
                    started_tx.clone(),
                ))
            })
            .collect();
        for _ in 0..PROJECTS.len() * PER_PROJECT {
            tokio::time::timeout(STEP, started.recv())
                .await
                .expect("every member publishes")
                .unwrap();
        }
        Self { stop, members }
    }

    /// Tells every member to publish its last message, waits until each has read every
    /// message of its project, and checks the counts: every member received exactly what
    /// the members of its project published, each sender's messages in order.
    /// Returns the number of messages per project.
    async fn finish(self) -> Vec<u64> {
        self.stop.send(true).unwrap();
        let mut tallies = Vec::new();
        for member in self.members {
            tallies.push(
                tokio::time::timeout(STEP * 2, member)
                    .await
                    .expect("a member finishes")
                    .expect("a member's checks hold"),
            );
        }
        let mut totals = Vec::new();
        for p in 0..PROJECTS.len() {
            let project: Vec<&Tally> = tallies.iter().filter(|t| t.project == p).collect();
            assert_eq!(project.len(), PER_PROJECT);
            let published: BTreeMap<String, u64> =
                project.iter().map(|t| (t.user.clone(), t.sent)).collect();
            let total: u64 = published.values().sum();
            for t in &project {
                assert_eq!(t.acks, t.sent, "{}: one ack per publish", t.user);
                assert_eq!(
                    t.senders, published,
                    "{}: every sender's messages, and no other",
                    t.user
                );
                assert_eq!(t.received, total, "{}: every message exactly once", t.user);
            }
            totals.push(total);
        }
        eprintln!(
            "crowd: {} clients each received every message of its project ({} and {} messages)",
            tallies.len(),
            totals[0],
            totals[1]
        );
        totals
    }
}

/// One well-behaved client: publishes `{"seq": n}` every [`PACE`] (the first at once),
/// then `{"seq": n, "last": true}` once `stop` says so, and reads until it has every
/// sender's last message and its own acks. Offsets must follow each other without a gap
/// and each sender's `seq` must count up from 0.
async fn member(
    mut ws: Ws,
    project: usize,
    user: String,
    mut offset: u64,
    stop: watch::Receiver<bool>,
    started: mpsc::Sender<()>,
) -> Tally {
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tally = Tally {
        user,
        project,
        sent: 0,
        acks: 0,
        received: 0,
        senders: BTreeMap::new(),
    };
    let mut next_seq: BTreeMap<String, u64> = BTreeMap::new();
    let mut done = false;
    while !(done && tally.acks == tally.sent && tally.senders.len() == PER_PROJECT) {
        tokio::select! {
            _ = tick.tick(), if !done => {
                let last = *stop.borrow() && tally.sent + 1 >= MIN_ROUNDS;
                let data = json!({"seq": tally.sent, "last": last});
                let frame = json!({"type": "publish", "data": data}).to_string();
                ws.send(Message::text(frame)).await.unwrap();
                tally.sent += 1;
                if tally.sent == 1 {
                    started.send(()).await.unwrap();
                }
                done = last;
            }
            frame = tokio::time::timeout(STEP, ws.next()) => {
                let frame = frame
                    .unwrap_or_else(|_| panic!("{}: no frame in time", tally.user))
                    .unwrap_or_else(|| panic!("{}: the connection ended", tally.user))
                    .unwrap_or_else(|e| panic!("{}: read error {e}", tally.user));
                let text = match frame {
                    Message::Text(text) => text,
                    Message::Ping(_) | Message::Pong(_) => continue,
                    other => panic!("{}: unexpected {other:?}", tally.user),
                };
                let v: Value = serde_json::from_str(&text).unwrap();
                match v["type"].as_str().unwrap() {
                    "message" => {
                        assert_eq!(v["offset"], offset + 1, "{}: no gap, no duplicate", tally.user);
                        offset += 1;
                        tally.received += 1;
                        let from = v["from"].as_str().unwrap().to_owned();
                        let seq = next_seq.entry(from.clone()).or_default();
                        assert_eq!(v["data"]["seq"], *seq, "{}: {from}'s messages in order", tally.user);
                        *seq += 1;
                        if v["data"]["last"] == true {
                            tally.senders.insert(from, *seq);
                        }
                    }
                    "ack" => tally.acks += 1,
                    "presence" => {}
                    _ => panic!("{}: unexpected {v}", tally.user),
                }
            }
        }
    }
    // A close handshake, so the server logs a normal close.
    ws.close(None).await.unwrap();
    while let Some(frame) = tokio::time::timeout(STEP, ws.next()).await.unwrap() {
        if let Err(e) = frame {
            panic!("{}: {e} after its close", tally.user);
        }
    }
    tally
}

/// The server still serves: a new client connects, publishes and receives its message.
async fn still_serves(server: &Server, expected_offset: u64) {
    let (mut late, _) = join(server, PROJECTS[0], "late").await;
    publish(&mut late, json!("still serving")).await;
    let msg = recv_message(&mut late).await;
    assert_eq!(msg["data"], "still serving");
    assert_eq!(msg["offset"], expected_offset);
    late.close(None).await.unwrap();
    // The echo, then the end: the late client's close logs no warning.
    while let Some(frame) = tokio::time::timeout(STEP, late.next()).await.unwrap() {
        match frame {
            Ok(Message::Close(_) | Message::Text(_)) | Err(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// Runs `chaos` while the crowd exchanges messages, then checks the crowd and that the
/// server still serves. Returns what `chaos` returned.
async fn amid_the_crowd<T>(server: &Server, chaos: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let crowd = Crowd::start(server).await;
    eprintln!(
        "crowd of 100 connected and publishing after {:?}",
        started.elapsed()
    );
    let out = chaos.await;
    let totals = crowd.finish().await;
    still_serves(server, totals[0] + 1).await;
    assert_no_errors(server);
    out
}

/// No ERROR line and nothing on stderr (a panic would be there).
fn assert_no_errors(server: &Server) {
    let errors: Vec<String> = server
        .logs()
        .into_iter()
        .filter(|l| l.contains(r#""level":"ERROR""#) || l.starts_with("stderr"))
        .collect();
    assert_eq!(errors, Vec::<String>::new());
}

// === a raw WebSocket client ===

/// A frame from the server (unmasked).
#[derive(Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A WebSocket client that writes whatever bytes it is told to.
struct Raw {
    tcp: TcpStream,
    /// Bytes read but not yet parsed into frames.
    buf: Vec<u8>,
    conn: u64,
}

/// How the server reacted to a chaos client.
#[derive(Debug)]
struct Reaction {
    code: u16,
    reason: String,
    /// From the misbehaviour to the close frame.
    after: Duration,
    /// Text frames read before the close frame.
    texts: usize,
}

impl Raw {
    async fn connect(server: &Server, project: &str, user: &str) -> Self {
        Self::connect_on(TcpSocket::new_v4().unwrap(), server, project, user).await
    }

    /// Upgrades by hand over `socket` and reads the welcome.
    async fn connect_on(socket: TcpSocket, server: &Server, project: &str, user: &str) -> Self {
        let mut tcp = socket.connect(server.addr).await.unwrap();
        let request = format!(
            "GET /ws/projects/{project} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
            server.addr,
            token(user, &[project])
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(STEP, tcp.read(&mut chunk))
                .await
                .expect("the upgrade answer in time")
                .unwrap();
            assert!(n > 0, "connection ended during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        buf.drain(..head_end);
        let mut raw = Self { tcp, buf, conn: 0 };
        let welcome = raw.next_frame().await.expect("the welcome");
        assert_eq!(welcome.opcode, TEXT);
        let welcome: Value = serde_json::from_slice(&welcome.payload).unwrap();
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        raw.conn = welcome["conn"].as_u64().unwrap();
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` when the connection ended (EOF or reset).
    async fn next_frame(&mut self) -> Option<Frame> {
        let (mut read, _) = self.tcp.split();
        read_frame(&mut read, &mut self.buf).await
    }

    /// Reads until the server's close frame, which must come within `limit` of `since`.
    async fn close_frame(&mut self, since: Instant, limit: Duration) -> Reaction {
        let (mut read, _) = self.tcp.split();
        read_close(&mut read, &mut self.buf, since, limit).await
    }

    /// After the close frame: the server ends the connection within `limit`.
    async fn ended_within(&mut self, limit: Duration) {
        let started = Instant::now();
        let conn = self.conn;
        loop {
            let frame = tokio::time::timeout(limit, self.next_frame())
                .await
                .unwrap_or_else(|_| panic!("the connection was not ended within {limit:?}"));
            match frame {
                None => break,
                Some(f) => assert_ne!(f.opcode, TEXT, "nothing after the close frame: {f:?}"),
            }
        }
        assert!(started.elapsed() < limit);
        eprintln!(
            "conn {conn}: TCP ended {:?} after the close frame",
            started.elapsed()
        );
    }
}

/// Reads one server frame from `read`, buffering in `buf`; `None` at EOF or on a reset.
async fn read_frame(read: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Option<Frame> {
    loop {
        if let Some((frame, used)) = parse_frame(buf) {
            buf.drain(..used);
            return Some(frame);
        }
        buf.reserve(16 * 1024);
        match read.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Reads until the close frame; panics if the connection ends first or `limit` passes.
async fn read_close(
    read: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    since: Instant,
    limit: Duration,
) -> Reaction {
    let deadline = tokio::time::Instant::from_std(since + limit);
    let mut texts = 0;
    loop {
        let frame = tokio::time::timeout_at(deadline, read_frame(read, buf))
            .await
            .unwrap_or_else(|_| panic!("no close frame within {limit:?}"))
            .expect("the connection ended without a close frame");
        match frame.opcode {
            CLOSE => {
                assert!(frame.fin);
                let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
                return Reaction {
                    code,
                    reason: String::from_utf8(frame.payload[2..].to_vec()).unwrap(),
                    after: since.elapsed(),
                    texts,
                };
            }
            TEXT => texts += 1,
            PING | PONG => {}
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

/// Parses one unmasked frame at the start of `buf`: the frame and its length in bytes.
fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames are not masked");
    let (header, len) = match buf[1] & 0x7f {
        126 => (
            4,
            u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize,
        ),
        127 => (
            10,
            u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize,
        ),
        n => (2, n as usize),
    };
    let payload = buf.get(header..header + len)?.to_vec();
    let frame = Frame {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0f,
        payload,
    };
    Some((frame, header + len))
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame header for a payload of `len` bytes, mask key included.
fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out
}

/// `payload` masked with [`MASK`], as the bytes following [`header`].
fn masked(payload: &[u8]) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ MASK[i % 4])
        .collect()
}

/// A whole masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(fin, opcode, payload.len() as u64);
    out.extend_from_slice(&masked(payload));
    out
}

/// Waits for the connection's last log line; returns it.
async fn close_log(server: &Server, conn: u64) -> Value {
    let tag = format!(r#""conn":{conn}"#);
    server
        .wait_for_log("the connection's end", |l| {
            l.contains(&tag) && l.contains("connection closed")
        })
        .await;
    server
        .logs()
        .iter()
        .filter(|l| l.contains(&tag) && l.contains("connection closed"))
        .map(|l| serde_json::from_str(l).unwrap())
        .next()
        .unwrap()
}

// === the chaos clients ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_reset_mid_frame_is_dropped_quietly() {
    let server = Server::start("");
    let conn = amid_the_crowd(&server, async {
        let mut raw = Raw::connect(&server, PROJECTS[0], "resetter").await;
        // A text frame promising 100 bytes, 10 of them sent, then RST.
        let mut bytes = header(true, TEXT, 100);
        bytes.extend_from_slice(&masked(b"{\"type\":\"p"));
        raw.send(&bytes).await;
        raw.tcp.set_zero_linger().unwrap();
        let reset_at = Instant::now();
        let conn = raw.conn;
        drop(raw);
        let line = close_log(&server, conn).await;
        eprintln!(
            "reset mid-frame: logged {:?} after {:?}: {line}",
            line["code"],
            reset_at.elapsed()
        );
        assert_eq!(line["code"], 1006, "{line}");
        assert_eq!(line["by"], "client", "{line}");
        assert_eq!(line["level"], "WARN", "{line}");
        conn
    })
    .await;
    let warnings = server.warnings();
    assert!(
        warnings
            .iter()
            .all(|l| l.contains(&format!(r#""conn":{conn}"#))),
        "only the reset connection is worth a warning: {warnings:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_header_promising_2_gib_is_refused_with_1009_at_once() {
    let server = Server::start("");
    amid_the_crowd(&server, async {
        let mut raw = Raw::connect(&server, PROJECTS[0], "greedy").await;
        let mut bytes = header(true, TEXT, 2 << 30);
        bytes.extend_from_slice(&masked(b"{\"type\":\"publish\",\"data\":\""));
        let sent = Instant::now();
        raw.send(&bytes).await;
        let reaction = raw.close_frame(sent, Duration::from_secs(2)).await;
        eprintln!("2 GiB header: {reaction:?}");
        // At once: nothing of the 2 GiB was waited for (reading them would take seconds).
        assert!(reaction.after < Duration::from_secs(1), "{reaction:?}");
        assert_eq!(
            (reaction.code, reaction.reason.as_str()),
            (1009, "message too big")
        );
        raw.ended_within(Duration::from_secs(3)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_frame_then_silence_ends_with_1001_within_the_idle_timeout() {
    let server = Server::start("[timeouts]\nping_interval = \"1s\"\npong_timeout = \"1s\"\n");
    amid_the_crowd(&server, async {
        // The server's clock for the connection starts between these two instants.
        let connecting = Instant::now();
        let mut raw = Raw::connect(&server, PROJECTS[0], "silent").await;
        let welcomed = Instant::now();
        let mut bytes = header(true, TEXT, 40);
        bytes.extend_from_slice(&masked(b"{\"type\":\"publish\""));
        raw.send(&bytes).await;
        // Nothing complete ever arrives from it: ping_interval + pong_timeout = 2 s after
        // the connection opened, pings unanswered; 3 s of slack for a busy machine.
        let reaction = raw.close_frame(welcomed, Duration::from_secs(5)).await;
        let since_connecting = connecting.elapsed();
        eprintln!(
            "half a frame, then silence: {reaction:?} ({since_connecting:?} after connecting)"
        );
        assert_eq!(
            (reaction.code, reaction.reason.as_str()),
            (1001, "ping timeout")
        );
        assert!(
            since_connecting >= Duration::from_secs(2),
            "not before the idle timeout: {since_connecting:?}"
        );
        raw.ended_within(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_answered_and_the_flooder_stays_connected() {
    const PINGS: u64 = 20_000;
    let server = Server::start("");
    amid_the_crowd(&server, async {
        let mut raw = Raw::connect(&server, PROJECTS[0], "flooder").await;
        let started = Instant::now();
        let (mut read, mut write) = raw.tcp.split();
        let buf = &mut raw.buf;
        let writing = async {
            for batch in (0..PINGS).collect::<Vec<_>>().chunks(500) {
                let bytes: Vec<u8> = batch
                    .iter()
                    .flat_map(|i| frame(true, PING, &i.to_be_bytes()))
                    .collect();
                write.write_all(&bytes).await.unwrap();
            }
            started.elapsed()
        };
        // Pongs answer pings in order; one pending pong may be replaced by a newer one
        // (RFC 6455 §5.5.3 lets an endpoint answer only the most recent ping).
        let reading = async {
            let mut pongs = 0u64;
            let mut last = None;
            while last != Some(PINGS - 1) {
                let frame = tokio::time::timeout(STEP, read_frame(&mut read, buf))
                    .await
                    .expect("pongs keep coming")
                    .expect("the flooder is not disconnected");
                match frame.opcode {
                    PONG => {
                        let n = u64::from_be_bytes(frame.payload.try_into().unwrap());
                        assert!(last.is_none_or(|l| n > l), "pongs in order");
                        last = Some(n);
                        pongs += 1;
                    }
                    TEXT | PING => {}
                    other => panic!("unexpected opcode {other:#x}"),
                }
            }
            (pongs, started.elapsed())
        };
        let (wrote_in, (pongs, answered_in)) = tokio::join!(writing, reading);
        eprintln!(
            "ping flood: {PINGS} pings written in {wrote_in:?}, {pongs} pongs, the last ping answered after {answered_in:?}"
        );
        assert!(pongs >= 1);
        // Still open and served: a polite close is echoed.
        let close = frame(true, CLOSE, &[0x03, 0xe8]);
        raw.send(&close).await;
        let reaction = raw.close_frame(Instant::now(), STEP).await;
        assert_eq!(reaction.code, 1000, "the echo of the flooder's own close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_ending_fragmented_message_is_refused_with_1009() {
    const CHUNK: usize = 4096;
    let server = Server::start("");
    amid_the_crowd(&server, async {
        let mut raw = Raw::connect(&server, PROJECTS[0], "fragmenter").await;
        let started = Instant::now();
        let (mut read, mut write) = raw.tcp.split();
        let chunk = vec![b'a'; CHUNK];
        let writing = async {
            let mut sent = 0usize;
            let mut bytes = frame(false, TEXT, b"{\"type\":\"publish\",\"data\":\"");
            loop {
                if write.write_all(&bytes).await.is_err() {
                    return sent;
                }
                sent += CHUNK;
                bytes = frame(false, CONTINUATION, &chunk);
            }
        };
        let reading = read_close(&mut read, &mut raw.buf, started, Duration::from_secs(5));
        // The writer only stops on an error; the close frame is what this waits for.
        let reaction = tokio::select! {
            reaction = reading => reaction,
            sent = writing => panic!("writes failed after {sent} bytes, before any close frame"),
        };
        eprintln!("fragments forever: {reaction:?}");
        assert_eq!(
            (reaction.code, reaction.reason.as_str()),
            (1009, "message too big")
        );
        raw.ended_within(Duration::from_secs(3)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_frames_are_refused_with_1009() {
    const MIB: usize = 1 << 20;
    let server = Server::start("");
    amid_the_crowd(&server, async {
        let mut raw = Raw::connect(&server, PROJECTS[0], "bulky").await;
        let started = Instant::now();
        let (mut read, mut write) = raw.tcp.split();
        let writing = async {
            let payload = format!(
                "{{\"type\":\"publish\",\"data\":\"{}\"}}",
                "b".repeat(MIB - 30)
            );
            let bytes = frame(true, TEXT, payload.as_bytes());
            assert!(bytes.len() > MIB);
            loop {
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        };
        let reading = read_close(&mut read, &mut raw.buf, started, Duration::from_secs(2));
        let reaction = tokio::select! {
            reaction = reading => reaction,
            () = writing => panic!("writes failed before any close frame"),
        };
        eprintln!("1 MiB frames: {reaction:?}");
        assert_eq!(
            (reaction.code, reaction.reason.as_str()),
            (1009, "message too big")
        );
        raw.ended_within(Duration::from_secs(3)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_is_refused_with_1007() {
    let server = Server::start("");
    amid_the_crowd(&server, async {
        let mut raw = Raw::connect(&server, PROJECTS[0], "garbler").await;
        // 0xc3 0x28: a two-byte sequence whose second byte is not a continuation byte.
        let payload = b"{\"type\":\"publish\",\"data\":\"\xc3\x28\"}";
        let sent = Instant::now();
        raw.send(&frame(true, TEXT, payload)).await;
        let reaction = raw.close_frame(sent, Duration::from_secs(2)).await;
        eprintln!("invalid UTF-8: {reaction:?}");
        assert_eq!(
            (reaction.code, reaction.reason.as_str()),
            (1007, "invalid UTF-8")
        );
        raw.ended_within(Duration::from_secs(3)).await;
    })
    .await;
}

/// `wshub_slow_consumers_total` from `/metrics`.
async fn slow_consumers(server: &Server) -> u64 {
    let (status, _, body) = http("GET", &server.http("/metrics"), &[], "").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("wshub_slow_consumers_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_4008() {
    // Judged on bytes: a 1 MiB queue. The frame limit stays at its default (1024), which
    // the crowd's members do not reach even when the machine is busy; with a frame limit
    // of 64, members whose write pump was starved for a quarter of a second got 4008 too.
    let server = Server::start("[limits]\nsend_queue_bytes = 1048576\n");
    amid_the_crowd(&server, async {
        // In a project of its own, fed over HTTP with 32 KiB messages: before its queue
        // overflows, the server's socket buffer grows to tcp_wmem's maximum (4 MiB here),
        // which the crowd's members would all have to read too in the crowd's projects.
        // The default receive buffer: it stays small while nothing is read. A tiny one
        // (4 KiB) can stall the reads after the verdict for seconds, TCP's doing, not
        // the server's (zero windows and probes).
        let project = "sloth-land";
        let mut raw = Raw::connect(&server, project, "sloth").await;
        let url = server.http(&format!("/api/projects/{project}/messages"));
        let auth = format!("Bearer {API_KEY}");
        let headers = [("authorization", auth.as_str())];
        let body = json!({"data": {"filler": "f".repeat(32 * 1024)}}).to_string();
        let started = Instant::now();
        let mut fed = 0;
        // It reads nothing until the server has judged it; /metrics says when. Rounds of
        // 16 publishes, 8 at a time: each opens a connection, and a busy machine makes
        // that slow.
        while slow_consumers(&server).await == 0 {
            assert!(
                started.elapsed() < STEP * 3 / 2,
                "not judged a slow consumer after {fed} messages"
            );
            let round = futures_util::stream::iter(0..16)
                .map(|_| http("POST", &url, &headers, &body))
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await;
            for (status, _, answer) in round {
                assert_eq!(status, 202, "{answer}");
                fed += 1;
            }
        }
        eprintln!(
            "never reads: judged a slow consumer after {:?} and {fed} messages of 32 KiB",
            started.elapsed()
        );
        let reading = Instant::now();
        let Ok(reaction) = tokio::time::timeout(STEP, raw.close_frame(reading, STEP * 2)).await
        else {
            let conn = format!(r#""conn":{}"#, raw.conn);
            let logs: Vec<String> = server
                .logs()
                .into_iter()
                .filter(|l| l.contains(&conn))
                .collect();
            panic!(
                "no close frame within {STEP:?} of reading; {} bytes of a frame read; its log: {logs:#?}",
                raw.buf.len()
            );
        };
        eprintln!("never reads: {reaction:?} after it started reading");
        assert_eq!(
            (reaction.code, reaction.reason.as_str()),
            (4008, "slow consumer")
        );
        // What its kernel and the WebSocket layer held came first; the queue was dropped.
        assert!(
            reaction.texts > 0 && reaction.texts < fed,
            "{} of {fed} messages before the close",
            reaction.texts
        );
    })
    .await;
    assert_eq!(
        slow_consumers(&server).await,
        1,
        "only the sloth was judged, none of the crowd"
    );
}

/// A flooder that sends pings and never reads: the pongs cannot be written, and they must
/// not pile up in the server's memory.
///
/// tungstenite queues a pong per ping in its write buffer; `ws-transport` caps that buffer
/// (`TransportConfig::websocket`), so at the cap the pongs are coalesced into the newest.
/// Before the cap, 221 MiB of pings in 8 s took RSS from 15 MiB to 559 MiB (debug build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flooder_that_never_reads_does_not_grow_the_server() {
    const FLOOD: Duration = Duration::from_secs(4);
    const FLOOD_BYTES: usize = 256 << 20;
    const ALLOWED_GROWTH_KIB: u64 = 48 << 10;
    let server = Server::start("");
    amid_the_crowd(&server, async {
        // In a project of its own, so the server has nothing to write to it but pongs.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut raw = Raw::connect_on(socket, &server, "flood", "deaf-flooder").await;
        let before = server.rss_kib();
        let ping = frame(true, PING, &[0x5a; 125]);
        let batch: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(ping.len() * 512)
            .collect();
        let started = Instant::now();
        let mut sent = 0usize;
        while started.elapsed() < FLOOD && sent < FLOOD_BYTES {
            match tokio::time::timeout(STEP, raw.tcp.write_all(&batch)).await {
                Ok(Ok(())) => sent += batch.len(),
                // Cutting the flooder off would be a fine reaction too.
                Ok(Err(e)) => {
                    eprintln!("the flooder was cut off after {sent} bytes: {e}");
                    break;
                }
                Err(_) => panic!("the server stopped reading after {sent} bytes"),
            }
        }
        let after = server.rss_kib();
        eprintln!(
            "deaf ping flood: {} MiB of pings in {:?}; server RSS {before} KiB -> {after} KiB",
            sent >> 20,
            started.elapsed()
        );
        assert!(
            after.saturating_sub(before) < ALLOWED_GROWTH_KIB,
            "{} MiB of pings grew the server from {before} KiB to {after} KiB",
            sent >> 20
        );
    })
    .await;
}
