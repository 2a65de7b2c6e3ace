//! Exact publishing end to end (issue #17): idempotency keys, ephemeral messages,
//! `echo: false`, batches and history paging, on the memory broker (one node) and on Redis
//! (two nodes on one real `redis-server`). Every scenario takes the nodes it runs on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::SinkExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::redis_server::Redis;

const HISTORY: &str = "[history]\nsize = 3000\n";

fn memory() -> Vec<Server> {
    vec![Server::start(HISTORY)]
}

fn redis_nodes(redis: &Redis) -> Vec<Server> {
    let node = || {
        Server::start(&format!(
            "[broker]\nkind = \"redis\"\nredis_url = \"{}\"\npresence_ttl = \"2s\"\ncommand_timeout = \"2s\"\nconnect_timeout = \"1s\"\n\n[shutdown]\ndrain = \"1s\"\n\n{HISTORY}",
            redis.url()
        ))
    };
    vec![node(), node()]
}

/// The last node: on Redis, another node than the first.
fn other(nodes: &[Server]) -> &Server {
    &nodes[nodes.len() - 1]
}

async fn publish_http(server: &Server, project: &str, body: Value) -> (u16, Value) {
    api(
        server,
        "POST",
        &format!("/api/projects/{project}/messages"),
        &body.to_string(),
    )
    .await
}

async fn history(server: &Server, project: &str, query: &str) -> Value {
    let (status, body) = api(
        server,
        "GET",
        &format!("/api/projects/{project}/messages?{query}"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn offsets(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect()
}

/// Publishes a marker of its own over HTTP and reads `ws` up to it: the `message` frames
/// before it, other markers left out.
async fn until_marker(server: &Server, ws: &mut Ws, project: &str) -> Vec<Value> {
    static MARKERS: AtomicU64 = AtomicU64::new(0);
    let marker = json!({ "marker": MARKERS.fetch_add(1, Ordering::Relaxed) });
    let (status, body) = publish_http(server, project, json!({ "data": marker })).await;
    assert_eq!(status, 202, "{body}");
    let mut seen = Vec::new();
    loop {
        let message = recv_message(ws).await;
        if message["data"] == marker {
            return seen;
        }
        if message["data"].get("marker").is_none() {
            seen.push(message);
        }
    }
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next frame of `kind`, skipping presence and messages.
async fn recv_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = recv_json(ws).await;
        if frame["type"] == kind {
            return frame;
        }
        assert!(
            matches!(frame["type"].as_str(), Some("presence" | "message")),
            "expected {kind}, got {frame}"
        );
    }
}

async fn a_publish_retried_after_a_dropped_connection_is_delivered_once(nodes: &[Server]) {
    let p = "retry";
    let (mut watcher, _) = join(other(nodes), p, "watcher").await;
    let frame = json!({"type": "publish", "id": "1", "data": {"order": 17}, "key": "order-17"});
    // The publisher sends and drops its connection without reading the ack.
    let (mut first, _) = join(&nodes[0], p, "publisher").await;
    send(&mut first, frame.clone()).await;
    drop(first);
    // The first publish reached the broker (the watcher got it) before the retry is sent:
    // otherwise, on a loaded machine, the retry could overtake it and be the first.
    let mut received = vec![recv_message(&mut watcher).await];
    // It reconnects (on Redis, to the other node) and retries with the same key.
    let (mut retry, _) = join(other(nodes), p, "publisher").await;
    send(&mut retry, frame).await;
    let ack = recv_type(&mut retry, "ack").await;
    assert_eq!(ack["offset"], 1, "{ack}");
    received.extend(until_marker(&nodes[0], &mut watcher, p).await);
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["data"], json!({"order": 17}));
    let page = history(&nodes[0], p, "").await;
    assert_eq!(offsets(&page["messages"]), [1, 2], "{page}");
    // Had the first publish reached the broker, the retry says so.
    assert_eq!(ack["duplicate"], true, "{ack}");
    // Over HTTP, in the body or the header, the key names the same publish.
    let (status, body) = publish_http(
        other(nodes),
        p,
        json!({"data": {"order": 17}, "key": "order-17"}),
    )
    .await;
    assert_eq!(
        (status, body),
        (202, json!({"offset": 1, "duplicate": true}))
    );
    let path = format!("/api/projects/{p}/messages");
    let (status, body) = api_with(
        &nodes[0],
        "POST",
        &path,
        r#"{"data":1}"#,
        &[("idempotency-key", "order-17")],
    )
    .await;
    assert_eq!(
        (status, body),
        (202, json!({"offset": 1, "duplicate": true}))
    );
    let (status, body) = api_with(
        &nodes[0],
        "POST",
        &path,
        r#"{"data":1,"key":"a"}"#,
        &[("idempotency-key", "b")],
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_key")),
        "{body}"
    );
    let long = "k".repeat(129);
    let (status, body) = publish_http(&nodes[0], p, json!({"data": 1, "key": long})).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_key")),
        "{body}"
    );
    // A v1 client with a key that is too long gets an `invalid_key` error frame.
    send(
        &mut retry,
        json!({"type": "publish", "data": 1, "key": "k".repeat(129)}),
    )
    .await;
    let error = recv_type(&mut retry, "error").await;
    assert_eq!(error["code"], "invalid_key", "{error}");
}

