//! Protocol v2 end to end (SPEC §10–§13): `GET /ws` with many subscriptions, the personal
//! stream, per-operation grants, in-band refresh, `/ws/check`, against the real binary.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use ws_auth::{Claims, JwtSigner};

use crate::harness::*;

/// A token of `user` with `projects`, and `caps` when given.
fn token_with(user: &str, projects: &[&str], caps: Option<Value>) -> String {
    let mut claims = Claims::new(user, projects.iter().copied(), Duration::from_secs(3600));
    claims.caps = caps;
    JwtSigner::hs256(SECRET).sign(&claims).unwrap()
}

/// Opens `GET /ws{query}` offering `wshub.v2`; checks the answer and the welcome.
async fn connect(server: &Server, token: &str, query: &str) -> (Ws, Value) {
    let url = format!("{}{query}", server.http("/ws").replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("wshub.v2"),
    );
    let (mut ws, response) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake timed out")
        .expect("handshake");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "wshub.v2",
        "the subprotocol is answered"
    );
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["protocol"], 2);
    (ws, welcome)
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// Sends `frame` and reads the next text frame: its answer, when nothing else is due.
async fn ask(ws: &mut Ws, frame: Value) -> Value {
    send(ws, frame).await;
    recv_json(ws).await
}

async fn api_post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    api(server, "POST", path, &body.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_projects_and_the_personal_stream() {
    let server = Server::start("");
    let user = "auth0|5f7c";
    let (mut ws, welcome) = connect(&server, &token_with(user, &["a", "b"], None), "").await;
    assert_eq!(welcome["user"], user);

    assert_eq!(
        ask(&mut ws, json!({"type": "ping", "id": "p"})).await,
        json!({"type": "pong", "id": "p"})
    );
    let subscribed = ask(
        &mut ws,
        json!({"type": "subscribe", "id": "1", "project": "a"}),
    )
    .await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(
        (
            &subscribed["id"],
            &subscribed["project"],
            &subscribed["offset"]
        ),
        (&json!("1"), &json!("a"), &json!(0))
    );
    let mine = ask(
        &mut ws,
        json!({"type": "subscribe", "id": "2", "project": "~user"}),
    )
    .await;
    assert_eq!(
        (&mine["type"], &mine["project"]),
        (&json!("subscribed"), &json!("~user"))
    );

    // The backend writes to the project and to the user, by their `sub`, percent-encoded.
    let (status, body) =
        api_post(&server, "/api/projects/a/messages", json!({"data": "to a"})).await;
    assert_eq!((status, &body["offset"]), (202, &json!(1)), "{body}");
    let message = recv_json(&mut ws).await;
    assert_eq!(
        (
            &message["type"],
            &message["project"],
            &message["offset"],
            &message["data"]
        ),
        (&json!("message"), &json!("a"), &json!(1), &json!("to a"))
    );
    let (status, body) = api_post(
        &server,
        "/api/users/auth0%7C5f7c/messages",
        json!({"data": "to you"}),
    )
    .await;
    assert_eq!((status, &body["offset"]), (202, &json!(1)), "{body}");
    let message = recv_json(&mut ws).await;
    assert_eq!(
        (&message["project"], &message["offset"], &message["data"]),
        (&json!("~user"), &json!(1), &json!("to you"))
    );

    // Publishing needs the grant, not a subscription; `last: k` replays the newest k.
    let ack = ask(
        &mut ws,
        json!({"type": "publish", "id": "3", "project": "b", "data": 1}),
    )
    .await;
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "3", "project": "b", "offset": 1})
    );
    let subscribed = ask(
        &mut ws,
        json!({"type": "subscribe", "id": "4", "project": "b", "last": 5}),
    )
    .await;
    assert_eq!(
        (&subscribed["missed"], &subscribed["recovered"]),
        (&json!(1), &json!(false))
    );
    let replayed = recv_json(&mut ws).await;
    assert_eq!(
        (&replayed["project"], &replayed["offset"]),
        (&json!("b"), &json!(1))
    );

    // `echo: false`: another member gets it, the sender only its ack.
    let (mut other, _) = connect(&server, &token_with("bob", &["a"], None), "?subscribe=a").await;
    let subscribed = recv_json(&mut other).await;
    assert_eq!(subscribed["type"], "subscribed");
    let joined = recv_json(&mut ws).await;
    assert_eq!(
        joined,
        json!({"type": "presence", "project": "a", "event": "join", "user": "bob"})
    );
    let ack = ask(
        &mut ws,
        json!({"type": "publish", "id": "5", "project": "a", "data": "quiet", "echo": false}),
    )
    .await;
    assert_eq!(
        (&ack["type"], &ack["offset"]),
        (&json!("ack"), &json!(2)),
        "{ack}"
    );
    assert_eq!(recv_message(&mut other).await["data"], "quiet");
    api_post(&server, "/api/projects/a/messages", json!({"data": "loud"})).await;
    let next = recv_json(&mut ws).await;
    assert_eq!(
        (&next["offset"], &next["data"]),
        (&json!(3), &json!("loud")),
        "no echo of 2"
    );

    let presence = ask(
        &mut ws,
        json!({"type": "presence", "id": "6", "project": "a"}),
    )
    .await;
    assert_eq!(
        presence,
        json!({"type": "presence", "id": "6", "project": "a", "event": "sync", "users": ["auth0|5f7c", "bob"]})
    );
    let history = ask(
        &mut ws,
        json!({"type": "history", "id": "7", "project": "a", "since": 1}),
    )
    .await;
    let offsets: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].clone())
        .collect();
    assert_eq!(offsets, [json!(2), json!(3)], "{history}");
    assert_eq!(history["messages"][0]["project"], "a");

    // Unsubscribed: nothing of `a` arrives any more, the personal stream still does.
    let gone = ask(
        &mut ws,
        json!({"type": "unsubscribe", "id": "8", "project": "a"}),
    )
    .await;
    assert_eq!(
        gone,
        json!({"type": "unsubscribed", "id": "8", "project": "a"})
    );
    api_post(
        &server,
        "/api/projects/a/messages",
        json!({"data": "unseen"}),
    )
    .await;
    api_post(
        &server,
        "/api/users/auth0%7C5f7c/messages",
        json!({"data": "seen"}),
    )
    .await;
    let next = recv_json(&mut ws).await;
    assert_eq!(
        (&next["project"], &next["data"]),
        (&json!("~user"), &json!("seen")),
        "{next}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_error_frames_and_harm_no_subscription() {
    let server = Server::start("");
    let (mut ws, _) = connect(&server, &token_with("u", &["*"], None), "?subscribe=keep").await;
    assert_eq!(recv_json(&mut ws).await["type"], "subscribed");
    let long = "x".repeat(129);
    let cases = [
        (json!({"type": "dance", "id": "1"}), "unknown_type"),
        (json!({"type": "subscribe", "id": "2"}), "invalid_frame"),
        (
            json!({"type": "subscribe", "id": "3", "project": long}),
            "invalid_project",
        ),
        (
            json!({"type": "subscribe", "id": "4", "project": "p", "last": 10000}),
            "invalid_frame",
        ),
        (
            json!({"type": "refresh", "id": "5", "token": "garbage"}),
            "invalid_token",
        ),
        (
            json!({"type": "unsubscribe", "id": "6", "project": "never"}),
            "not_subscribed",
        ),
        (
            json!({"type": "subscribe", "id": "7", "project": "keep"}),
            "already_subscribed",
        ),
    ];
    for (frame, code) in cases {
        let error = ask(&mut ws, frame.clone()).await;
        assert_eq!(
            (&error["type"], &error["code"]),
            (&json!("error"), &json!(code)),
            "{frame} → {error}"
        );
        assert_eq!(error["id"], frame["id"], "{error}");
    }
    // At most limits.max_subscriptions (128): the 129th is refused, the others work.
    for i in 0..127 {
        send(
            &mut ws,
            json!({"type": "subscribe", "project": format!("p{i}")}),
        )
        .await;
    }
    for _ in 0..127 {
        assert_eq!(recv_json(&mut ws).await["type"], "subscribed");
    }
    for i in 127..200 {
        let error = ask(
            &mut ws,
            json!({"type": "subscribe", "id": "x", "project": format!("p{i}")}),
        )
        .await;
        assert_eq!(error["code"], "too_many_subscriptions", "{error}");
    }
    api_post(
        &server,
        "/api/projects/keep/messages",
        json!({"data": "still here"}),
    )
    .await;
    let message = recv_json(&mut ws).await;
    assert_eq!(
        (&message["project"], &message["data"]),
        (&json!("keep"), &json!("still here"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_grant_operations_per_project_on_both_endpoints() {
    let server = Server::start("");
    let caps =
        json!({"feed:*": ["subscribe"], "chat:*": ["subscribe", "publish", "presence", "history"]});
    let token = token_with("viewer", &[], Some(caps));
    let (mut ws, _) = connect(&server, &token, "?subscribe=feed:news").await;
    assert_eq!(recv_json(&mut ws).await["project"], "feed:news");
    let refused = ask(
        &mut ws,
        json!({"type": "publish", "id": "1", "project": "feed:news", "data": 1}),
    )
    .await;
    assert_eq!(
        (&refused["code"], &refused["id"], &refused["project"]),
        (&json!("forbidden"), &json!("1"), &json!("feed:news"))
    );
    let refused = ask(
        &mut ws,
        json!({"type": "subscribe", "id": "2", "project": "other"}),
    )
    .await;
    assert_eq!(refused["code"], "forbidden");
    let ack = ask(
        &mut ws,
        json!({"type": "publish", "id": "3", "project": "chat:1", "data": 1}),
    )
    .await;
    assert_eq!(ack["type"], "ack", "{ack}");

    // The handshake refuses a forbidden query subscription, naming it, as plain HTTP.
    let url = format!("{}?subscribe=feed:a,secret", server.http("/ws"));
    let (status, _, body) = http(
        "GET",
        &url,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("forbidden") && body.contains("secret"),
        "{body}"
    );

    // v1 requires `subscribe` on its project and honours `publish` the same way.
    let (status, _, _) = http(
        "GET",
        &server.http("/ws/check/projects/other"),
        &[("authorization", &format!("Bearer {token}"))],
        "",
    )
    .await;
    assert_eq!(status, 403);
    let mut v1 = try_connect(&server.url("feed:news"), Some(&token))
        .await
        .unwrap();
    assert_eq!(recv_json(&mut v1).await["type"], "welcome");
    publish(&mut v1, json!(1)).await;
    let refused = recv_json(&mut v1).await;
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("forbidden")),
        "{refused}"
    );

    // A `caps` claim of the wrong shape is a bad token.
    let bad = token_with("u", &[], Some(json!({"a": "subscribe"})));
    let (status, _, body) = http(
        "GET",
        &server.http("/ws/check"),
        &[("authorization", &format!("Bearer {bad}"))],
        "",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("invalid_token") && body.contains("caps"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_answer_what_the_handshake_would() {
    let server = Server::start("");
    let check = |path: &'static str, token: Option<String>| {
        let server = &server;
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            http("GET", &server.http(path), &headers, "").await
        }
    };
    assert_eq!(check("/ws/check", Some(token("u", &[]))).await.0, 204);
    assert_eq!(
        check("/ws/check/projects/p", Some(token("u", &["p"])))
            .await
            .0,
        204
    );
    let (status, headers, body) = check("/ws/check", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("missing_token"));
    assert!(headers.iter().any(|(k, _)| k == "www-authenticate"));
    assert_eq!(check("/ws/check", Some("a.b.c".to_owned())).await.0, 401);
    assert_eq!(
        check("/ws/check/projects/p", Some(token("u", &["q"])))
            .await
            .0,
        403
    );

    // A page of another origin may read the answer (CORS), after its preflight.
    let origin = ("origin", "https://app.example.com");
    let header = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (status, headers, _) = http("OPTIONS", &server.http("/ws/check"), &[origin], "").await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "access-control-allow-headers").as_deref(),
        Some("authorization")
    );
    let auth = format!("Bearer {}", token("u", &["q"]));
    let (status, headers, _) = http(
        "GET",
        &server.http("/ws/check/projects/p"),
        &[origin, ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        header(&headers, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    // Not on the handshake itself, which a browser never reads.
    let (_, headers, _) = http(
        "GET",
        &server.http("/ws/projects/p"),
        &[origin, ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_subscriptions_recover_what_was_missed() {
    let server = Server::start("");
    let token = token_with("u", &["a"], None);
    let (mut ws, _) = connect(&server, &token, "?subscribe=a").await;
    let subscribed = recv_json(&mut ws).await;
    let epoch = subscribed["epoch"].as_str().unwrap().to_owned();
    api_post(&server, "/api/projects/a/messages", json!({"data": 1})).await;
    assert_eq!(recv_json(&mut ws).await["offset"], 1);
    drop(ws);
    for i in 2..=4 {
        api_post(&server, "/api/projects/a/messages", json!({"data": i})).await;
    }
    let (mut ws, _) = connect(
        &server,
        &token,
        &format!("?subscribe=a&since.a=1&epoch.a={epoch}"),
    )
    .await;
    let subscribed = recv_json(&mut ws).await;
    assert_eq!(
        (
            &subscribed["recovered"],
            &subscribed["missed"],
            &subscribed["offset"]
        ),
        (&json!(true), &json!(3), &json!(4)),
        "{subscribed}"
    );
    for offset in 2..=4 {
        assert_eq!(recv_json(&mut ws).await["offset"], offset);
    }
    // Another epoch: recovered false, with the reason.
    let (mut ws, _) = connect(&server, &token, "?subscribe=a&since.a=1&epoch.a=other").await;
    let lost = recv_json(&mut ws).await;
    assert_eq!(
        (&lost["recovered"], &lost["lost_reason"], &lost["missed"]),
        (&json!(false), &json!("epoch_changed"), &json!(0))
    );
}

/// A server whose `[auth]` section has `auth_keys` besides the test secret and keys.
fn start_with_auth(auth_keys: &str) -> Server {
    Server::start_in(
        TempDir::new(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n[auth]\nhs256_secrets = [\"{SECRET}\"]\napi_keys = [\"{API_KEY}\"]\nadmin_api_keys = [\"{API_KEY}\"]\n{auth_keys}\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_moves_the_deadline_and_revokes_what_the_new_token_does_not_allow() {
    let server = start_with_auth("leeway = \"0s\"");
    let short = {
        let claims = Claims::new("u", ["a", "b"], Duration::from_secs(3));
        JwtSigner::hs256(SECRET).sign(&claims).unwrap()
    };
    // Both open at once, while the short token is valid: one will refresh, one will not.
    let (mut unrefreshed, _) = connect(&server, &short, "").await;
    let (mut ws, _) = connect(&server, &short, "?subscribe=a,b").await;
    for _ in 0..2 {
        assert_eq!(recv_json(&mut ws).await["type"], "subscribed");
    }
    let narrower = token_with("u", &["b"], None);
    send(
        &mut ws,
        json!({"type": "refresh", "id": "r", "token": narrower}),
    )
    .await;
    let revoked = recv_json(&mut ws).await;
    assert_eq!(
        revoked,
        json!({"type": "unsubscribed", "project": "a", "reason": "forbidden"})
    );
    let refreshed = recv_json(&mut ws).await;
    assert_eq!(
        (&refreshed["type"], &refreshed["id"]),
        (&json!("refreshed"), &json!("r"))
    );
    assert!(refreshed["exp"].as_u64().unwrap() > 1_000_000_000);
    let other = ask(
        &mut ws,
        json!({"type": "refresh", "id": "o", "token": token_with("mallory", &["*"], None)}),
    )
    .await;
    assert_eq!(other["code"], "invalid_token");
    // Without a refresh the first token's expiry closes the connection with 4001 ...
    let (code, _, _) = recv_close(&mut unrefreshed).await;
    assert_eq!(code, 4001);
    // ... the refreshed one stays open past it.
    api_post(&server, "/api/projects/b/messages", json!({"data": "b"})).await;
    assert_eq!(recv_json(&mut ws).await["project"], "b");
    assert_eq!(ask(&mut ws, json!({"type": "ping"})).await["type"], "pong");
}

/// A node on `redis`, as `redis.rs` starts them.
fn redis_node(redis: &crate::redis_server::Redis) -> Server {
    crate::redis_server::node_on(&redis.url(), "", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_subscriptions_and_the_personal_stream_work_across_nodes() {
    let redis = crate::redis_server::Redis::start();
    let (a, b) = (redis_node(&redis), redis_node(&redis));
    let user = "alice@example.com";
    let token = token_with(user, &["p"], None);
    let (mut on_a, _) = connect(&a, &token, "?subscribe=p,~user").await;
    let mut epochs = Vec::new();
    for _ in 0..2 {
        let subscribed = recv_json(&mut on_a).await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        epochs.push(subscribed["epoch"].as_str().unwrap().to_owned());
    }
    // Published on b: the project over HTTP and over v2, the user's stream by its `sub`.
    assert_eq!(
        api_post(&b, "/api/projects/p/messages", json!({"data": 1}))
            .await
            .0,
        202
    );
    let (mut on_b, _) = connect(&b, &token_with("bob", &["p"], None), "").await;
    let ack = ask(
        &mut on_b,
        json!({"type": "publish", "id": "x", "project": "p", "data": 2}),
    )
    .await;
    assert_eq!(
        (&ack["type"], &ack["offset"]),
        (&json!("ack"), &json!(2)),
        "{ack}"
    );
    let (status, body) = api_post(
        &b,
        "/api/users/alice%40example.com/messages",
        json!({"data": "mine"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let frame = recv_json(&mut on_a).await;
        if frame["type"] == "message" {
            seen.push((frame["project"].clone(), frame["offset"].clone()));
        }
    }
    assert_eq!(
        seen,
        [
            (json!("p"), json!(1)),
            (json!("p"), json!(2)),
            (json!("~user"), json!(1))
        ]
    );

    // Recovery across nodes: what was published while away is replayed on the other node.
    drop(on_a);
    api_post(&a, "/api/projects/p/messages", json!({"data": 3})).await;
    api_post(
        &a,
        "/api/users/alice%40example.com/messages",
        json!({"data": "again"}),
    )
    .await;
    let query = format!(
        "?subscribe=p,~user&since.p=2&epoch.p={}&since.~user=1&epoch.~user={}",
        epochs[0], epochs[1]
    );
    let (mut back, _) = connect(&b, &token, &query).await;
    let mut replayed = Vec::new();
    while replayed.len() < 4 {
        let frame = recv_json(&mut back).await;
        match frame["type"].as_str() {
            Some("subscribed") => {
                assert_eq!(
                    (&frame["recovered"], &frame["missed"]),
                    (&json!(true), &json!(1)),
                    "{frame}"
                );
                replayed.push((frame["project"].clone(), json!("subscribed")));
            }
            Some("message") => replayed.push((frame["project"].clone(), frame["offset"].clone())),
            _ => {}
        }
    }
    assert_eq!(
        replayed,
        [
            (json!("p"), json!("subscribed")),
            (json!("p"), json!(3)),
            (json!("~user"), json!("subscribed")),
            (json!("~user"), json!(2)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_closing_a_project_ends_that_subscription_only() {
    let server = Server::start("");
    let (mut ws, _) = connect(
        &server,
        &token_with("u", &["a", "b"], None),
        "?subscribe=a,b",
    )
    .await;
    for _ in 0..2 {
        assert_eq!(recv_json(&mut ws).await["type"], "subscribed");
    }
    let (status, body) = api_post(&server, "/api/admin/projects/a/close", json!({})).await;
    assert_eq!((status, &body["closed"]), (200, &json!(1)), "{body}");
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"type": "unsubscribed", "project": "a", "reason": "closed"})
    );
    api_post(&server, "/api/projects/a/messages", json!({"data": "gone"})).await;
    api_post(&server, "/api/projects/b/messages", json!({"data": "kept"})).await;
    let next = recv_json(&mut ws).await;
    assert_eq!(
        (&next["project"], &next["data"]),
        (&json!("b"), &json!("kept")),
        "{next}"
    );
    // The personal-stream route refuses a segment it cannot decode, like the admin routes.
    let (status, body) = api_post(&server, "/api/users/a%zz/messages", json!({"data": 1})).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_path")),
        "{body}"
    );
}

/// One client subscribing to fresh project names and leaving them, as fast as it can, leaves
/// a bounded number of the memory broker's streams behind (each recovery creates one), long
/// before the periodic sweep, and the other clients keep their messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_fresh_projects_keeps_the_broker_bounded() {
    let server = Server::start("");
    let token = token_with("u", &["*"], None);
    let (mut bystander, _) = connect(&server, &token, "?subscribe=calm").await;
    assert_eq!(recv_json(&mut bystander).await["type"], "subscribed");
    let (mut churner, _) = connect(&server, &token, "").await;
    const FRESH: usize = 3000;
    let (mut subscribed, mut unsubscribed) = (0, 0);
    for round in 0..FRESH / 100 {
        // 100 pairs in flight, then their answers: a client's requests are answered in order.
        for i in round * 100..(round + 1) * 100 {
            let project = format!("fresh-{i}");
            let id = i.to_string();
            send(
                &mut churner,
                json!({"type": "subscribe", "id": id, "project": project}),
            )
            .await;
            send(
                &mut churner,
                json!({"type": "unsubscribe", "id": id, "project": project}),
            )
            .await;
        }
        for _ in 0..200 {
            let answer = recv_json(&mut churner).await;
            match answer["type"].as_str() {
                Some("subscribed") => subscribed += 1,
                Some("unsubscribed") => unsubscribed += 1,
                _ => panic!("unexpected answer {answer}"),
            }
        }
    }
    assert_eq!((subscribed, unsubscribed), (FRESH, FRESH));
    let (status, _, body) = http("GET", &server.http("/metrics"), &[], "").await;
    assert_eq!(status, 200);
    let streams: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("wshub_history_streams "))
        .unwrap_or_else(|| panic!("no wshub_history_streams in\n{body}"))
        .parse()
        .unwrap();
    // The reclaim waits for 1 024 creations (ws-transport's RECLAIM_AFTER_CREATED).
    assert!(
        streams <= 1024 + 2,
        "{streams} streams after {FRESH} fresh projects"
    );
    let (status, _) = api_post(&server, "/api/projects/calm/messages", json!({"data": 1})).await;
    assert_eq!(status, 202);
    let message = recv_json(&mut bystander).await;
    assert_eq!(
        (message["type"].as_str(), message["project"].as_str()),
        (Some("message"), Some("calm"))
    );
}
