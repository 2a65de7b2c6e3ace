//! Hardening of authentication and the admin API: odd time claims, revoking any `sub`,
//! `X-Forwarded-For` with bytes that are not ASCII, and the admin API's own keys.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::harness::{
    API_KEY, SECRET, STEP, Server, TempDir, b64url, http, recv_close, recv_json, token, try_connect,
};

/// Signs `payload`, a claims object written by hand (an `exp` of `-1` or `1e400`, which
/// `ws_auth::Claims` cannot hold), with the test secret.
fn sign_raw(payload: &str) -> String {
    let message = format!(
        "{}.{}",
        b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64url(payload.as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{sig}")
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

// === item 1: time claims at the edges ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_time_claims_are_accepted_or_refused_never_a_dropped_handshake() {
    let server = Server::start("");
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let (u64_max, i64_max) = (u64::MAX.to_string(), i64::MAX.to_string());
    let i64_max_1 = (i64::MAX as u64 + 1).to_string();
    let later = later.to_string();
    // (exp, extra claims, accepted)
    let cases: [(&str, &str, bool); 12] = [
        (&later, "", true),
        (&u64_max, "", true),
        (&i64_max, "", true),
        (&i64_max_1, "", true),
        (&u64_max, r#","iat":18446744073709551615"#, true),
        ("0", "", false),
        ("1", "", false),
        ("-1", "", false),
        ("1e20", "", false),
        ("1e400", "", false),
        (&later, r#","nbf":18446744073709551615"#, false),
        (&later, r#","iat":-1"#, false),
    ];
    for (exp, extra, accepted) in cases {
        let payload = format!(r#"{{"sub":"u","projects":["p"],"exp":{exp}{extra}}}"#);
        let token = sign_raw(&payload);
        match try_connect(&server.url("p"), Some(&token)).await {
            Ok(mut ws) => {
                assert!(accepted, "{payload} was accepted");
                let welcome = recv_json(&mut ws).await;
                assert_eq!(welcome["type"], "welcome", "{payload}: {welcome}");
                // The connection lives on: no deadline, not a deadline in the past.
                ws.send(Message::Ping(b"alive?".to_vec().into()))
                    .await
                    .unwrap();
                loop {
                    let msg = tokio::time::timeout(STEP, ws.next())
                        .await
                        .expect("no pong in time")
                        .expect("stream ended")
                        .expect("read error");
                    match msg {
                        Message::Pong(_) => break,
                        Message::Close(frame) => panic!("{payload}: closed: {frame:?}"),
                        _ => {}
                    }
                }
            }
            Err(WsError::Http(response)) => {
                assert!(!accepted, "{payload} was refused: {response:?}");
                assert_eq!(response.status(), 401, "{payload}");
                let body =
                    String::from_utf8_lossy(response.body().as_deref().unwrap_or(b"")).into_owned();
                assert!(
                    body.contains(r#""error":"invalid_token""#),
                    "{payload}: {body}"
                );
            }
            Err(other) => panic!("{payload}: the handshake failed without an answer: {other}"),
        }
    }
    assert!(
        !server.logs().iter().any(|l| l.contains("panicked")),
        "{:#?}",
        server.logs()
    );
}

// === item 2: revoking any `sub` ===

async fn disconnect(server: &Server, path: &str, body: &str) -> (u16, serde_json::Value) {
    let auth = bearer(API_KEY);
    let (status, _, body) = http(
        "POST",
        &server.http(path),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    (status, serde_json::from_str(&body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revokes_every_sub_by_path_or_body() {
    let server = Server::start("");
    // (sub, how the request names it: a path segment, or None for the body form)
    let cases = [
        ("auth0|5f7c", Some("auth0%7C5f7c")),
        ("auth0|5f7c", None),
        ("org/42", Some("org%2F42")),
        ("org/42", Some("org%2f42")),
        ("org/42", None),
        ("José", Some("Jos%C3%A9")),
        ("José", None),
        ("a b", Some("a%20b")),
        ("a b", None),
        ("plain", Some("plain")),
    ];
    // A bystander whose `sub` is literally what the others are encoded as: never decoded
    // twice, it stays connected through all of the revocations below.
    let mut bystander = try_connect(&server.url("p"), Some(&token("org%2F42", &["p"])))
        .await
        .unwrap();
    assert_eq!(recv_json(&mut bystander).await["type"], "welcome");
    for (sub, segment) in cases {
        let mut ws = try_connect(&server.url("p"), Some(&token(sub, &["p"])))
            .await
            .unwrap();
        assert_eq!(recv_json(&mut ws).await["type"], "welcome");
        let (status, json) = match segment {
            Some(segment) => {
                let path = format!("/api/admin/users/{segment}/disconnect");
                disconnect(&server, &path, "").await
            }
            None => {
                let body = serde_json::json!({ "user": sub }).to_string();
                disconnect(&server, "/api/admin/users/disconnect", &body).await
            }
        };
        assert_eq!(
            (status, &json),
            (200, &serde_json::json!({"closed": 1})),
            "{sub} {segment:?}"
        );
        let (code, reason, _) = recv_close(&mut ws).await;
        assert_eq!(code, 4003, "{sub} {segment:?}: {reason}");
    }

    // The bystander was still connected: the body form names it as it is.
    let body = serde_json::json!({ "user": "org%2F42" }).to_string();
    let (status, json) = disconnect(&server, "/api/admin/users/disconnect", &body).await;
    assert_eq!((status, json["closed"].as_u64()), (200, Some(1)));
    assert_eq!(recv_close(&mut bystander).await.0, 4003);

    // Nobody left: 0 closed, still 200.
    let (status, json) = disconnect(&server, "/api/admin/users/nobody/disconnect", "").await;
    assert_eq!((status, json["closed"].as_u64()), (200, Some(0)));

    // Strict decoding: a bad escape or bytes that are not UTF-8 are refused, not guessed at.
    for segment in ["%", "%2", "%ZZ", "a%2Gb", "%FF", "%C3", "%C3%28"] {
        let path = format!("/api/admin/users/{segment}/disconnect");
        let (status, json) = disconnect(&server, &path, "").await;
        assert_eq!(status, 400, "{segment}: {json}");
        assert_eq!(json["error"], "invalid_path", "{segment}: {json}");
        assert!(json["message"].is_string(), "{segment}: {json}");
    }
    // The body form: JSON with a string `user`, nothing else.
    for body in [
        "",
        "not json",
        "{}",
        r#"{"user":7}"#,
        r#"{"user":"a","extra":1}"#,
        "[]",
    ] {
        let (status, json) = disconnect(&server, "/api/admin/users/disconnect", body).await;
        assert_eq!(status, 400, "{body}: {json}");
        assert_eq!(json["error"], "invalid_body", "{body}: {json}");
    }
}

// === item 3: X-Forwarded-For that is not ASCII ===

/// A WebSocket handshake from `from` (a loopback address) whose `X-Forwarded-For` is `xff`,
/// raw bytes; returns the status.
async fn handshake_via(addr: SocketAddr, from: IpAddr, xff: Option<&[u8]>, token: &str) -> u16 {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut request = format!(
        "GET /ws/projects/p HTTP/1.1\r\nhost: {addr}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         authorization: Bearer {token}\r\n"
    )
    .into_bytes();
    if let Some(xff) = xff {
        request.extend_from_slice(b"x-forwarded-for: ");
        request.extend_from_slice(xff);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(STEP, stream.read(&mut buf))
            .await
            .expect("no answer to the handshake")
            .unwrap();
        assert!(n > 0, "closed before the answer: {head:?}");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_forwarded_for_counts_against_the_forwarded_client_not_the_proxy() {
    let server =
        Server::start("trusted_proxies = [\"127.0.0.1\"]\n\n[limits]\nhandshake_rate_per_ip = 2");
    let good = token("u", &["p"]);
    let proxy = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let send = async |xff: Option<&[u8]>| handshake_via(server.addr, proxy, xff, &good).await;

    // A client sends a header with a byte that is not ASCII; the proxy appends the address
    // it saw. That client spends its own bucket...
    assert_eq!(send(Some(b"\xff, 203.0.113.7")).await, 101);
    assert_eq!(send(Some(b"\xff, 203.0.113.7")).await, 101);
    assert_eq!(send(Some(b"\xff, 203.0.113.7")).await, 429);
    // ...and nobody else's: another client behind the proxy, one with the same odd header,
    // and the proxy's own requests (no header) still get in.
    assert_eq!(send(Some(b"203.0.113.8")).await, 101);
    assert_eq!(send(Some("caf\u{e9}, 203.0.113.9".as_bytes())).await, 101);
    assert_eq!(send(None).await, 101);
}

// === item 4: the admin API's own keys ===

const ADMIN_KEY: &str = "admin-key-0123456789";
/// `sha256:` of "hashed-admin-key-0123456789".
const HASHED_ADMIN_KEY: &str = "hashed-admin-key-0123456789";

/// A server whose `[auth]` has the test secret and API key, and `admin` (TOML) as its
/// `admin_api_keys` line (`""`: none, the fallback).
fn start_with_admin_keys(admin: &str) -> Server {
    Server::start_in(
        TempDir::new(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n\
             [auth]\nhs256_secrets = [\"{SECRET}\"]\napi_keys = [\"{API_KEY}\"]\n{admin}\n"
        ),
    )
}

async fn status_with(server: &Server, method: &str, path: &str, key: &str) -> u16 {
    let auth = bearer(key);
    http(method, &server.http(path), &[("authorization", &auth)], "")
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_take_only_admin_api_keys() {
    let server = start_with_admin_keys(&format!(
        "admin_api_keys = [\"{ADMIN_KEY}\", \"sha256:46079230852bd2ac637a70d73fc0b7ffea1ad014cc0f1a3ca2be0a586dd16580\"]"
    ));
    for key in [ADMIN_KEY, HASHED_ADMIN_KEY] {
        assert_eq!(
            status_with(&server, "GET", "/api/admin/stats", key).await,
            200,
            "{key}"
        );
        // Admin keys are not keys of the HTTP API.
        assert_eq!(
            status_with(&server, "GET", "/api/projects/p/presence", key).await,
            401,
            "{key}"
        );
    }
    // The HTTP API's key no longer opens the admin routes, and still opens its own.
    assert_eq!(
        status_with(&server, "GET", "/api/admin/stats", API_KEY).await,
        401
    );
    assert_eq!(
        status_with(&server, "POST", "/api/admin/users/u/disconnect", API_KEY).await,
        401
    );
    assert_eq!(
        status_with(&server, "GET", "/api/projects/p/presence", API_KEY).await,
        200
    );
    assert!(
        !server
            .logs()
            .iter()
            .any(|l| l.contains("admin_api_keys") && l.contains(r#""level":"WARN""#)),
        "no fallback warning when admin keys are set: {:#?}",
        server.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_keys_the_api_keys_open_the_admin_routes_and_a_warning_says_so() {
    let server = start_with_admin_keys("");
    assert_eq!(
        status_with(&server, "GET", "/api/admin/stats", API_KEY).await,
        200
    );
    server
        .wait_for_log("the admin key fallback warning", |line| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                return false;
            };
            v["level"] == "WARN"
                && v.to_string().contains("auth.admin_api_keys")
                && v.to_string().contains("auth.api_keys")
        })
        .await;
}
