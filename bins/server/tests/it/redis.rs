//! SPEC §8 end to end: several `wshub` processes on one real `redis-server`, started by the
//! tests on a free loopback port (`cargo xtask test` installs `redis-server` when missing).
//!
//! Over 800 lines on purpose: the redis-server and multi-node harness at the top is what
//! every scenario below needs; the scenarios are short.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::harness::*;
use crate::redis_server::{Redis, free_port, node_on};

fn node(redis: &Redis) -> Server {
    node_on(&redis.url(), "", "")
}

async fn readyz(server: &Server) -> u16 {
    http("GET", &server.http("/readyz"), &[], "").await.0
}

/// Waits until `/readyz` answers `status`; returns how long that took.
async fn wait_ready(server: &Server, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if readyz(server).await == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "/readyz did not answer {status} within {within:?}: {:#?}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn publish_http(server: &Server, project: &str, data: Value) -> (u16, Value) {
    api(
        server,
        "POST",
        &format!("/api/projects/{project}/messages"),
        &json!({ "data": data }).to_string(),
    )
    .await
}

/// The users of `project` as `node` sees them: `user → connections`.
async fn presence(node: &Server, project: &str) -> BTreeMap<String, u64> {
    let (status, body) = api(
        node,
        "GET",
        &format!("/api/projects/{project}/presence"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap().to_owned(),
                u["connections"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Polls `node`'s presence of `project` until it is `want`; returns how long that took.
async fn wait_presence(
    node: &Server,
    project: &str,
    want: &[(&str, u64)],
    within: Duration,
) -> Duration {
    let want: BTreeMap<String, u64> = want.iter().map(|(u, n)| ((*u).to_owned(), *n)).collect();
    let started = Instant::now();
    loop {
        let got = presence(node, project).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "presence of {project} is {got:?}, not {want:?}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

type Sink = SplitSink<Ws, Message>;

/// A WebSocket client whose frames are collected by a task of its own.
struct Client {
    sink: Sink,
    frames: Arc<Mutex<Vec<Value>>>,
    reader: JoinHandle<Option<(u16, String)>>,
}

impl Client {
    async fn join(server: &Server, project: &str, user: &str) -> (Self, Value) {
        Self::open(&server.url(project), project, user).await
    }

    async fn rejoin(
        server: &Server,
        project: &str,
        user: &str,
        since: u64,
        epoch: &str,
    ) -> (Self, Value) {
        let url = format!("{}?since={since}&epoch={epoch}", server.url(project));
        Self::open(&url, project, user).await
    }

    async fn open(url: &str, project: &str, user: &str) -> (Self, Value) {
        let ws = try_connect(url, Some(&token(user, &[project])))
            .await
            .expect("connect");
        let (sink, mut stream) = ws.split();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let sink_frames = Arc::clone(&frames);
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Text(text) => sink_frames
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(&text).unwrap()),
                    Message::Close(Some(CloseFrame { code, reason })) => {
                        sink_frames.lock().unwrap().push(
                            json!({"type": "(close)", "code": u16::from(code), "reason": reason.as_str()}),
                        );
                        return Some((code.into(), reason.to_string()));
                    }
                    _ => {}
                }
            }
            None
        });
        let client = Self {
            sink,
            frames,
            reader,
        };
        let welcome = client
            .wait_for(|f| f["type"] == "welcome", Duration::from_secs(10))
            .await;
        assert_eq!(
            client.frames.lock().unwrap()[0]["type"],
            "welcome",
            "the welcome comes first"
        );
        (client, welcome)
    }

    async fn publish(&mut self, data: Value) {
        let frame = json!({"type": "publish", "id": data.to_string(), "data": data}).to_string();
        self.sink.send(Message::text(frame)).await.unwrap();
    }

    async fn send(&mut self, frame: Value) {
        self.sink
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    fn of_type(&self, kind: &str) -> Vec<Value> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f["type"] == kind)
            .cloned()
            .collect()
    }

    fn messages(&self) -> Vec<Value> {
        self.of_type("message")
    }

    /// Waits for the first frame that satisfies `pred`.
    async fn wait_for(&self, pred: impl Fn(&Value) -> bool, within: Duration) -> Value {
        let started = Instant::now();
        loop {
            if let Some(frame) = self.frames.lock().unwrap().iter().find(|f| pred(f)) {
                return frame.clone();
            }
            assert!(
                started.elapsed() < within && !self.reader.is_finished(),
                "no such frame within {within:?} (connection ended: {}); got {:?}",
                self.reader.is_finished(),
                self.frames.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `n` messages arrived; then a little longer, so that a duplicate shows.
    async fn wait_messages(&self, n: usize, within: Duration) -> Vec<Value> {
        let started = Instant::now();
        while self.messages().len() < n {
            assert!(
                started.elapsed() < within,
                "{} of {n} messages within {within:?}",
                self.messages().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.messages()
    }

    /// The close frame the server sent, once the connection ends.
    async fn closed(&mut self, within: Duration) -> Option<(u16, String)> {
        tokio::time::timeout(within, &mut self.reader)
            .await
            .expect("the connection did not end")
            .unwrap()
    }

    fn is_open(&self) -> bool {
        !self.reader.is_finished()
    }
}

impl Drop for Client {
    /// Drops the socket: the server sees the connection end.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn offsets(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect()
}

/// Every node's clients see `n` messages: offsets 1..=n, in order, each once, and the same
/// message at the same offset everywhere.
async fn check_one_order(clients: &[Client], n: usize) -> Vec<Value> {
    let mut reference: Option<Vec<Value>> = None;
    for (i, client) in clients.iter().enumerate() {
        let messages = client.wait_messages(n, Duration::from_secs(20)).await;
        assert_eq!(
            offsets(&messages),
            (1..=n as u64).collect::<Vec<_>>(),
            "client {i}: every offset once, in order"
        );
        match &reference {
            None => reference = Some(messages),
            Some(first) => assert_eq!(&messages, first, "client {i} saw another order"),
        }
    }
    reference.unwrap_or_default()
}

/// Publishes from every node at once, over HTTP and from WebSocket clients, and checks that
/// every client of every node gets every message once, in one order.
async fn fan_out_across(nodes: &[Server]) {
    const HTTP_PER_NODE: usize = 40;
    const WS_PER_NODE: usize = 20;
    for node in nodes {
        wait_ready(node, 200, Duration::from_secs(10)).await;
    }
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for c in 0..2 {
            let (client, welcome) = Client::join(node, "orders", &format!("user-{n}-{c}")).await;
            assert_eq!(welcome["offset"], 0);
            clients.push(client);
        }
    }
    let epochs: Vec<Value> = {
        let mut e = Vec::new();
        for client in &clients {
            e.push(client.of_type("welcome")[0]["epoch"].clone());
        }
        e
    };
    assert!(
        epochs.windows(2).all(|w| w[0] == w[1]),
        "one epoch across nodes: {epochs:?}"
    );

    let started = Instant::now();
    let http_publishers = nodes.iter().enumerate().map(|(n, node)| async move {
        for i in 0..HTTP_PER_NODE {
            let (status, body) = publish_http(node, "orders", json!({"node": n, "http": i})).await;
            assert_eq!(status, 202, "{body}");
        }
    });
    let ws_publishers = clients
        .iter_mut()
        .step_by(2)
        .enumerate()
        .map(|(n, client)| async move {
            for i in 0..WS_PER_NODE {
                client.publish(json!({"node": n, "ws": i})).await;
            }
        });
    futures_util::future::join(
        futures_util::future::join_all(http_publishers),
        futures_util::future::join_all(ws_publishers),
    )
    .await;
    let n = nodes.len() * (HTTP_PER_NODE + WS_PER_NODE);
    let messages = check_one_order(&clients, n).await;
    let elapsed = started.elapsed();

    // Each publisher's own messages keep their order.
    for (n, _) in nodes.iter().enumerate() {
        for kind in ["http", "ws"] {
            let mine: Vec<u64> = messages
                .iter()
                .filter(|m| m["data"]["node"] == n && m["data"].get(kind).is_some())
                .map(|m| m["data"][kind].as_u64().unwrap())
                .collect();
            assert_eq!(mine, (0..mine.len() as u64).collect::<Vec<_>>());
        }
    }
    // Every WebSocket publish was acknowledged with the offset its message got.
    for client in clients.iter().step_by(2) {
        let acks = client.of_type("ack");
        assert_eq!(acks.len(), WS_PER_NODE, "{acks:?}");
        for ack in acks {
            let offset = ack["offset"].as_u64().unwrap();
            let message = &messages[offset as usize - 1];
            assert_eq!(message["data"].to_string(), ack["id"].as_str().unwrap());
        }
    }
    eprintln!(
        "redis fan-out: {} nodes, {} clients, {n} messages each, every one once and in one order ({:?})",
        nodes.len(),
        clients.len(),
        elapsed
    );
}

#[tokio::test]
async fn two_nodes_deliver_every_message_once_in_one_order() {
    let redis = Redis::start();
    let nodes = [node(&redis), node(&redis)];
    fan_out_across(&nodes).await;
}

#[tokio::test]
async fn three_nodes_deliver_every_message_once_in_one_order() {
    let redis = Redis::start();
    let nodes = [node(&redis), node(&redis), node(&redis)];
    fan_out_across(&nodes).await;
    // The history is one too: any node lists the same messages.
    let (_, page_a) = api(
        &nodes[0],
        "GET",
        "/api/projects/orders/messages?since=0",
        "",
    )
    .await;
    let (_, page_c) = api(
        &nodes[2],
        "GET",
        "/api/projects/orders/messages?since=0",
        "",
    )
    .await;
    assert_eq!(page_a["offset"], 180);
    assert_eq!(page_a, page_c);
}

#[tokio::test]
async fn a_client_recovers_on_another_node() {
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    wait_ready(&a, 200, Duration::from_secs(10)).await;
    wait_ready(&b, 200, Duration::from_secs(10)).await;

    let (client, welcome) = Client::join(&a, "feed", "alice").await;
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    for i in 1..=5 {
        assert_eq!(publish_http(&a, "feed", json!(i)).await.0, 202);
    }
    let seen = client.wait_messages(5, Duration::from_secs(10)).await;
    assert_eq!(offsets(&seen), [1, 2, 3, 4, 5]);
    drop(client);

    // Missed while away, published on both nodes.
    for i in 6..=15u64 {
        let node = if i.is_multiple_of(2) { &a } else { &b };
        assert_eq!(publish_http(node, "feed", json!(i)).await.0, 202);
    }
    let (client, welcome) = Client::rejoin(&b, "feed", "alice", 5, &epoch).await;
    assert_eq!(
        (
            welcome["recovered"].as_bool(),
            welcome["missed"].as_u64(),
            welcome["epoch"].as_str()
        ),
        (Some(true), Some(10), Some(epoch.as_str())),
        "{welcome}"
    );
    assert_eq!(publish_http(&a, "feed", json!(16)).await.0, 202);
    let messages = client.wait_messages(11, Duration::from_secs(10)).await;
    assert_eq!(offsets(&messages), (6..=16).collect::<Vec<_>>());
    assert_eq!(
        messages
            .iter()
            .map(|m| m["data"].clone())
            .collect::<Vec<_>>(),
        (6..=16).map(|i| json!(i)).collect::<Vec<_>>()
    );
    eprintln!(
        "redis recovery across nodes: 10 missed on node A, replayed once on node B, then live"
    );

    // A stale epoch is refused on any node: the client reloads.
    let (_, welcome) = Client::rejoin(&a, "feed", "alice", 5, "not-the-epoch").await;
    assert_eq!(welcome["recovered"], false);
}

#[tokio::test]
async fn presence_is_cluster_wide_and_a_killed_node_leaves_within_the_ttl() {
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut c = node(&redis);
    for n in [&a, &b, &c] {
        wait_ready(n, 200, Duration::from_secs(10)).await;
    }
    let (mut alice, _) = Client::join(&a, "room", "alice").await;
    let (bob1, _) = Client::join(&b, "room", "bob").await;
    let (bob2, _) = Client::join(&b, "room", "bob").await;
    let (carol, _) = Client::join(&c, "room", "carol").await;
    let everyone = [("alice", 1), ("bob", 2), ("carol", 1)];
    for n in [&a, &b, &c] {
        wait_presence(n, "room", &everyone, Duration::from_secs(5)).await;
    }
    // The WebSocket presence request answers the cluster's users too.
    alice.send(json!({"type": "presence"})).await;
    let sync = alice
        .wait_for(|f| f["event"] == "sync", Duration::from_secs(5))
        .await;
    assert_eq!(sync["users"], json!(["alice", "bob", "carol"]));

    // SIGKILL: node C cannot say goodbye; its announcement expires (presence_ttl = 2s).
    let status = Command::new("kill")
        .args(["-KILL", &c.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let killed = Instant::now();
    c.wait();
    drop(carol);
    wait_presence(
        &a,
        "room",
        &[("alice", 1), ("bob", 2)],
        Duration::from_secs(5),
    )
    .await;
    let gone_after = killed.elapsed();
    // presence_ttl, plus a second for this test's polling on a busy machine.
    assert!(
        gone_after <= Duration::from_secs(3),
        "carol left after {gone_after:?}, presence_ttl is 2s"
    );
    wait_presence(
        &b,
        "room",
        &[("alice", 1), ("bob", 2)],
        Duration::from_secs(1),
    )
    .await;

    // Leaving on a live node shows within a presence tick (1 s).
    drop(bob2);
    let took = wait_presence(
        &a,
        "room",
        &[("alice", 1), ("bob", 1)],
        Duration::from_secs(3),
    )
    .await;
    drop(bob1);
    eprintln!(
        "redis presence: a SIGKILLed node's user left after {gone_after:?} (presence_ttl 2s); a leave on a live node showed after {took:?}"
    );
}

/// Redis (with `appendfsync always`, so what it acknowledged survives) is killed and
/// restarted while two nodes publish: the nodes stay up, readiness goes 503 and back,
/// connections stay open, and every client ends with every message Redis accepted, once.
#[tokio::test]
async fn a_redis_restart_loses_and_duplicates_nothing_that_redis_accepted() {
    const BEFORE: usize = 60;
    const AFTER: usize = 60;
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (a, b) = (node(&redis), node(&redis));
    wait_ready(&a, 200, Duration::from_secs(10)).await;
    wait_ready(&b, 200, Duration::from_secs(10)).await;
    let mut clients = Vec::new();
    for (n, node) in [&a, &b].into_iter().enumerate() {
        for c in 0..2 {
            clients.push(Client::join(node, "stream", &format!("u{n}{c}")).await.0);
        }
    }

    let mut accepted = BTreeMap::new();
    let mut refused = 0;
    let mut i = 0u64;
    let publish = async |i: u64, accepted: &mut BTreeMap<u64, u64>| {
        let node = if i.is_multiple_of(2) { &a } else { &b };
        let (status, body) = publish_http(node, "stream", json!({"i": i})).await;
        match status {
            202 => {
                accepted.insert(body["offset"].as_u64().unwrap(), i);
                true
            }
            503 => {
                assert_eq!(body["error"], "broker_unavailable", "{body}");
                false
            }
            other => panic!("publish answered {other}: {body}"),
        }
    };
    while accepted.len() < BEFORE {
        assert!(publish(i, &mut accepted).await);
        i += 1;
    }

    redis.kill();
    let killed = Instant::now();
    // Publishing goes on while Redis is down: refused with 503, never lost silently.
    for _ in 0..20 {
        if !publish(i, &mut accepted).await {
            refused += 1;
        }
        i += 1;
    }
    let not_ready_a = wait_ready(&a, 503, Duration::from_secs(5)).await;
    wait_ready(&b, 503, Duration::from_secs(5)).await;
    let not_ready = killed.elapsed().max(not_ready_a);
    // A client's publish gets an error frame; its connection stays open.
    clients[0].publish(json!("while down")).await;
    let error = clients[0]
        .wait_for(|f| f["type"] == "error", Duration::from_secs(5))
        .await;
    assert_eq!(error["code"], "broker_unavailable", "{error}");
    assert!(clients.iter().all(Client::is_open), "connections stay open");

    redis.restart();
    let restarted = Instant::now();
    let ready_a = wait_ready(&a, 200, Duration::from_secs(10)).await;
    let ready_b = wait_ready(&b, 200, Duration::from_secs(10)).await;
    let ready_again = restarted.elapsed().max(ready_a).max(ready_b);
    let before_after = accepted.len();
    while accepted.len() < before_after + AFTER {
        if !publish(i, &mut accepted).await {
            refused += 1;
        }
        i += 1;
    }

    // Offsets continue (the epoch survived with the data); nothing accepted is missing.
    let top = *accepted.keys().last().unwrap();
    assert_eq!(
        accepted.keys().copied().collect::<Vec<_>>(),
        (1..=top).collect::<Vec<_>>(),
        "offsets have no holes"
    );
    for (k, client) in clients.iter().enumerate() {
        let messages = client
            .wait_messages(top as usize, Duration::from_secs(20))
            .await;
        assert_eq!(
            offsets(&messages),
            (1..=top).collect::<Vec<_>>(),
            "client {k}: every accepted message once, in order"
        );
        for m in &messages {
            let offset = m["offset"].as_u64().unwrap();
            assert_eq!(m["data"]["i"].as_u64(), accepted.get(&offset).copied());
        }
        assert!(client.is_open(), "client {k} was disconnected");
    }
    assert!(a.warnings().iter().all(|l| !l.contains("panicked")));
    eprintln!(
        "redis restart: {} publishes accepted ({} before the kill, {} after), {refused} refused with 503 while down; \
         each of {} clients received {top} messages, 0 lost, 0 duplicated; \
         readyz 503 {not_ready:?} after the kill, 200 again {ready_again:?} after the restart",
        accepted.len(),
        BEFORE,
        accepted.len() - BEFORE,
        clients.len(),
    );
}

/// A Redis that comes back empty (no persistence) starts a new epoch: the open connections
/// of the project are closed with 1013, and reconnecting clients learn `recovered: false`.
#[tokio::test]
async fn a_redis_that_lost_its_data_makes_clients_reload() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    wait_ready(&a, 200, Duration::from_secs(10)).await;
    wait_ready(&b, 200, Duration::from_secs(10)).await;
    let (mut client, welcome) = Client::join(&a, "lossy", "alice").await;
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        assert_eq!(publish_http(&b, "lossy", json!(i)).await.0, 202);
    }
    client.wait_messages(3, Duration::from_secs(10)).await;

    redis.kill();
    wait_ready(&a, 503, Duration::from_secs(5)).await;
    redis.restart();
    wait_ready(&a, 200, Duration::from_secs(10)).await;
    wait_ready(&b, 200, Duration::from_secs(10)).await;
    let (code, reason) = client
        .closed(Duration::from_secs(10))
        .await
        .expect("a close frame");
    assert_eq!(code, 1013, "{reason}");

    let (client, welcome) = Client::rejoin(&b, "lossy", "alice", 3, &epoch).await;
    assert_eq!(welcome["recovered"], false, "{welcome}");
    assert_ne!(welcome["epoch"].as_str(), Some(epoch.as_str()));
    let (status, body) = publish_http(&a, "lossy", json!("fresh")).await;
    assert_eq!((status, &body["offset"]), (202, &json!(1)));
    let messages = client.wait_messages(1, Duration::from_secs(10)).await;
    assert_eq!(messages[0]["data"], "fresh");
}

#[tokio::test]
async fn deployments_with_other_prefixes_share_one_redis_without_meeting() {
    let redis = Redis::start();
    let one = node_on(&redis.url(), "key_prefix = \"one\"", "");
    let two = node_on(&redis.url(), "key_prefix = \"two\"", "");
    wait_ready(&one, 200, Duration::from_secs(10)).await;
    wait_ready(&two, 200, Duration::from_secs(10)).await;
    let (client, _) = Client::join(&two, "shared", "bob").await;
    let (status, body) = publish_http(&one, "shared", json!("for one")).await;
    assert_eq!((status, &body["offset"]), (202, &json!(1)));
    let (status, body) = publish_http(&two, "shared", json!("for two")).await;
    assert_eq!((status, &body["offset"]), (202, &json!(1)));
    let messages = client.wait_messages(1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["data"], "for two");
    let keys = redis.cli(&["--scan"]);
    assert!(
        keys.lines()
            .all(|k| k.starts_with("one:") || k.starts_with("two:")),
        "{keys}"
    );
}

#[tokio::test]
async fn a_password_protected_redis_works_and_the_password_is_never_logged() {
    let redis = Redis::start_with(&["--requirepass", "s3cret-pw"]);
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/0", redis.port);
    let good = node_on(&url, "", "");
    wait_ready(&good, 200, Duration::from_secs(10)).await;
    let (client, _) = Client::join(&good, "locked", "alice").await;
    assert_eq!(publish_http(&good, "locked", json!(1)).await.0, 202);
    client.wait_messages(1, Duration::from_secs(10)).await;

    let bad = node_on(
        &format!("redis://:wrong-pw@127.0.0.1:{}/0", redis.port),
        "",
        "",
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(readyz(&bad).await, 503);
    let (status, body) = publish_http(&bad, "locked", json!(2)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("broker_unavailable"))
    );
    for server in [&good, &bad] {
        let logs = server.logs().join("\n");
        assert!(
            !logs.contains("s3cret-pw") && !logs.contains("wrong-pw"),
            "{logs}"
        );
    }
}

#[tokio::test]
async fn a_node_starts_without_redis_and_serves_once_it_comes() {
    let port = free_port();
    let server = node_on(&format!("redis://127.0.0.1:{port}/0"), "", "");
    assert_eq!(readyz(&server).await, 503);
    let (status, _) = publish_http(&server, "early", json!(1)).await;
    assert_eq!(status, 503);
    // The WebSocket is refused after the upgrade with 1013: the client retries later.
    let mut ws = try_connect(&server.url("early"), Some(&token("alice", &["early"])))
        .await
        .unwrap();
    let (code, _, _) = recv_close(&mut ws).await;
    assert_eq!(code, 1013);
    let mut redis = Redis {
        child: None,
        port,
        args: Vec::new(),
        dir: TempDir::new(),
        tls: false,
    };
    redis.restart();
    wait_ready(&server, 200, Duration::from_secs(10)).await;
    assert_eq!(publish_http(&server, "early", json!(1)).await.0, 202);
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &TempDir, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(&dir.0)
        .args(args)
        .output()
        .expect("openssl is installed (`cargo xtask test` installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `wshub` process with `SSL_CERT_FILE` set (the harness' `Server` takes no environment).
struct TlsNode {
    child: Child,
    addr: std::net::SocketAddr,
}

impl TlsNode {
    /// Starts `wshub --config config`, trusting `ca` (a PEM file) when given.
    fn start(config: &std::path::Path, ca: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wshub"));
        match ca {
            Some(ca) => command.env("SSL_CERT_FILE", ca),
            None => command.env("SSL_CERT_FILE", "/nonexistent-wshub-ca.pem"),
        };
        let mut child = command
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Reads every line, so that the server never writes to a closed pipe.
            for line in std::io::BufRead::lines(stdout).map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap().parse().unwrap());
                }
            }
        });
        let addr = rx.recv_timeout(STEP).expect("wshub started");
        Self { child, addr }
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_tls_redis_works_with_a_rediss_url() {
    // A private CA, and a certificate for 127.0.0.1 that it signed.
    let pki = TempDir::new();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=wshub test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(&pki, &ca);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "redis.key", "-out", "redis.csr"]);
    openssl(&pki, &csr);
    std::fs::write(pki.0.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &pki,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            "redis.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "san.ext",
            "-out",
            "redis.crt",
        ],
    );
    let file = |name: &str| pki.0.join(name).to_str().unwrap().to_owned();
    let mut redis = Redis {
        child: None,
        port: free_port(),
        args: vec![
            "--tls-port".to_owned(),
            String::new(),
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-cert-file".to_owned(),
            file("redis.crt"),
            "--tls-key-file".to_owned(),
            file("redis.key"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.crt"),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
            "--requirepass".to_owned(),
            "tls-pw".to_owned(),
        ],
        dir: TempDir::new(),
        tls: true,
    };
    redis.args[1] = redis.port.to_string();
    redis.restart();

    let dir = TempDir::new();
    let config = dir.0.join("wshub.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"info\"\n\n\
             [auth]\nhs256_secrets = [\"{SECRET}\"]\napi_keys = [\"{API_KEY}\"]\n\n\
             [broker]\nkind = \"redis\"\nredis_url = \"rediss://:tls-pw@127.0.0.1:{}/0\"\n",
            redis.port
        ),
    )
    .unwrap();
    let node = TlsNode::start(&config, Some(&file("ca.crt")));
    // Without the CA the certificate is not trusted: never ready.
    let untrusting = TlsNode::start(&config, None);

    let started = Instant::now();
    while http("GET", &format!("http://{}/readyz", node.addr), &[], "")
        .await
        .0
        != 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not ready over TLS"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let url = format!("ws://{}/ws/projects/secure", node.addr);
    let (client, welcome) = Client::open(&url, "secure", "alice").await;
    assert_eq!(welcome["recovered"], false);
    let key = format!("Bearer {API_KEY}");
    let (status, _, body) = http(
        "POST",
        &format!("http://{}/api/projects/secure/messages", node.addr),
        &[
            ("authorization", &key),
            ("content-type", "application/json"),
        ],
        r#"{"data":"over tls"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let messages = client.wait_messages(1, Duration::from_secs(10)).await;
    assert_eq!(messages[0]["data"], "over tls");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = http(
        "GET",
        &format!("http://{}/readyz", untrusting.addr),
        &[],
        "",
    )
    .await;
    assert_eq!(
        status.0, 503,
        "a certificate from an unknown CA was accepted"
    );
}
