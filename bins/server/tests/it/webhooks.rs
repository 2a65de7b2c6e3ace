//! Webhooks (SPEC §14) against a real HTTP receiver in this process (hyper on loopback,
//! recording every request), and presence across nodes on a real `redis-server`.
//!
//! The receiver follows a plan: answer each request with a status, or never answer (the
//! sender's `webhooks.timeout` fires). Signatures are checked here with HMAC-SHA256, as a
//! receiver would.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::*;
use crate::redis_server::{Redis, RedisCluster, node_on, node_with_extra};

const HOOK_SECRET: &str = "webhook-test-secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    signature: String,
    content_type: String,
    body: String,
    /// What the receiver answered; `None`: it never did.
    status: Option<u16>,
}

impl Received {
    fn events(&self) -> Vec<Value> {
        let v: Value = serde_json::from_str(&self.body).expect("a JSON body");
        v["events"].as_array().expect("an events array").clone()
    }
}

/// How the receiver answers its `n`th request (from 0): a status, or `None` to hold the
/// connection without answering.
type Plan = Arc<dyn Fn(usize) -> Option<u16> + Send + Sync>;

struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start(plan: impl Fn(usize) -> Option<u16> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let plan: Plan = Arc::new(plan);
        let sink = Arc::clone(&got);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (got, plan) = (Arc::clone(&sink), Arc::clone(&plan));
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (got, plan) = (Arc::clone(&got), Arc::clone(&plan));
                        async move {
                            let header = |name: &str| {
                                request
                                    .headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            };
                            let (signature, content_type) =
                                (header("x-wshub-signature"), header("content-type"));
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let status = {
                                let mut got = got.lock().unwrap();
                                let status = plan(got.len());
                                got.push(Received {
                                    at: Instant::now(),
                                    signature,
                                    content_type,
                                    body: String::from_utf8(body.to_vec()).unwrap(),
                                    status,
                                });
                                status
                            };
                            match status {
                                Some(status) => Ok::<_, Infallible>(
                                    Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from_static(b"ok")))
                                        .unwrap(),
                                ),
                                None => std::future::pending().await,
                            }
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, got, task }
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "[webhooks]\nurl = \"http://{}/hooks/wshub\"\nsecret = \"{HOOK_SECRET}\"\ntimeout = \"1s\"\n{extra}\n",
            self.addr
        )
    }

    fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The events of the requests answered with a 2xx, one per id, in arrival order.
    fn delivered(&self) -> Vec<Value> {
        let mut seen = BTreeSet::new();
        self.requests()
            .iter()
            .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
            .flat_map(Received::events)
            .filter(|e| seen.insert(e["id"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// Waits until the delivered events satisfy `pred`.
    async fn wait_until(&self, what: &str, within: Duration, pred: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if pred(&self.delivered()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; delivered {:#?}",
                self.delivered()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `(name, project, user)` of each event.
fn summary(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["project"].as_str().unwrap().to_owned(),
                e["user"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

fn has(events: &[Value], name: &str, project: &str, user: Option<&str>) -> bool {
    summary(events)
        .iter()
        .any(|(n, p, u)| n == name && p == project && u == user.unwrap_or("-"))
}

fn verifies(r: &Received) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(r.body.as_bytes());
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    r.signature == format!("sha256={want}")
}

/// One metric's value from `/metrics` (`name` with its labels, as written).
async fn metric(server: &Server, name: &str) -> f64 {
    let (status, _, body) = http("GET", &server.http("/metrics"), &[], "").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test]
async fn webhooks_are_signed_batched_and_tell_membership_in_order() {
    let receiver = Receiver::start(|_| Some(200)).await;
    let server = Server::start(&receiver.config(""));
    let (mut alice1, _) = join(&server, "room", "alice").await;
    let (mut alice2, _) = join(&server, "room", "alice").await;
    let (mut bob, _) = join(&server, "room", "bob").await;
    let (mut other, _) = join(&server, "lobby", "bob").await;
    // Connections end asynchronously: each step waits for its event, so the order is known.
    bob.close(None).await.unwrap();
    let _ = bob.next().await;
    receiver
        .wait_until("bob's leave", STEP, |got| {
            has(got, "user_left", "room", Some("bob"))
        })
        .await;
    for ws in [&mut alice1, &mut alice2] {
        ws.close(None).await.unwrap();
        let _ = ws.next().await;
    }
    receiver
        .wait_until("room's vacancy", STEP, |got| {
            has(got, "project_vacated", "room", None)
        })
        .await;
    other.close(None).await.unwrap();
    let _ = other.next().await;
    let want = [
        ("project_occupied", "room", None),
        ("user_joined", "room", Some("alice")),
        ("user_joined", "room", Some("bob")),
        ("project_occupied", "lobby", None),
        ("user_joined", "lobby", Some("bob")),
        ("user_left", "room", Some("bob")),
        ("user_left", "room", Some("alice")),
        ("project_vacated", "room", None),
        ("user_left", "lobby", Some("bob")),
        ("project_vacated", "lobby", None),
    ];
    receiver
        .wait_until("every event", STEP, |got| got.len() >= want.len())
        .await;
    // A little longer, so that a duplicate would show.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = receiver.delivered();
    let expected: Vec<(String, String, String)> = want
        .iter()
        .map(|(n, p, u)| {
            (
                (*n).to_owned(),
                (*p).to_owned(),
                u.unwrap_or("-").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary(&got),
        expected,
        "each event once, in the order it happened"
    );
    let requests = receiver.requests();
    // Batched: the five opening events (all within a second) went in one request.
    assert!(requests[0].events().len() >= 5, "{:?}", requests[0].body);
    assert!(
        requests.len() < want.len(),
        "batched: {} requests for {} events",
        requests.len(),
        want.len()
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for r in &requests {
        assert!(verifies(r), "signature {} of {}", r.signature, r.body);
        assert_eq!(r.content_type, "application/json");
        for e in r.events() {
            let t = e["time_ms"].as_u64().unwrap();
            assert!(t <= now_ms && t + 60_000 > now_ms, "time_ms {t}");
            assert!(e["id"].as_str().is_some_and(|id| !id.is_empty()));
        }
    }
    let ids: BTreeSet<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), got.len(), "ids are unique");
    // A tampered body does not verify.
    let mut forged = requests[0].clone();
    forged.body = forged.body.replace("room", "roon");
    assert!(!verifies(&forged));
    assert_eq!(
        metric(&server, "wshub_webhook_events_sent_total").await,
        want.len() as f64
    );
}

#[tokio::test]
async fn a_receiver_failing_then_recovering_gets_every_event_after_retries() {
    // The first three requests answer 500, then every one 200.
    let receiver = Receiver::start(|n| Some(if n < 3 { 500 } else { 200 })).await;
    let server = Server::start(&receiver.config("events = [\"user_joined\", \"user_left\"]"));
    let users = ["u1", "u2", "u3", "u4", "u5"];
    let started = Instant::now();
    for user in users {
        let (mut ws, _) = join(&server, "room", user).await;
        ws.close(None).await.unwrap();
        let _ = ws.next().await;
    }
    receiver
        .wait_until(
            "every event after the failures",
            Duration::from_secs(20),
            |got| got.len() >= 2 * users.len(),
        )
        .await;
    let delivered_after = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = receiver.delivered();
    let mut want = BTreeMap::new();
    for user in users {
        want.insert(("user_joined".to_owned(), user.to_owned()), 1);
        want.insert(("user_left".to_owned(), user.to_owned()), 1);
    }
    let mut counted = BTreeMap::new();
    for (name, _, user) in summary(&got) {
        *counted.entry((name, user)).or_insert(0) += 1;
    }
    assert_eq!(
        counted, want,
        "every event, once by id; only the chosen events"
    );
    // Retried events kept their ids: each id the failed requests carried was delivered.
    let requests = receiver.requests();
    let failed: Vec<&Received> = requests.iter().filter(|r| r.status == Some(500)).collect();
    assert_eq!(failed.len(), 3);
    let delivered_ids: BTreeSet<String> = got
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    for r in &failed {
        for e in r.events() {
            assert!(delivered_ids.contains(e["id"].as_str().unwrap()));
        }
    }
    // The same batch, the same bytes, again and again, each later than the last by more.
    assert!(failed.windows(2).all(|w| w[0].body == w[1].body));
    let ok = requests.iter().find(|r| r.status == Some(200)).unwrap();
    assert_eq!(ok.body, failed[0].body);
    let gaps: Vec<Duration> = requests
        .windows(2)
        .take(3)
        .map(|w| w[1].at - w[0].at)
        .collect();
    assert!(gaps[2] > gaps[0], "backoff grows: {gaps:?}");
    assert!(requests.iter().all(verifies));
    assert_eq!(
        metric(&server, "wshub_webhook_requests_failed_total").await,
        3.0
    );
    eprintln!(
        "webhooks: 3 failures then success; {} requests, {} events delivered once each after {delivered_after:?}; retry gaps {gaps:?}",
        requests.len(),
        got.len()
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_costs_bounded_memory_and_nobody_else() {
    let receiver = Receiver::start(|_| None).await;
    let server = Server::start(
        &receiver.config("events = [\"user_joined\", \"user_left\"]\nmax_backlog = 50"),
    );
    // A member who keeps talking throughout.
    let (mut anchor, _) = join(&server, "room", "anchor").await;
    // 300 events while the receiver holds the first request until its 1 s timeout.
    for i in 0..150 {
        let (mut ws, _) = join(&server, "room", &format!("visitor{i}")).await;
        ws.close(None).await.unwrap();
        let _ = ws.next().await;
    }
    let deadline = Instant::now() + STEP;
    loop {
        let dropped = metric(
            &server,
            "wshub_webhook_events_dropped_total{reason=\"backlog\"}",
        )
        .await;
        if dropped >= 150.0 {
            break;
        }
        assert!(Instant::now() < deadline, "dropped only {dropped}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The request held by the receiver times out (webhooks.timeout = 1s) and is retried.
    let deadline = Instant::now() + STEP;
    while metric(&server, "wshub_webhook_requests_failed_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the held request never timed out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let backlog = metric(&server, "wshub_webhook_backlog").await;
    assert!(backlog <= 50.0, "backlog {backlog}");
    assert!(
        receiver.requests().len() <= 4,
        "one request at a time, with backoff: {}",
        receiver.requests().len()
    );
    // The hub is unaffected: a publish goes round at once.
    publish(&mut anchor, json!("still here")).await;
    let echoed = loop {
        let frame = recv_json(&mut anchor).await;
        if frame["type"] == "message" {
            break frame;
        }
    };
    assert_eq!(echoed["data"], "still here");
    server
        .wait_for_log("the drop logged", |l| {
            l.contains("webhook events dropped undelivered") && l.contains("backlog")
        })
        .await;
}

fn redis_node(redis: &Redis, receiver: &Receiver) -> Server {
    node_on(&redis.url(), "", &receiver.config(""))
}

#[tokio::test]
async fn two_redis_nodes_send_each_event_once_and_a_killed_nodes_users_leave() {
    let redis = Redis::start();
    let _ =
        each_event_once_from_three_nodes("redis", |receiver| redis_node(&redis, receiver)).await;
}

/// The same on a real Redis Cluster (3 primaries, 3 replicas): the membership scripts run
/// on the projects' shards, the index of projects (`{*}`) on a shard of its own.
#[tokio::test]
async fn three_nodes_on_a_redis_cluster_send_each_event_once_and_a_killed_nodes_users_leave() {
    let cluster = RedisCluster::start(3, &[]);
    let keys = cluster.broker_keys();
    let warnings = each_event_once_from_three_nodes("redis cluster", |receiver| {
        node_with_extra(&keys, &receiver.config(""))
    })
    .await;
    // A script refused by the cluster (CROSSSLOT, NOSCRIPT, a redirect not followed) would
    // be logged by the presence task even where the events still came.
    assert_eq!(warnings, Vec::<String>::new(), "the live nodes' warnings");
}

/// Three nodes made by `node` (each sending to the receiver): every membership event is
/// delivered once for the deployment, and a SIGKILLed node's users leave within the TTL.
/// Returns the warnings the two nodes left alive logged.
async fn each_event_once_from_three_nodes(
    what: &str,
    node: impl Fn(&Receiver) -> Server,
) -> Vec<String> {
    let receiver = Receiver::start(|_| Some(204)).await;
    let a = node(&receiver);
    let b = node(&receiver);
    let mut c = node(&receiver);
    // alice on A, bob on B, carol on both; dave on C, in room and alone in solo.
    let (mut alice, _) = join(&a, "room", "alice").await;
    let (mut bob, _) = join(&b, "room", "bob").await;
    let (mut carol_a, _) = join(&a, "room", "carol").await;
    let (mut carol_b, _) = join(&b, "room", "carol").await;
    let (_dave_room, _) = join(&c, "room", "dave").await;
    let (_dave_solo, _) = join(&c, "solo", "dave").await;
    receiver
        .wait_until("the joins", STEP, |got| {
            ["alice", "bob", "carol", "dave"]
                .iter()
                .all(|u| has(got, "user_joined", "room", Some(u)))
                && has(got, "user_joined", "solo", Some("dave"))
        })
        .await;

    // SIGKILL: C says nothing; its announcement expires (presence_ttl = 2s).
    let status = Command::new("kill")
        .args(["-KILL", &c.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let killed = Instant::now();
    c.wait();
    receiver
        .wait_until("dave's leave and solo's vacancy", STEP, |got| {
            has(got, "user_left", "room", Some("dave"))
                && has(got, "user_left", "solo", Some("dave"))
                && has(got, "project_vacated", "solo", None)
        })
        .await;
    let gone_after = killed.elapsed();

    // Carol leaves one node: she is still on the other, no event. Then everyone goes.
    carol_a.close(None).await.unwrap();
    let _ = carol_a.next().await;
    for ws in [&mut alice, &mut bob, &mut carol_b] {
        ws.close(None).await.unwrap();
        let _ = ws.next().await;
    }
    receiver
        .wait_until("room vacated", STEP, |got| {
            has(got, "project_vacated", "room", None)
        })
        .await;
    // Long enough for a second node's duplicate to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut counted = BTreeMap::new();
    for key in summary(&receiver.delivered()) {
        *counted.entry(key).or_insert(0) += 1;
    }
    let mut want = BTreeMap::new();
    for (name, project, user) in [
        ("project_occupied", "room", "-"),
        ("project_occupied", "solo", "-"),
        ("project_vacated", "room", "-"),
        ("project_vacated", "solo", "-"),
        ("user_joined", "room", "alice"),
        ("user_joined", "room", "bob"),
        ("user_joined", "room", "carol"),
        ("user_joined", "room", "dave"),
        ("user_joined", "solo", "dave"),
        ("user_left", "room", "alice"),
        ("user_left", "room", "bob"),
        ("user_left", "room", "carol"),
        ("user_left", "room", "dave"),
        ("user_left", "solo", "dave"),
    ] {
        want.insert((name.to_owned(), project.to_owned(), user.to_owned()), 1);
    }
    assert_eq!(counted, want, "each event once for the cluster");
    assert!(receiver.requests().iter().all(verifies));
    // presence_ttl, plus a tick and this test's polling on a busy machine.
    assert!(
        gone_after <= Duration::from_secs(4),
        "dave left after {gone_after:?}, presence_ttl is 2s"
    );
    eprintln!(
        "webhooks on {what}: {} events once each from 3 nodes in {} requests; a SIGKILLed node's user left after {gone_after:?} (presence_ttl 2s)",
        receiver.delivered().len(),
        receiver.requests().len()
    );
    [a.warnings(), b.warnings()].concat()
}

/// Frames a connection receives, collected by a task of its own.
struct Frames {
    /// Kept so the connection stays open.
    _ws: futures_util::stream::SplitSink<Ws, Message>,
    frames: Arc<Mutex<Vec<(Instant, Value)>>>,
    reader: JoinHandle<()>,
}

impl Frames {
    fn new(ws: Ws) -> Self {
        let (sink, mut stream) = ws.split();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&frames);
        let reader = tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = stream.next().await {
                into.lock()
                    .unwrap()
                    .push((Instant::now(), serde_json::from_str(&text).unwrap()));
            }
        });
        Self {
            _ws: sink,
            frames,
            reader,
        }
    }

    /// The presence frames about `user`.
    fn presence_of(&self, user: &str) -> Vec<(Instant, Value)> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| f["type"] == "presence" && f["user"] == user)
            .cloned()
            .collect()
    }

    async fn wait_presence(&self, user: &str, event: &str) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some((_, f)) = self
                .presence_of(user)
                .into_iter()
                .rev()
                .find(|(_, f)| f["event"] == event)
            {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "no {event} of {user}: {:?}",
                self.frames.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn connect_v2(server: &Server, user: &str, project: &str) -> Ws {
    let url = format!(
        "{}?subscribe={project}",
        server.http("/ws").replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(user, &[project]))).unwrap(),
    );
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("wshub.v2"),
    );
    let (mut ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv_json(&mut ws).await["type"], "welcome");
    assert_eq!(recv_json(&mut ws).await["type"], "subscribed");
    ws
}

#[tokio::test]
async fn members_see_joins_and_leaves_on_other_nodes_coalesced() {
    let redis = Redis::start();
    let (a, b) = (node_on(&redis.url(), "", ""), node_on(&redis.url(), "", ""));
    joins_and_leaves_on_other_nodes_coalesced("redis", &a, &b).await;
}

/// Members on node `a` see the joins and leaves of users on node `b`, each user's first
/// join and last leave in the deployment once, coalesced to one diff a second; the nodes
/// share one Redis deployment (a server or a cluster: `redis_cluster.rs` runs it there).
pub(crate) async fn joins_and_leaves_on_other_nodes_coalesced(what: &str, a: &Server, b: &Server) {
    let (alice, _) = join(a, "room", "alice").await;
    let alice = Frames::new(alice);
    let vic = Frames::new(connect_v2(a, "vic", "room").await);
    // Vic's join reached alice on the same node at once, as ever.
    alice.wait_presence("vic", "join").await;

    // Bob connects to node B: both members on A hear of it (v1, and v2 naming the project).
    let joined = Instant::now();
    let (mut bob, _) = join(b, "room", "bob").await;
    alice.wait_presence("bob", "join").await;
    let frame = vic.wait_presence("bob", "join").await;
    assert_eq!(frame["project"], "room");
    let join_took = joined.elapsed();
    // A second connection of bob, on A this time: the cluster knew him, no second join.
    let (mut bob_here, _) = join(a, "room", "bob").await;
    // ... and leaving B while still on A: no leave.
    bob.close(None).await.unwrap();
    let _ = bob.next().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        alice.presence_of("bob").len(),
        1,
        "{:?}",
        alice.presence_of("bob")
    );
    // Gone from A too: now the leave, at once (A was the last node with him).
    bob_here.close(None).await.unwrap();
    let _ = bob_here.next().await;
    alice.wait_presence("bob", "leave").await;
    assert_eq!(vic.wait_presence("bob", "leave").await["project"], "room");

    // Flapping on B: five visits within half a second, then a stay. Members on A get one
    // diff a second at most: a handful of frames, not ten.
    for _ in 0..5 {
        let (mut ws, _) = join(b, "room", "flap").await;
        ws.close(None).await.unwrap();
        let _ = ws.next().await;
    }
    let (_flap, _) = join(b, "room", "flap").await;
    alice.wait_presence("flap", "join").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let frames = alice.presence_of("flap");
    assert!(frames.len() <= 3, "coalesced: {frames:?}");
    assert_eq!(frames.last().unwrap().1["event"], "join", "it ends present");
    // Two frames about flap are at least a second apart (one diff a second).
    for pair in frames.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(900),
            "{frames:?}"
        );
    }
    drop((alice, vic));
    eprintln!(
        "cluster presence on {what}: a join on another node reached members after {join_took:?}; 5 flaps then a stay made {} frame(s)",
        frames.len()
    );
}
