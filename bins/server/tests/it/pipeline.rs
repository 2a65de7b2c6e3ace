//! Pipelined publishing (issue #19): a client's publishes go to the broker without waiting
//! for the previous ack, the acks still come back in order, every subscriber gets every
//! message once, in order; idempotency keys still deduplicate inside a burst; and a client
//! that never reads cannot make the server read (and hold) more than the window of
//! publishes in flight. On the memory broker and on a real `redis-server`.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::*;
use crate::redis_server::{Redis, node_on};

/// Publishes in one burst: several times the default window of 64.
const BURST: usize = 300;
/// No publish rate: the burst is far over the default's 100.
const NO_RATE: &str = "[limits]\nclient_publish_rate = 0\n";

fn on_redis(redis: &Redis, extra: &str) -> Server {
    node_on(&redis.url(), "", extra)
}

/// Opens a v2 connection (`GET /ws{query}`) as `user`, allowed on `projects`, with a
/// receive buffer of `recv_buffer` bytes when given; reads the welcome.
async fn connect_v2(
    server: &Server,
    user: &str,
    projects: &[&str],
    query: &str,
    recv_buffer: Option<u32>,
) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let tcp = socket.connect(server.addr).await.unwrap();
    let url = format!("{}{query}", server.http("/ws").replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(user, projects))).unwrap(),
    );
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("wshub.v2"),
    );
    let (mut ws, _) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp)),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake");
    assert_eq!(recv_json(&mut ws).await["type"], "welcome");
    ws
}

/// A v2 subscriber of `project`, past its `subscribed`.
async fn subscriber_v2(server: &Server, user: &str, project: &str) -> Ws {
    let query = format!("?subscribe={project}");
    let mut ws = connect_v2(server, user, &[project], &query, None).await;
    let subscribed = recv_json(&mut ws).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    ws
}

/// Sends every frame without reading anything in between, then flushes.
async fn send_all(ws: &mut Ws, frames: impl IntoIterator<Item = Value>) {
    for frame in frames {
        ws.feed(Message::text(frame.to_string())).await.unwrap();
    }
    ws.flush().await.unwrap();
}

/// The next `count` answers (`ack` or `error` frames) on `ws`, skipping messages and
/// presence frames.
async fn answers(ws: &mut Ws, count: usize) -> Vec<Value> {
    let mut answers = Vec::with_capacity(count);
    while answers.len() < count {
        let frame = recv_json(ws).await;
        match frame["type"].as_str() {
            Some("ack" | "error") => answers.push(frame),
            Some("message" | "presence") => {}
            _ => panic!("unexpected frame {frame}"),
        }
    }
    answers
}

