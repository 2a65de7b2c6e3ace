//! Server-sent events (SPEC §14), spoken over raw TCP as `curl -N` would: the request, the
//! chunked body, the events.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::*;

/// One event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: Option<String>,
    event: String,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// A stream being read: the chunked body, cut into events.
struct Sse {
    reader: BufReader<TcpStream>,
    buffer: String,
    heartbeats: usize,
    /// The answer's headers, names in lower case.
    head: Vec<(String, String)>,
}

/// `GET /sse/projects/{project}` with `headers`; the stream, or a refusal's status and body.
async fn open(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    recv_buffer: Option<u32>,
) -> Result<Sse, (u16, Value)> {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let stream = socket.connect(server.addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n",
        server.addr
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line.trim().is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        head.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let header = |name: &str| head.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if status != 200 {
        let len: usize = header("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; len];
        reader.read_exact(&mut body).await.unwrap();
        return Err((status, serde_json::from_slice(&body).unwrap()));
    }
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
    Ok(Sse {
        reader,
        buffer: String::new(),
        heartbeats: 0,
        head,
    })
}

async fn stream(server: &Server, project: &str, user: &str, last: Option<&str>) -> Sse {
    let bearer = format!("Bearer {}", token(user, &[project]));
    let mut headers = vec![("authorization", bearer.as_str())];
    if let Some(last) = last {
        headers.push(("last-event-id", last));
    }
    let path = format!("/sse/projects/{project}");
    open(server, &path, &headers, None).await.unwrap()
}

impl Sse {
    /// The next event; `None` once the stream ended. Heartbeats are counted, not returned.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event {
                    id: None,
                    event: "message".to_owned(),
                    data: String::new(),
                };
                let mut data = Vec::new();
                for line in block.lines() {
                    match line.split_once(": ") {
                        _ if line.is_empty() || line.starts_with(':') => {}
                        Some(("id", v)) => event.id = Some(v.to_owned()),
                        Some(("event", v)) => event.event = v.to_owned(),
                        Some(("data", v)) => data.push(v),
                        _ => panic!("unexpected line {line:?}"),
                    }
                }
                if data.is_empty() && event.id.is_none() {
                    self.heartbeats += 1;
                    continue;
                }
                event.data = data.join("\n");
                return Some(event);
            }
            let chunk = tokio::time::timeout(STEP, self.chunk())
                .await
                .expect("no event in time")?;
            self.buffer.push_str(&chunk);
        }
    }

    /// One chunk of the body; `None` at its end.
    async fn chunk(&mut self) -> Option<String> {
        let mut size = String::new();
        if self.reader.read_line(&mut size).await.unwrap() == 0 {
            return None;
        }
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).await.unwrap();
        if size == 0 {
            return None;
        }
        chunk.truncate(size);
        Some(String::from_utf8(chunk).unwrap())
    }

    /// The next message event's offset; presence events before it are skipped (another
    /// member's leave may come at any time, e.g. when a slow one is closed).
    async fn message(&mut self, epoch: &str) -> u64 {
        let event = loop {
            let event = self.next().await.expect("the stream ended");
            if event.event != "presence" {
                break event;
            }
        };
        assert_eq!(event.event, "message", "{event:?}");
        let frame = event.json();
        let offset = frame["offset"].as_u64().unwrap();
        assert_eq!(event.id, Some(format!("{epoch}:{offset}")));
        assert_eq!(frame["type"], "message");
        offset
    }
}

async fn publish_n(server: &Server, project: &str, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        let body = json!({"data": {"n": i}}).to_string();
        let (status, _) = api(
            server,
            "POST",
            &format!("/api/projects/{project}/messages"),
            &body,
        )
        .await;
        assert_eq!(status, 202);
    }
}