async fn racing_100_publishes_with_10_keys_deliver_10_messages(nodes: &[Server]) {
    let p = "race";
    let (mut watcher, _) = join(other(nodes), p, "watcher").await;
    let publishes = (0..100).map(|i| {
        let node = &nodes[i % nodes.len()];
        async move {
            let key = format!("key-{}", i % 10);
            let (status, body) =
                publish_http(node, p, json!({"data": {"key": key}, "key": key})).await;
            assert_eq!(status, 202, "{body}");
            (key, body)
        }
    });
    let answers = join_all(publishes).await;
    let mut first: BTreeMap<String, u64> = BTreeMap::new();
    let mut duplicates = 0;
    for (key, body) in &answers {
        let offset = body["offset"].as_u64().unwrap();
        if body["duplicate"] == true {
            duplicates += 1;
        } else {
            assert_eq!(
                first.insert(key.clone(), offset),
                None,
                "{key} published twice"
            );
        }
    }
    assert_eq!((first.len(), duplicates), (10, 90), "{answers:?}");
    for (key, body) in &answers {
        assert_eq!(body["offset"].as_u64(), Some(first[key]), "{key}: {body}");
    }
    let received = until_marker(&nodes[0], &mut watcher, p).await;
    assert_eq!(received.len(), 10, "{received:?}");
    let page = history(&nodes[0], p, "").await;
    assert_eq!(offsets(&page["messages"]), (1..=11).collect::<Vec<_>>());
}

async fn an_ephemeral_flood_leaves_the_history_untouched(nodes: &[Server]) {
    let p = "flood";
    let (mut watcher, _) = join(other(nodes), p, "watcher").await;
    let (mut sender, _) = join(&nodes[0], p, "sender").await;
    let (status, body) = publish_http(&nodes[0], p, json!({"data": "kept"})).await;
    assert_eq!((status, body), (202, json!({"offset": 1})));
    for i in 0..100 {
        send(
            &mut sender,
            json!({"type": "publish", "id": i.to_string(), "data": i, "ephemeral": true}),
        )
        .await;
    }
    for i in 0..100 {
        let ack = recv_type(&mut sender, "ack").await;
        assert_eq!(ack, json!({"type": "ack", "id": i.to_string()}));
    }
    let (status, body) =
        publish_http(other(nodes), p, json!({"data": "http", "ephemeral": true})).await;
    assert_eq!((status, body), (202, json!({})));
    let received = until_marker(&nodes[0], &mut watcher, p).await;
    assert_eq!(received.len(), 102, "{received:?}");
    assert_eq!(received[0]["offset"], 1);
    for (i, m) in received[1..101].iter().enumerate() {
        assert_eq!(m["data"], i, "{m}");
        assert_eq!(m["ephemeral"], true, "{m}");
        assert!(m.get("offset").is_none(), "{m}");
    }
    assert_eq!(received[101]["data"], "http");
    let page = history(&nodes[0], p, "").await;
    assert_eq!(offsets(&page["messages"]), [1, 2], "{page}");
    assert_eq!(page["offset"], 2);
    // A client that recovers gets the stored messages only.
    let url = format!(
        "{}?since=0&epoch={}",
        other(nodes).url(p),
        page["epoch"].as_str().unwrap()
    );
    let mut late = try_connect(&url, Some(&token("late", &[p]))).await.unwrap();
    let welcome = recv_json(&mut late).await;
    assert_eq!(
        (welcome["recovered"].clone(), welcome["missed"].clone()),
        (json!(true), json!(2))
    );
}

