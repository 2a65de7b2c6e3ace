//! The v1 protocol end to end: HTTP API, offsets, recovery, presence, malformed frames.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::harness::*;

fn key() -> (&'static str, String) {
    ("authorization", format!("Bearer {API_KEY}"))
}

async fn api(server: &Server, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (k, v) = key();
    let (status, _, body) = http(
        method,
        &server.http(path),
        &[(k, &v), ("content-type", "application/json")],
        body,
    )
    .await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// Connects with recovery parameters and reads the welcome.
async fn rejoin(
    server: &Server,
    project: &str,
    user: &str,
    since: u64,
    epoch: &str,
) -> (Ws, Value) {
    let url = format!("{}?since={since}&epoch={epoch}", server.url(project));
    let mut ws = try_connect(&url, Some(&token(user, &[project])))
        .await
        .unwrap();
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
    (ws, welcome)
}

#[tokio::test]
async fn the_http_api_publishes_lists_history_and_presence() {
    let server = Server::start("");
    let (mut ws, welcome) = join(&server, "shop", "alice").await;
    assert_eq!(welcome["offset"], 0);
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();

    let (status, body) = api(
        &server,
        "POST",
        "/api/projects/shop/messages",
        r#"{"data":{"order":1},"from":"billing"}"#,
    )
    .await;
    assert_eq!((status, &body), (202, &json!({"offset": 1})));
    let msg = recv_message(&mut ws).await;
    assert_eq!(
        (msg["offset"].as_u64(), msg["from"].as_str(), &msg["data"]),
        (Some(1), Some("billing"), &json!({"order": 1}))
    );
    let (status, _) = api(
        &server,
        "POST",
        "/api/projects/shop/messages",
        r#"{"data":"two"}"#,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(recv_message(&mut ws).await["from"], "api");

    let (status, page) = api(&server, "GET", "/api/projects/shop/messages?since=1", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            page["epoch"].as_str(),
            page["offset"].as_u64(),
            page["complete"].as_bool()
        ),
        (Some(epoch.as_str()), Some(2), Some(true))
    );
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (messages[0]["offset"].as_u64(), &messages[0]["data"]),
        (Some(2), &json!("two"))
    );

    let (status, presence) = api(&server, "GET", "/api/projects/shop/presence", "").await;
    assert_eq!(
        (status, presence),
        (200, json!({"users": [{"user": "alice", "connections": 1}]}))
    );

    // Refusals: no key, bad bodies, too large.
    let (status, _, body) = http(
        "POST",
        &server.http("/api/projects/shop/messages"),
        &[],
        r#"{"data":1}"#,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    for (body, code, needle) in [
        ("", 400, "EOF"),
        ("{", 400, "EOF"),
        (r#"{"from":"x"}"#, 400, "missing field `data`"),
        (r#"{"data":1,"to":"x"}"#, 400, "unknown field `to`"),
        (r#"{"data":null}"#, 400, "null"),
    ] {
        let (status, reply) = api(&server, "POST", "/api/projects/shop/messages", body).await;
        assert_eq!(
            (status, reply["error"].as_str()),
            (code, Some("invalid_body")),
            "{body}: {reply}"
        );
        assert!(
            reply["message"].as_str().unwrap().contains(needle),
            "{body}: {reply}"
        );
    }
    let big = json!({"data": "x".repeat(70 * 1024)}).to_string();
    let (status, reply) = api(&server, "POST", "/api/projects/shop/messages", &big).await;
    assert_eq!((status, reply["error"].as_str()), (413, Some("too_large")));
    let (status, _) = api(&server, "GET", "/api/projects/shop/messages?since=x", "").await;
    assert_eq!(status, 400);
    let (status, _) = api(&server, "GET", "/api/projects/bad%20id/messages", "").await;
    assert_eq!(status, 404);
    // Nothing refused was published.
    let (_, page) = api(&server, "GET", "/api/projects/shop/messages", "").await;
    assert_eq!(page["offset"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_during_a_publish_storm_loses_nothing_and_duplicates_nothing() {
    let server = Server::start("[limits]\nclient_publish_rate = 0\n");
    let (mut a, welcome) = join(&server, "storm", "a").await;
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    let (mut b, _) = join(&server, "storm", "b").await;

    // A sees a first message, then drops off.
    api(
        &server,
        "POST",
        "/api/projects/storm/messages",
        r#"{"data":"first"}"#,
    )
    .await;
    let since = recv_message(&mut a).await["offset"].as_u64().unwrap();
    drop(a);

    const HTTP: u64 = 500;
    const WS: u64 = 100;
    let (halfway_tx, halfway_rx) = tokio::sync::oneshot::channel();
    let addr = server.http("/api/projects/storm/messages");
    let http_publisher = tokio::spawn(async move {
        let (k, v) = key();
        let mut halfway = Some(halfway_tx);
        let mut top = 0;
        for i in 0..HTTP {
            let (status, _, body) = http(
                "POST",
                &addr,
                &[(k, &v)],
                &json!({"data": {"http": i}}).to_string(),
            )
            .await;
            assert_eq!(status, 202, "{body}");
            top = top.max(
                serde_json::from_str::<Value>(&body).unwrap()["offset"]
                    .as_u64()
                    .unwrap(),
            );
            if i == HTTP / 2 {
                halfway.take().unwrap().send(()).unwrap();
            }
        }
        top
    });
    let ws_publisher = tokio::spawn(async move {
        let mut top = 0;
        for i in 0..WS {
            b.send(Message::text(
                json!({"type": "publish", "id": i.to_string(), "data": {"ws": i}}).to_string(),
            ))
            .await
            .unwrap();
        }
        // Read until every ack is in (messages from everyone arrive in between).
        let mut acks = 0;
        while acks < WS {
            let frame = recv_json(&mut b).await;
            if frame["type"] == "ack" {
                acks += 1;
                top = top.max(frame["offset"].as_u64().unwrap());
            }
        }
        top
    });

    halfway_rx.await.unwrap();
    let (mut a, welcome) = rejoin(&server, "storm", "a", since, &epoch).await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let top = http_publisher
        .await
        .unwrap()
        .max(ws_publisher.await.unwrap());
    assert_eq!(top, since + HTTP + WS, "every publish got its own offset");

    let mut got = Vec::new();
    while got.last().copied() != Some(top) {
        let msg = recv_message(&mut a).await;
        got.push(msg["offset"].as_u64().unwrap());
    }
    let expected: Vec<u64> = (since + 1..=top).collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "count: got {}, want {}",
        got.len(),
        expected.len()
    );
    assert_eq!(
        got, expected,
        "every missed and new message once, in offset order"
    );
    eprintln!(
        "recovery under fire: {} messages ({HTTP} over HTTP, {WS} over WebSocket), {} replayed, 1 reconnect, 0 lost, 0 duplicated",
        got.len(),
        welcome["missed"]
    );
}

#[tokio::test]
async fn recovery_fails_cleanly_out_of_range_for_another_epoch_and_after_a_restart() {
    let mut server = Server::start("[history]\nsize = 5\n\n[shutdown]\ndrain = \"200ms\"\n");
    let (mut ws, welcome) = join(&server, "p", "u").await;
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    for i in 0..10 {
        api(
            &server,
            "POST",
            "/api/projects/p/messages",
            &json!({"data": i}).to_string(),
        )
        .await;
    }
    for _ in 0..10 {
        recv_message(&mut ws).await;
    }
    // In range: 8, 9, 10 follow the welcome.
    let (mut back, welcome) = rejoin(&server, "p", "u", 7, &epoch).await;
    assert_eq!(
        (
            welcome["recovered"].as_bool(),
            welcome["missed"].as_u64(),
            welcome["offset"].as_u64()
        ),
        (Some(true), Some(3), Some(10))
    );
    for offset in 8..=10 {
        assert_eq!(recv_message(&mut back).await["offset"], offset);
    }
    // Out of range: only 6..=10 are kept.
    let (_, welcome) = rejoin(&server, "p", "u", 2, &epoch).await;
    assert_eq!(
        (welcome["recovered"].as_bool(), welcome["missed"].as_u64()),
        (Some(false), Some(0))
    );
    // Another epoch, and a future offset.
    let (_, welcome) = rejoin(&server, "p", "u", 9, "not-the-epoch").await;
    assert_eq!(welcome["recovered"], false);
    let (_, welcome) = rejoin(&server, "p", "u", 99, &epoch).await;
    assert_eq!(welcome["recovered"], false);

    // A restart loses the memory broker's history: a new epoch, recovered:false.
    let addr = server.addr;
    drop((ws, back));
    let stopped = tokio::task::spawn_blocking(move || server.terminate());
    assert!(stopped.await.unwrap().success());
    let server = Server::start_on(&addr.to_string(), "");
    let (_, welcome) = rejoin(&server, "p", "u", 10, &epoch).await;
    assert_eq!(welcome["recovered"], false);
    assert_ne!(welcome["epoch"].as_str(), Some(epoch.as_str()));
    assert_eq!(welcome["offset"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_joins_and_leaves_even_abrupt_ones() {
    let server = Server::start("");
    let (mut observer, _) = join(&server, "room", "observer").await;
    const USERS: usize = 30;
    let mut clients = Vec::new();
    for i in 0..100 {
        clients.push((
            i % USERS,
            join(&server, "room", &format!("user{}", i % USERS)).await.0,
        ));
    }
    // Every user joined once, whatever its number of connections.
    let mut joined = BTreeSet::new();
    while joined.len() < USERS {
        let frame = recv_json(&mut observer).await;
        assert_eq!(
            (frame["type"].as_str(), frame["event"].as_str()),
            (Some("presence"), Some("join")),
            "{frame}"
        );
        assert!(
            joined.insert(frame["user"].as_str().unwrap().to_owned()),
            "joined twice: {frame}"
        );
    }
    // 20 connections are killed (TCP dropped, no close frame), 20 close cleanly.
    let mut left_connections: BTreeMap<usize, usize> = BTreeMap::new();
    for (user, _) in &clients {
        *left_connections.entry(*user).or_default() += 1;
    }
    let mut kept = Vec::new();
    for (n, (user, mut ws)) in clients.into_iter().enumerate() {
        if n % 5 == 0 {
            drop(ws); // abrupt
        } else if n % 5 == 1 {
            ws.close(None).await.unwrap();
            while ws.next().await.is_some() {}
        } else {
            kept.push((user, ws));
            continue;
        }
        *left_connections.get_mut(&user).unwrap() -= 1;
    }
    let gone: BTreeSet<String> = left_connections
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(u, _)| format!("user{u}"))
        .collect();
    let mut left = BTreeSet::new();
    while left.len() < gone.len() {
        let frame = recv_json(&mut observer).await;
        assert_eq!(frame["event"], "leave", "{frame}");
        assert!(
            left.insert(frame["user"].as_str().unwrap().to_owned()),
            "left twice: {frame}"
        );
    }
    assert_eq!(
        left, gone,
        "every user whose last connection ended left, and only those"
    );

    let (status, presence) = api(&server, "GET", "/api/projects/room/presence", "").await;
    assert_eq!(status, 200);
    let present: BTreeMap<String, u64> = presence["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap().to_owned(),
                u["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected: BTreeMap<String, u64> = BTreeMap::from([("observer".to_owned(), 1)]);
    for (user, _) in &kept {
        *expected.entry(format!("user{user}")).or_default() += 1;
    }
    assert_eq!(present, expected);

    // The presence request answers the same set.
    observer
        .send(Message::text(r#"{"type":"presence"}"#))
        .await
        .unwrap();
    let sync = recv_json(&mut observer).await;
    assert_eq!(sync["event"], "sync");
    let users: BTreeSet<&str> = sync["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(users, expected.keys().map(String::as_str).collect());
}

#[tokio::test]
async fn malformed_frames_get_their_documented_reactions_and_harm_nobody() {
    let server = Server::start("");
    let (mut watcher, _) = join(&server, "p", "watcher").await;
    let mut published = 0;
    let mut check_watcher = async |watcher: &mut Ws| {
        published += 1;
        api(
            &server,
            "POST",
            "/api/projects/p/messages",
            &json!({"data": published}).to_string(),
        )
        .await;
        assert_eq!(recv_message(watcher).await["data"], published);
    };

    // Recoverable faults: error frames, then 1008.
    let (mut sloppy, _) = join(&server, "p", "sloppy").await;
    for (frame, code) in [
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"type":"publish"}"#, "invalid_frame"),
        (r#"{"type":"publish","id":5,"data":1}"#, "invalid_json"),
    ] {
        sloppy.send(Message::text(frame)).await.unwrap();
        let reply = loop {
            let f = recv_json(&mut sloppy).await;
            if f["type"] == "error" {
                break f;
            }
        };
        assert_eq!(reply["code"], code, "{frame}: {reply}");
        check_watcher(&mut watcher).await;
    }
    sloppy.send(Message::text("not json")).await.unwrap();
    let (code, reason, _) = recv_close(&mut sloppy).await;
    assert_eq!((code, reason.as_str()), (1008, "too many malformed frames"));

    // Binary: 1003.
    let (mut binary, _) = join(&server, "p", "binary").await;
    binary.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(recv_close(&mut binary).await.0, 1003);
    check_watcher(&mut watcher).await;

    // Invalid UTF-8 in a text frame: 1007.
    let (mut utf8, _) = join(&server, "p", "utf8").await;
    let frame = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    utf8.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(recv_close(&mut utf8).await.0, 1007);
    check_watcher(&mut watcher).await;

    // 1 MiB of garbage: 1009 before it is even parsed.
    let (mut garbage, _) = join(&server, "p", "garbage").await;
    let junk: String = (0..1 << 20)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let _ = garbage.send(Message::text(junk)).await;
    assert_eq!(recv_close(&mut garbage).await.0, 1009);
    check_watcher(&mut watcher).await;

    assert_eq!(published, 6, "the watcher received every message");
}
