//! The life of a connection: 101, fan-out within a project, closes from both sides,
//! oversized messages, dead peers.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::harness::*;

#[tokio::test]
async fn messages_reach_every_member_of_the_project_and_nobody_else() {
    let server = Server::start("");
    let (mut a1, welcome) = join(&server, "alpha", "u1").await;
    assert_eq!(welcome["user"], "u1");
    assert_eq!(welcome["project"], "alpha");
    assert_eq!(welcome["ping_interval_ms"], 25_000);
    let (mut a2, _) = join(&server, "alpha", "u2").await;
    let (mut b1, _) = join(&server, "beta", "u3").await;

    publish(&mut a1, json!({"n": 1})).await;
    for ws in [&mut a1, &mut a2] {
        let msg = recv_message(ws).await;
        assert_eq!(msg["type"], "message");
        assert_eq!(msg["from"], "u1");
        assert_eq!(msg["data"], json!({"n": 1}));
        assert!(msg["ts"].as_u64().unwrap() > 1_700_000_000_000);
    }
    // beta's first frame after its welcome is its own publish: nothing of alpha leaked in.
    publish(&mut b1, json!("marker")).await;
    let msg = recv_message(&mut b1).await;
    assert_eq!(msg["data"], "marker");
    assert_eq!(msg["from"], "u3");
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame_and_logs_no_warning() {
    let server = Server::start("");
    let (mut ws, welcome) = join(&server, "p", "u1").await;
    let conn = welcome["conn"].as_u64().unwrap();
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let (code, reason, _) = recv_close(&mut ws).await;
    assert_eq!(
        (code, reason.as_str()),
        (1000, "bye"),
        "the server echoes the client's close"
    );
    // After the handshake the server closes TCP: the stream ends without an error.
    let end = tokio::time::timeout(STEP, ws.next()).await.unwrap();
    assert!(
        end.is_none() || matches!(end, Some(Ok(Message::Close(_)))),
        "{end:?}"
    );
    server
        .wait_for_log("the close", |l| {
            l.contains("connection closed") && l.contains(&format!(r#""conn":{conn}"#))
        })
        .await;
    assert_eq!(server.warnings(), Vec::<String>::new());
}

#[tokio::test]
async fn closing_a_project_sends_1000_with_a_reason() {
    let server = Server::start("");
    let (mut a, _) = join(&server, "doomed", "u1").await;
    let (mut b, _) = join(&server, "doomed", "u2").await;
    let (mut other, _) = join(&server, "kept", "u3").await;
    let url = server.http("/api/admin/projects/doomed/close");

    let (status, _, body) = http("POST", &url, &[], "").await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = http(
        "POST",
        &url,
        &[("authorization", &format!("Bearer {API_KEY}"))],
        "",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"closed":2}"#));

    for ws in [&mut a, &mut b] {
        let (code, reason, _) = recv_close(ws).await;
        assert_eq!((code, reason.as_str()), (1000, "project closed"));
    }
    publish(&mut other, json!(1)).await;
    assert_eq!(recv_message(&mut other).await["data"], 1);
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_harms_nobody_else() {
    let server = Server::start("");
    let (mut big, _) = join(&server, "p", "big").await;
    let (mut ok, _) = join(&server, "p", "ok").await;
    let payload = "x".repeat(70 * 1024);
    big.send(Message::text(
        json!({"type": "publish", "data": payload}).to_string(),
    ))
    .await
    .unwrap();
    let (code, reason, texts) = recv_close(&mut big).await;
    assert_eq!((code, reason.as_str()), (1009, "message too big"));
    assert!(
        texts.iter().all(|t| t["type"] != "message"),
        "nothing of the oversized message went out: {texts:?}"
    );

    publish(&mut ok, json!("still here")).await;
    assert_eq!(recv_message(&mut ok).await["data"], "still here");
    let (mut late, _) = join(&server, "p", "late").await;
    publish(&mut ok, json!("and again")).await;
    assert_eq!(recv_message(&mut late).await["data"], "and again");
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_ended_in_time() {
    let server = Server::start("[timeouts]\nping_interval = \"1s\"\npong_timeout = \"1s\"\n");
    let (ws, _) = join(&server, "p", "mute").await;
    let welcomed = Instant::now();
    // Read the raw socket from now on, so nothing answers the server's pings.
    let MaybeTlsStream::Plain(mut tcp) = ws.into_inner() else {
        unreachable!("plain ws://")
    };
    let mut raw = Vec::new();
    let mut buf = [0u8; 512];
    let close = loop {
        let n = tokio::time::timeout(STEP, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection ended before a close frame: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        if let Some(close) = find_close_frame(&raw) {
            break close;
        }
    };
    let elapsed = welcomed.elapsed();
    assert_eq!(close, (1001, "ping timeout".to_owned()));
    assert!(raw.starts_with(&[0x89, 0x00]), "a ping came first: {raw:?}");
    // ping_interval + pong_timeout = 2 s, plus scheduling slack.
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    // And the server hangs up.
    let n = tokio::time::timeout(STEP, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the socket is closed after the close frame");
}

/// Finds an unmasked server close frame in raw bytes; returns its code and reason.
fn find_close_frame(mut raw: &[u8]) -> Option<(u16, String)> {
    while raw.len() >= 2 {
        let opcode = raw[0] & 0x0f;
        let len = (raw[1] & 0x7f) as usize;
        let (header, len) = match len {
            126 if raw.len() >= 4 => (4, u16::from_be_bytes([raw[2], raw[3]]) as usize),
            126 | 127 => return None,
            n => (2, n),
        };
        if raw.len() < header + len {
            return None;
        }
        let payload = &raw[header..header + len];
        if opcode == 0x8 {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
        }
        raw = &raw[header + len..];
    }
    None
}