async fn echo_false_reaches_everyone_but_the_sender(nodes: &[Server]) {
    let p = "echo";
    let (mut sender, _) = join(&nodes[0], p, "sender").await;
    let (mut near, _) = join(&nodes[0], p, "near").await;
    let (mut far, _) = join(other(nodes), p, "far").await;
    send(
        &mut sender,
        json!({"type": "publish", "id": "quiet", "data": "quiet", "echo": false}),
    )
    .await;
    let ack = recv_type(&mut sender, "ack").await;
    assert_eq!(ack, json!({"type": "ack", "id": "quiet", "offset": 1}));
    for ws in [&mut near, &mut far] {
        let received = until_marker(&nodes[0], ws, p).await;
        assert_eq!(received.len(), 1, "{received:?}");
        assert_eq!(received[0]["data"], "quiet");
    }
    // The sender's next message is the marker: its own never reached it.
    assert_eq!(until_marker(&nodes[0], &mut sender, p).await.len(), 0);
    // An ephemeral publish without echo alike.
    send(
        &mut sender,
        json!({"type": "publish", "id": "q2", "data": "quiet too", "echo": false, "ephemeral": true}),
    )
    .await;
    let ack = recv_type(&mut sender, "ack").await;
    assert_eq!(ack, json!({"type": "ack", "id": "q2"}));
    for ws in [&mut near, &mut far] {
        let received = until_marker(&nodes[0], ws, p).await;
        assert_eq!(received.len(), 1, "{received:?}");
        assert_eq!(received[0]["ephemeral"], true);
    }
    assert_eq!(until_marker(&nodes[0], &mut sender, p).await.len(), 0);
}

async fn a_batch_with_bad_items_publishes_the_others(nodes: &[Server]) {
    let big = "x".repeat(70_000);
    let batch = json!({"messages": [
        {"project": "batch-a", "data": 1},
        {"project": "not a project", "data": 2},
        {"project": "batch-b", "data": 3, "from": "billing"},
        {"project": "batch-a"},
        {"project": "batch-a", "data": 4, "key": "k".repeat(129)},
        {"project": "batch-a", "data": 5, "key": "once"},
        {"project": "batch-a", "data": big},
        {"project": "batch-a", "data": 6, "key": "once"},
        {"project": "batch-b", "data": 7, "ephemeral": true},
        {"project": "batch-a", "data": 8, "unknown": true},
        {"project": "batch-a", "data": 9},
    ]});
    let (status, body) = api(other(nodes), "POST", "/api/messages", &batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    let codes: Vec<Value> = results
        .iter()
        .map(|r| r.get("error").cloned().unwrap_or(Value::Null))
        .collect();
    assert_eq!(
        codes,
        [
            Value::Null,
            json!("invalid_project"),
            Value::Null,
            json!("invalid_body"),
            json!("invalid_key"),
            Value::Null,
            json!("too_large"),
            Value::Null,
            Value::Null,
            json!("invalid_body"),
            Value::Null,
        ],
        "{body}"
    );
    assert_eq!(results[0], json!({"offset": 1}));
    assert_eq!(results[2], json!({"offset": 1}));
    assert_eq!(results[5], json!({"offset": 2}));
    assert_eq!(results[7], json!({"offset": 2, "duplicate": true}));
    assert_eq!(results[8], json!({}));
    assert_eq!(results[10], json!({"offset": 3}));
    assert!(
        results[1]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    let a = history(&nodes[0], "batch-a", "").await;
    let data: Vec<Value> = a["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, [json!(1), json!(5), json!(9)]);
    let b = history(&nodes[0], "batch-b", "").await;
    assert_eq!(b["messages"][0]["from"], "billing");
    assert_eq!(offsets(&b["messages"]), [1]);
    // Over 100 items, or none: the whole batch is refused.
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"project": "x", "data": i}))
        .collect();
    let (status, body) = api(
        &nodes[0],
        "POST",
        "/api/messages",
        &json!({ "messages": many }).to_string(),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_body")),
        "{body}"
    );
    let (status, _) = api(&nodes[0], "GET", "/api/messages", "").await;
    assert_eq!(status, 405);
}