#[tokio::test]
async fn sse_events_carry_ids_and_last_event_id_recovers_exactly_what_was_missed() {
    let server = Server::start("");
    let mut first = stream(&server, "p", "alice", None).await;
    let welcome = first.next().await.unwrap();
    assert_eq!(welcome.event, "welcome");
    let frame = welcome.json();
    let epoch = frame["epoch"].as_str().unwrap().to_owned();
    assert_eq!(welcome.id, Some(format!("{epoch}:0")));
    assert_eq!(
        (frame["recovered"].clone(), frame["offset"].clone()),
        (json!(false), json!(0))
    );

    publish_n(&server, "p", 1..=3).await;
    for n in 1..=3 {
        assert_eq!(first.message(&epoch).await, n);
    }
    drop(first);

    // Publishes go on while the client reconnects from the last id it saw.
    let publisher = {
        let addr = server.http("");
        tokio::spawn(async move {
            for i in 4..=40u64 {
                let body = json!({"data": {"n": i}}).to_string();
                let key = format!("Bearer {API_KEY}");
                let (status, _, _) = http(
                    "POST",
                    &format!("{addr}/api/projects/p/messages"),
                    &[
                        ("authorization", &key),
                        ("content-type", "application/json"),
                    ],
                    &body,
                )
                .await;
                assert_eq!(status, 202);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut again = stream(&server, "p", "alice", Some(&format!("{epoch}:3"))).await;
    let welcome = again.next().await.unwrap();
    assert_eq!(welcome.event, "welcome");
    assert_eq!(welcome.id, None, "a recovery keeps the client's id");
    assert_eq!(welcome.json()["recovered"], true);
    for n in 4..=40 {
        assert_eq!(again.message(&epoch).await, n, "no gap, no duplicate");
    }
    publisher.await.unwrap();
}

#[tokio::test]
async fn sse_a_lost_recovery_sends_reset_first_and_moves_the_id_to_the_present() {
    let server = Server::start("");
    publish_n(&server, "p", 1..=2).await;
    let mut sse = stream(&server, "p", "alice", Some("stale-epoch:1")).await;
    let reset = sse.next().await.unwrap();
    assert_eq!(reset.event, "reset");
    let data = reset.json();
    let epoch = data["epoch"].as_str().unwrap().to_owned();
    assert_eq!(data["offset"], 2);
    assert_eq!(reset.id, Some(format!("{epoch}:2")));
    publish_n(&server, "p", 3..=3).await;
    assert_eq!(sse.message(&epoch).await, 3);
}

#[tokio::test]
async fn sse_refusals_are_the_handshake_ones_as_json() {
    let server = Server::start("");
    let refused = |r: Result<Sse, (u16, Value)>| match r {
        Ok(_) => panic!("not refused"),
        Err((status, body)) => (status, body["error"].as_str().unwrap().to_owned()),
    };
    let path = "/sse/projects/p";
    assert_eq!(
        refused(open(&server, path, &[], None).await),
        (401, "missing_token".to_owned())
    );
    let other = format!("Bearer {}", token("alice", &["other"]));
    assert_eq!(
        refused(open(&server, path, &[("authorization", &other)], None).await),
        (403, "forbidden".to_owned())
    );
    let bearer = format!("Bearer {}", token("alice", &["p"]));
    for garbage in ["garbage", "e:-1", "e:1.5", ":3"] {
        let headers = [
            ("authorization", bearer.as_str()),
            ("last-event-id", garbage),
        ];
        assert_eq!(
            refused(open(&server, path, &headers, None).await),
            (400, "invalid_query".to_owned()),
            "{garbage}"
        );
    }
    let query = format!(
        "{path}?access_token={}&last_event_id=nope",
        token("alice", &["p"])
    );
    assert_eq!(
        refused(open(&server, &query, &[], None).await),
        (400, "invalid_query".to_owned())
    );
    let (status, headers, _) = http("POST", &server.http(path), &[], "").await;
    assert_eq!(status, 405);
    assert!(headers.iter().any(|(k, v)| k == "allow" && v == "GET"));
    let (status, _, _) = http("GET", &server.http("/sse/projects/bad%20id"), &[], "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn sse_heartbeats_are_comment_lines_every_ping_interval() {
    let server = Server::start("[timeouts]\nping_interval = \"300ms\"\n");
    let mut sse = stream(&server, "p", "alice", None).await;
    assert_eq!(sse.next().await.unwrap().event, "welcome");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    publish_n(&server, "p", 1..=1).await;
    let event = sse.next().await.unwrap();
    assert_eq!(event.event, "message");
    assert!(sse.heartbeats >= 2, "{} heartbeats", sse.heartbeats);
}

/// A stream of `user` on project `p` whose socket receives into 4 KiB only, past its
/// welcome: a reader that then reads nothing more.
async fn open_unread(server: &Server, user: &str) -> Sse {
    let bearer = format!("Bearer {}", token(user, &["p"]));
    let mut sse = open(
        server,
        "/sse/projects/p",
        &[("authorization", &bearer)],
        Some(4096),
    )
    .await
    .unwrap();
    assert_eq!(sse.next().await.unwrap().event, "welcome");
    sse
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_a_reader_that_cannot_keep_up_ends_with_close_4008_and_harms_no_one() {
    let server = Server::start("[limits]\nsend_queue_bytes = 2097152\n");
    let mut slow = open_unread(&server, "slow").await;
    let mut fast = stream(&server, "p", "fast", None).await;
    let epoch = fast.next().await.unwrap().json()["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let big = "x".repeat(30 * 1024);
    // The fast reader keeps pace with the publisher, in rounds; the slow one reads nothing.
    for round in 0..60 {
        for _ in 0..10 {
            let body = json!({"data": big}).to_string();
            let (status, _) = api(&server, "POST", "/api/projects/p/messages", &body).await;
            assert_eq!(status, 202);
        }
        for n in 1..=10 {
            assert_eq!(fast.message(&epoch).await, round * 10 + n);
        }
    }
    // Now the slow one reads: what got through, then the close.
    let mut last = None;
    while let Some(event) = slow.next().await {
        last = Some(event);
    }
    let last = last.unwrap();
    assert_eq!(last.event, "close");
    assert_eq!(last.json()["code"], 4008);
}

#[tokio::test]
async fn sse_drain_ends_the_stream_with_close_1001() {
    let mut server = Server::start("[shutdown]\ndrain = \"500ms\"\n");
    let mut sse = stream(&server, "p", "alice", None).await;
    assert_eq!(sse.next().await.unwrap().event, "welcome");
    let terminated = tokio::task::spawn_blocking(move || server.terminate());
    let close = sse.next().await.unwrap();
    assert_eq!(close.event, "close");
    assert_eq!(close.json()["code"], 1001);
    assert_eq!(sse.next().await, None, "the stream ends after the close");
    assert!(terminated.await.unwrap().success());
}

#[tokio::test]
async fn sse_a_stream_whose_token_expires_ends_with_close_4001() {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n\
         [auth]\nhs256_secrets = [\"{SECRET}\"]\napi_keys = [\"{API_KEY}\"]\nleeway = \"0s\"\n"
    );
    let server = Server::start_in(TempDir::new(), &toml);
    let started = std::time::Instant::now();
    let bearer = format!(
        "Bearer {}",
        token_ttl("alice", &["p"], Duration::from_secs(2))
    );
    let mut sse = open(
        &server,
        "/sse/projects/p",
        &[("authorization", &bearer)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(sse.next().await.unwrap().event, "welcome");
    let close = sse.next().await.unwrap();
    let lived = started.elapsed();
    assert_eq!(close.event, "close");
    assert_eq!(
        close.json(),
        json!({"code": 4001, "reason": "token expired"})
    );
    // `exp` is in whole seconds: the token had between 1 and 2 seconds left, and the close
    // comes within a second of it (SPEC §5).
    assert!(
        lived >= Duration::from_millis(900) && lived <= Duration::from_millis(3500),
        "closed after {lived:?}"
    );
    assert_eq!(sse.next().await, None, "the stream ends after the close");
}

/// A reader that reads nothing, with send queues too large for the 4008 verdict: its writes
/// stall, and after `timeouts.write` the stream leaves the hub, with no close event (there is
/// no way to write one); the others are not held up meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_a_write_stuck_past_the_write_timeout_ends_the_stream_without_a_close_event() {
    let server = Server::start(
        "[limits]\nsend_queue_bytes = 268435456\nsend_queue_frames = 1000000\n\n\
         [timeouts]\nwrite = \"1s\"\n",
    );
    let mut stuck = open_unread(&server, "stuck").await;
    let mut fast = stream(&server, "p", "fast", None).await;
    let epoch = fast.next().await.unwrap().json()["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let big = "x".repeat(30 * 1024);
    let connections = |stats: Value| stats["connections"].as_u64().unwrap();
    let mut published = 0;
    // Rounds of ten until the stuck stream is gone (at most 3000 messages, 90 MB).
    for _ in 0..300 {
        for _ in 0..10 {
            let body = json!({"data": big}).to_string();
            let (status, _) = api(&server, "POST", "/api/projects/p/messages", &body).await;
            assert_eq!(status, 202);
            published += 1;
        }
        for n in published - 9..=published {
            assert_eq!(
                fast.message(&epoch).await,
                n,
                "the fast reader is not held up"
            );
        }
        let (_, stats) = api(&server, "GET", "/api/admin/stats", "").await;
        if connections(stats) == 1 {
            break;
        }
    }
    let (_, stats) = api(&server, "GET", "/api/admin/stats", "").await;
    assert_eq!(connections(stats), 1, "the stuck stream left the hub");
    // What reached the socket before the stall can still be read (the fast reader's join,
    // messages); then the stream ends: no close event could be written.
    let mut events = 0;
    while let Some(event) = stuck.next().await {
        assert_ne!(event.event, "close", "{event:?}");
        events += u64::from(event.event == "message");
    }
    assert!(events < published, "{events} of {published} reached it");
}

/// A page of another origin reads the stream with `fetch` (the JS client's fallback): the
/// preflight allows `Authorization` and `Last-Event-ID`, the stream names the origin.
#[tokio::test]
async fn sse_pages_of_any_origin_may_read_a_stream_without_credentials() {
    let server = Server::start("");
    let origin = "http://app.example.test";
    let (status, headers, _) = http(
        "OPTIONS",
        &server.http("/sse/projects/p"),
        &[
            ("origin", origin),
            ("access-control-request-method", "GET"),
            (
                "access-control-request-headers",
                "authorization,last-event-id",
            ),
        ],
        "",
    )
    .await;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(status, 204);
    assert_eq!(
        header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    assert_eq!(
        header("access-control-allow-headers").as_deref(),
        Some("authorization, last-event-id")
    );
    assert_eq!(header("access-control-allow-credentials"), None);

    let bearer = format!("Bearer {}", token("alice", &["p"]));
    let mut sse = open(
        &server,
        "/sse/projects/p",
        &[("authorization", &bearer), ("origin", origin)],
        None,
    )
    .await
    .unwrap();
    assert!(
        sse.head
            .iter()
            .any(|(k, v)| k == "access-control-allow-origin" && v == origin)
    );
    assert_eq!(sse.next().await.unwrap().event, "welcome");
    // A refusal is readable too.
    let (status, headers, _) = http(
        "GET",
        &server.http("/sse/projects/p"),
        &[("origin", origin)],
        "",
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "access-control-allow-origin" && v == origin)
    );
}
