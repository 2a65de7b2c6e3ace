//! Refusals before the upgrade: plain HTTP with a JSON body, never a 101.

use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Error as WsError;
use ws_auth::{Claims, JwtSigner};

use crate::harness::*;

/// Attempts a WebSocket handshake; returns the refusal's status and JSON body.
async fn refused(url: &str, token: Option<&str>) -> (u16, Value) {
    match try_connect(url, token).await {
        Ok(_) => panic!("{url} was upgraded"),
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let body: Value = serde_json::from_slice(&body).expect("a JSON body");
            (response.status().as_u16(), body)
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

#[tokio::test]
async fn bad_handshakes_get_their_documented_answers() {
    let server = Server::start("");
    let url = server.url("p");
    let expired = JwtSigner::hs256(SECRET)
        .sign(&{
            let mut c = Claims::new("u", ["p"], Duration::from_secs(1));
            c.exp -= 3600;
            c
        })
        .unwrap();
    let wrong_key = JwtSigner::hs256("another-secret-another-secret-00")
        .sign(&Claims::new("u", ["p"], Duration::from_secs(60)))
        .unwrap();
    let cases: [(&str, Option<String>, u16, &str); 5] = [
        ("no token", None, 401, "missing_token"),
        (
            "garbage",
            Some("not.a.jwt".to_owned()),
            401,
            "invalid_token",
        ),
        ("bad signature", Some(wrong_key), 401, "invalid_token"),
        ("expired", Some(expired), 401, "invalid_token"),
        ("other project", Some(token("u", &["q"])), 403, "forbidden"),
    ];
    for (name, token, status, code) in cases {
        let (got_status, body) = refused(&url, token.as_deref()).await;
        assert_eq!(
            (got_status, body["error"].as_str().unwrap()),
            (status, code),
            "{name}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: {body}"
        );
        if let Some(token) = &token {
            assert!(
                !body.to_string().contains(token.as_str()),
                "{name}: the token leaked into the body"
            );
        }
    }
}

#[tokio::test]
async fn non_websocket_requests_and_bad_paths_are_refused_before_auth() {
    let server = Server::start("");
    let (status, headers, body) =
        http("GET", &server.url("p").replace("ws://", "http://"), &[], "").await;
    assert_eq!(status, 426, "{body}");
    assert!(headers.contains(&("sec-websocket-version".into(), "13".into())));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "upgrade_required"
    );

    let (status, _) = refused(&server.url("bad%20id"), Some(&token("u", &["*"]))).await;
    assert_eq!(status, 404);
    let (status, _, _) = http("GET", &server.http("/readyz"), &[], "").await;
    assert_eq!(status, 200);
    let (status, _, body) = http("GET", &server.http("/healthz"), &[], "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
}

#[tokio::test]
async fn a_wildcard_token_reaches_any_project() {
    let server = Server::start("");
    let mut ws = try_connect(&server.url("anything.at:all"), Some(&token("u", &["*"])))
        .await
        .unwrap();
    assert_eq!(recv_json(&mut ws).await["project"], "anything.at:all");
}