/// `wshub_broker_publish_round_trips_total` of `server`.
async fn publish_round_trips(server: &Server) -> u64 {
    let (status, _, body) = http("GET", &server.http("/metrics"), &[], "").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("wshub_broker_publish_round_trips_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no round trip counter in\n{body}"))
}

/// A batch of 50 items over 5 projects (`rt-0` … `rt-4`, interleaved), `data` from
/// `first`: each item answers its project's next offset, in the batch's order.
async fn batch_of_50(server: &Server, first: u64) {
    let items: Vec<Value> = (first..first + 50)
        .map(|i| json!({"project": format!("rt-{}", i % 5), "data": i}))
        .collect();
    let (status, body) = api(
        server,
        "POST",
        "/api/messages",
        &json!({ "messages": items }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    let expected: Vec<Value> = (first..first + 50)
        .map(|i| json!({ "offset": i / 5 + 1 }))
        .collect();
    assert_eq!(results, &expected, "{body}");
}

/// The `data` of the messages of `rt-3` that `member` received up to a marker.
async fn live_data(server: &Server, member: &mut Ws) -> Vec<u64> {
    until_marker(server, member, "rt-3")
        .await
        .iter()
        .map(|m| m["data"].as_u64().unwrap())
        .collect()
}

/// Issue #17's "one Redis round trip per batch": a batch of 50 items over 5 projects takes
/// one round trip on Redis (none on the memory broker, which answers at once), each
/// project's items take offsets in the batch's order, and a member on another node gets
/// them in that order. On Redis, a Redis that forgot the publish script (`SCRIPT FLUSH`)
/// costs one more round trip and publishes every item exactly once; a project whose keys
/// Redis cannot use fails its item alone.
async fn a_batch_takes_one_round_trip_in_order(nodes: &[Server], redis: Option<&Redis>) {
    let (mut member, _) = join(&nodes[0], "rt-3", "watcher").await;
    let node = other(nodes);
    // A fresh Redis does not know the publish script yet: the first publish loads it (one
    // round trip more, as the `SCRIPT FLUSH` below shows).
    let (status, body) = publish_http(node, "rt-warm", json!({"data": 0})).await;
    assert_eq!(status, 202, "{body}");
    if let Some(redis) = redis {
        assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]), "OK");
    }
    let before = publish_round_trips(node).await;
    batch_of_50(node, 0).await;
    let round_trips = publish_round_trips(node).await - before;
    assert_eq!(round_trips, u64::from(redis.is_some()));
    if let Some(redis) = redis {
        // Every item ran its own script (the budget's reports may add EVALSHAs later).
        let stats = redis.cli(&["INFO", "commandstats"]);
        let evalsha: u64 = stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|l| l.split(',').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no EVALSHA in {stats}"));
        assert!(evalsha >= 50, "{stats}");
    }
    for project in 0..5 {
        let page = history(&nodes[0], &format!("rt-{project}"), "").await;
        let data: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["data"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (0..50).filter(|i| i % 5 == project).collect();
        assert_eq!(data, expected, "rt-{project}");
        assert_eq!(offsets(&page["messages"]), (1..=10).collect::<Vec<_>>());
    }
    let Some(redis) = redis else {
        let live = live_data(&nodes[0], &mut member).await;
        assert_eq!(live, [3, 8, 13, 18, 23, 28, 33, 38, 43, 48]);
        return;
    };

    // A Redis that lost its scripts answers NOSCRIPT to every EVALSHA without running
    // it: the items are sent again behind a SCRIPT LOAD, once each.
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    let before = publish_round_trips(node).await;
    batch_of_50(node, 50).await;
    assert_eq!(publish_round_trips(node).await - before, 2);
    for project in 0..5 {
        let page = history(&nodes[0], &format!("rt-{project}"), "").await;
        assert_eq!(offsets(&page["messages"]), (1..=20).collect::<Vec<_>>());
        let data: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["data"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (0..100).filter(|i| i % 5 == project).collect();
        assert_eq!(data, expected, "rt-{project}");
    }
    let live = live_data(&nodes[0], &mut member).await;
    assert_eq!(live, (0..100).filter(|i| i % 5 == 3).collect::<Vec<_>>());

    // A project whose meta is not a hash: its script fails, its item alone.
    assert_eq!(redis.cli(&["SET", "wshub:{rt-bad}:meta", "x"]), "OK");
    let batch = json!({"messages": [
        {"project": "rt-0", "data": "a"},
        {"project": "rt-bad", "data": "b"},
        {"project": "rt-0", "data": "c", "key": "c"},
        {"project": "rt-1", "data": "d", "ephemeral": true},
        {"project": "rt-0", "data": "e", "key": "c"},
    ]});
    let before = publish_round_trips(node).await;
    let (status, body) = api(node, "POST", "/api/messages", &batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(publish_round_trips(node).await - before, 1);
    assert_eq!(
        body["results"],
        json!([
            {"offset": 21},
            {"error": "broker_unavailable", "message": "the message broker is unavailable; retry later"},
            {"offset": 22},
            {},
            {"offset": 22, "duplicate": true},
        ])
    );
}

async fn paging_walks_2500_messages_in_pages_of_1000(nodes: &[Server]) {
    let p = "paging";
    for chunk in 0..25 {
        let items: Vec<Value> = (0..100)
            .map(|i| json!({"project": p, "data": chunk * 100 + i}))
            .collect();
        let node = &nodes[chunk % nodes.len()];
        let (status, body) = api(
            node,
            "POST",
            "/api/messages",
            &json!({ "messages": items }).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut seen = Vec::new();
    let mut since = 0;
    let mut pages = Vec::new();
    loop {
        let node = &nodes[pages.len() % nodes.len()];
        let page = history(node, p, &format!("since={since}&limit=1000")).await;
        let got = offsets(&page["messages"]);
        pages.push((got.len(), page["complete"].clone()));
        since = *got.last().unwrap_or(&since);
        seen.extend(got);
        if page["complete"] == true {
            break;
        }
        assert!(pages.len() < 10, "{pages:?}");
    }
    assert_eq!(
        pages,
        [
            (1000, json!(false)),
            (1000, json!(false)),
            (500, json!(true))
        ]
    );
    assert_eq!(seen, (1..=2500).collect::<Vec<_>>());
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 2500);
    let newest = history(other(nodes), p, "limit=3&reverse=true").await;
    assert_eq!(offsets(&newest["messages"]), [2500, 2499, 2498]);
    assert_eq!(newest["complete"], false);
    // Without `limit`, the v1 answer: everything after `since`.
    let all = history(&nodes[0], p, "since=0").await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 2500);
    for bad in ["limit=0", "limit=1001", "reverse=maybe"] {
        let (status, body) = api(
            &nodes[0],
            "GET",
            &format!("/api/projects/{p}/messages?{bad}"),
            "",
        )
        .await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("invalid_query")),
            "{bad}"
        );
    }
    // The v2 `history` frame walks the same pages.
    let url = format!("ws://{}/ws", other(nodes).addr);
    let mut v2 = try_connect(&url, Some(&token("pager", &[p])))
        .await
        .unwrap();
    assert_eq!(recv_json(&mut v2).await["type"], "welcome");
    let mut since = 0;
    let mut walked = Vec::new();
    loop {
        send(
            &mut v2,
            json!({"type": "history", "id": "h", "project": p, "since": since, "limit": 1000}),
        )
        .await;
        let page = recv_type(&mut v2, "history").await;
        let got = offsets(&page["messages"]);
        assert!(
            page["messages"][0]["project"] == p,
            "{}",
            page["messages"][0]
        );
        since = *got.last().unwrap();
        walked.extend(got);
        if page["complete"] == true {
            break;
        }
    }
    assert_eq!(walked, (1..=2500).collect::<Vec<_>>());
    send(
        &mut v2,
        json!({"type": "history", "project": p, "reverse": true, "limit": 2}),
    )
    .await;
    let page = recv_type(&mut v2, "history").await;
    assert_eq!(offsets(&page["messages"]), [2500, 2499]);
}