/// Publishes "end" over the HTTP API, and returns the `data` of every message `ws` gets
/// before it: nothing may follow a burst that was not in it.
async fn data_until_end(server: &Server, project: &str, ws: &mut Ws) -> Vec<Value> {
    let (status, body) = api(
        server,
        "POST",
        &format!("/api/projects/{project}/messages"),
        r#"{"data":"end"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let mut data = Vec::new();
    loop {
        let message = recv_message(ws).await;
        if message["data"] == "end" {
            return data;
        }
        data.push(message["data"].clone());
    }
}

/// One publisher sends `BURST` publishes back to back without reading; the acks come in
/// the publishes' order with consecutive offsets, and a v1 and a v2 subscriber each get
/// all of them, in order, once.
async fn burst_is_acked_in_order(server: &Server, project: &str, v2: bool) {
    let (mut v1_sub, _) = join(server, project, "sub-v1").await;
    let mut v2_sub = subscriber_v2(server, "sub-v2", project).await;
    let mut publisher = if v2 {
        connect_v2(server, "publisher", &[project], "", None).await
    } else {
        join(server, project, "publisher").await.0
    };
    let frames = (0..BURST).map(|n| {
        let mut frame = json!({"type": "publish", "id": format!("p{n}"), "data": n});
        if v2 {
            frame["project"] = json!(project);
        }
        frame
    });
    send_all(&mut publisher, frames).await;

    let acks = answers(&mut publisher, BURST).await;
    let ids: Vec<&str> = acks.iter().map(|a| a["id"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..BURST).map(|n| format!("p{n}")).collect();
    assert_eq!(ids, expected, "acks in the publishes' order");
    assert!(acks.iter().all(|a| a["type"] == "ack"), "{acks:?}");
    let offsets: Vec<u64> = acks.iter().map(|a| a["offset"].as_u64().unwrap()).collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "offsets grow by one: {offsets:?}"
    );

    let sent: Vec<Value> = (0..BURST).map(|n| json!(n)).collect();
    for sub in [&mut v1_sub, &mut v2_sub] {
        assert_eq!(
            data_until_end(server, project, sub).await,
            sent,
            "every message once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_acked_in_order_and_delivered_once_on_memory() {
    let server = Server::start(NO_RATE);
    burst_is_acked_in_order(&server, "burst-v1", false).await;
    burst_is_acked_in_order(&server, "burst-v2", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_acked_in_order_and_delivered_once_on_redis() {
    let redis = Redis::start();
    let server = on_redis(&redis, NO_RATE);
    burst_is_acked_in_order(&server, "burst-v1", false).await;
    burst_is_acked_in_order(&server, "burst-v2", true).await;
    // The bursts went in pipelines, not a round trip per publish.
    let (status, _, body) = http("GET", &server.http("/metrics"), &[], "").await;
    assert_eq!(status, 200);
    let round_trips: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("wshub_broker_publish_round_trips_total "))
        .expect("the round-trip counter")
        .trim()
        .parse()
        .unwrap();
    eprintln!("{} publishes in {round_trips} round trips", 2 * BURST + 4);
    assert!(
        round_trips < BURST as u64,
        "{round_trips} round trips for {} publishes",
        2 * BURST + 4
    );
}

/// Retries of a key inside one pipelined burst: the first of each key is published, the
/// repeats answer its offset with `duplicate`, in the burst's order; subscribers get each
/// key's message once.
async fn retries_in_a_burst_are_duplicates(server: &Server) {
    let project = "retries";
    let mut sub = subscriber_v2(server, "sub", project).await;
    let mut publisher = connect_v2(server, "publisher", &[project], "", None).await;
    let keys = ["a", "b", "a", "c", "b", "a"];
    let frames = keys.iter().enumerate().map(|(n, key)| {
        json!({"type": "publish", "id": format!("r{n}"), "project": project, "key": key, "data": n})
    });
    send_all(&mut publisher, frames).await;
    let acks = answers(&mut publisher, keys.len()).await;
    let seen: Vec<(&str, u64, bool)> = acks
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap(),
                a["offset"].as_u64().unwrap(),
                a["duplicate"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let first = seen[0].1;
    assert_eq!(
        seen,
        [
            ("r0", first, false),
            ("r1", first + 1, false),
            ("r2", first, true),
            ("r3", first + 2, false),
            ("r4", first + 1, true),
            ("r5", first, true),
        ]
    );
    assert_eq!(
        data_until_end(server, project, &mut sub).await,
        [json!(0), json!(1), json!(3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_inside_a_burst_are_duplicates_on_memory() {
    retries_in_a_burst_are_duplicates(&Server::start(NO_RATE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_inside_a_burst_are_duplicates_on_redis() {
    let redis = Redis::start();
    retries_in_a_burst_are_duplicates(&on_redis(&redis, NO_RATE)).await;
}

/// A client that publishes as fast as it can and never reads (4 KiB receive buffer,
/// `echo: false`, so only acks are due to it): once its socket is full, the acks wait in the
/// server, the window of publishes in flight fills, and the server stops reading from it.
/// Its sends then block (backpressure) instead of the server holding ever more publishes
/// or acks; the server's RSS stays small and the project's other members are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_never_reads_is_held_by_the_window() {
    let server = Server::start(NO_RATE);
    let project = "flood";
    let mut observer = subscriber_v2(&server, "observer", project).await;
    // It reads all along (or the flood would close it as a slow consumer), up to the "end".
    let observed = tokio::spawn(async move {
        let mut count = 0u64;
        loop {
            let message = recv_message(&mut observer).await;
            if message["data"] == "end" {
                return count;
            }
            count += 1;
        }
    });
    let flooder = connect_v2(&server, "flooder", &[project], "", Some(4096)).await;
    let before = server.rss_kib();
    let (mut sink, _stream) = flooder.split();
    let data = "x".repeat(2048);
    let id = "i".repeat(64);
    let started = Instant::now();
    let (mut sent, mut blocked) = (0u64, false);
    while started.elapsed() < Duration::from_secs(20) {
        let frame =
            json!({"type": "publish", "id": id, "project": project, "data": data, "echo": false});
        match tokio::time::timeout(
            Duration::from_secs(1),
            sink.send(Message::text(frame.to_string())),
        )
        .await
        {
            Ok(Ok(())) => sent += 1,
            Ok(Err(e)) => panic!("the flooder was dropped before it was held: {e}"),
            Err(_) => {
                blocked = true;
                break;
            }
        }
    }
    let after = server.rss_kib();
    eprintln!(
        "non-reading publisher: {sent} publishes sent before the server stopped reading; \
         server RSS {before} KiB -> {after} KiB"
    );
    assert!(blocked, "the server kept reading {sent} publishes");
    assert!(
        after.saturating_sub(before) < 64 << 10,
        "the server grew from {before} KiB to {after} KiB"
    );
    // The others are served, and got the publishes the server took.
    let (status, body) = api(
        &server,
        "POST",
        &format!("/api/projects/{project}/messages"),
        r#"{"data":"end"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let got = tokio::time::timeout(STEP * 3, observed)
        .await
        .expect("the observer got the end")
        .unwrap();
    eprintln!("non-reading publisher: {got} of {sent} published");
    assert!(got > 0 && got <= sent);
}

/// Requests sent behind a burst are answered after its acks: a v1 `presence` and `ping`,
/// and a v2 `history`, which also sees every message of the burst; a v1 publish refused
/// by the rate (an `error` without id) comes in its place among the acks.
async fn later_requests_follow_the_burst(server: &Server) {
    let project = "mixed";
    let (mut v1, _) = join(server, project, "v1").await;
    let mut frames: Vec<Value> = (0..20)
        .map(|n| json!({"type": "publish", "id": format!("p{n}"), "data": n}))
        .collect();
    frames.push(json!({"type": "presence"}));
    frames.push(json!({"type": "ping", "id": "after"}));
    send_all(&mut v1, frames).await;
    let mut answers = Vec::new();
    while answers.len() < 22 {
        let frame = recv_json(&mut v1).await;
        match frame["type"].as_str() {
            Some("message") => {}
            Some("presence") if frame["event"] != "sync" => {}
            _ => answers.push(frame),
        }
    }
    for (n, ack) in answers[..20].iter().enumerate() {
        assert_eq!(
            (ack["type"].as_str(), ack["id"].as_str()),
            (Some("ack"), Some(format!("p{n}").as_str())),
            "{answers:?}"
        );
    }
    assert_eq!(answers[20]["event"], "sync", "{answers:?}");
    assert_eq!(answers[21], json!({"type": "pong", "id": "after"}));

    let mut v2 = connect_v2(server, "v2", &[project], "", None).await;
    let mut frames: Vec<Value> = (0..20)
        .map(|n| json!({"type": "publish", "id": format!("q{n}"), "project": project, "data": n}))
        .collect();
    frames.push(json!({"type": "history", "id": "h", "project": project, "limit": 1000}));
    send_all(&mut v2, frames).await;
    let answers = replies(&mut v2, 21).await;
    assert!(
        answers[..20].iter().all(|a| a["type"] == "ack"),
        "{answers:?}"
    );
    let history = &answers[20];
    assert_eq!(history["type"], "history", "{history}");
    let last_ack = answers[19]["offset"].as_u64().unwrap();
    assert_eq!(
        history["offset"].as_u64(),
        Some(last_ack),
        "the history sees the burst"
    );
    assert_eq!(history["messages"].as_array().unwrap().len(), 40);
}

/// The next `count` frames on `ws` that are not messages or presence events.
async fn replies(ws: &mut Ws, count: usize) -> Vec<Value> {
    let mut answers = Vec::with_capacity(count);
    while answers.len() < count {
        let frame = recv_json(ws).await;
        match frame["type"].as_str() {
            Some("message" | "presence") => {}
            _ => answers.push(frame),
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_requests_follow_the_burst_on_memory() {
    later_requests_follow_the_burst(&Server::start(NO_RATE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_requests_follow_the_burst_on_redis() {
    let redis = Redis::start();
    later_requests_follow_the_burst(&on_redis(&redis, NO_RATE)).await;
}

/// A v1 client over the publish rate: the refusal (an `error` without id, which clients
/// match by position) comes after the acks of the publishes before it, on a broker whose
/// answers take a round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_inside_a_burst_keeps_its_place() {
    let redis = Redis::start();
    // A burst of 10 passes (twice the rate), the 11th is refused.
    let server = on_redis(&redis, "[limits]\nclient_publish_rate = 5\n");
    let (mut ws, _) = join(&server, "refused", "client").await;
    let frames = (0..11).map(|n| json!({"type": "publish", "id": format!("p{n}"), "data": n}));
    send_all(&mut ws, frames).await;
    let answers = answers(&mut ws, 11).await;
    for (n, ack) in answers[..10].iter().enumerate() {
        assert_eq!(ack["id"], format!("p{n}"), "{answers:?}");
    }
    assert_eq!(answers[10]["type"], "error", "{answers:?}");
    assert_eq!(answers[10]["code"], "rate_limited");
}