#[tokio::test]
async fn memory_a_publish_retried_after_a_dropped_connection_is_delivered_once() {
    a_publish_retried_after_a_dropped_connection_is_delivered_once(&memory()).await;
}

#[tokio::test]
async fn redis_a_publish_retried_after_a_dropped_connection_is_delivered_once() {
    let redis = Redis::start();
    a_publish_retried_after_a_dropped_connection_is_delivered_once(&redis_nodes(&redis)).await;
}

#[tokio::test]
async fn memory_racing_100_publishes_with_10_keys_deliver_10_messages() {
    racing_100_publishes_with_10_keys_deliver_10_messages(&memory()).await;
}

#[tokio::test]
async fn redis_two_nodes_racing_100_publishes_with_10_keys_deliver_10_messages() {
    let redis = Redis::start();
    racing_100_publishes_with_10_keys_deliver_10_messages(&redis_nodes(&redis)).await;
}

#[tokio::test]
async fn memory_an_ephemeral_flood_leaves_the_history_untouched() {
    an_ephemeral_flood_leaves_the_history_untouched(&memory()).await;
}

#[tokio::test]
async fn redis_an_ephemeral_flood_leaves_the_history_untouched() {
    let redis = Redis::start();
    an_ephemeral_flood_leaves_the_history_untouched(&redis_nodes(&redis)).await;
}

#[tokio::test]
async fn memory_echo_false_reaches_everyone_but_the_sender() {
    echo_false_reaches_everyone_but_the_sender(&memory()).await;
}

#[tokio::test]
async fn redis_echo_false_reaches_everyone_but_the_sender() {
    let redis = Redis::start();
    echo_false_reaches_everyone_but_the_sender(&redis_nodes(&redis)).await;
}

#[tokio::test]
async fn memory_a_batch_with_bad_items_publishes_the_others() {
    a_batch_with_bad_items_publishes_the_others(&memory()).await;
}

#[tokio::test]
async fn redis_a_batch_with_bad_items_publishes_the_others() {
    let redis = Redis::start();
    a_batch_with_bad_items_publishes_the_others(&redis_nodes(&redis)).await;
}

#[tokio::test]
async fn memory_paging_walks_2500_messages_in_pages_of_1000() {
    paging_walks_2500_messages_in_pages_of_1000(&memory()).await;
}

#[tokio::test]
async fn redis_paging_walks_2500_messages_in_pages_of_1000() {
    let redis = Redis::start();
    paging_walks_2500_messages_in_pages_of_1000(&redis_nodes(&redis)).await;
}

#[tokio::test]
async fn memory_a_batch_takes_no_round_trip_and_keeps_each_projects_order() {
    a_batch_takes_one_round_trip_in_order(&memory(), None).await;
}

#[tokio::test]
async fn redis_a_batch_takes_one_round_trip_and_keeps_each_projects_order() {
    let redis = Redis::start();
    a_batch_takes_one_round_trip_in_order(&redis_nodes(&redis), Some(&redis)).await;
}
