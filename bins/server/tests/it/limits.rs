//! Limits answered with close frames: 1013 for connection limits, 4008 for slow consumers.

use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::harness::*;

#[tokio::test]
async fn the_global_limit_answers_101_then_1013() {
    let server = Server::start("[limits]\nmax_connections = 3\n");
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(join(&server, "p", &format!("u{i}")).await.0);
    }
    let mut extra = try_connect(&server.url("p"), Some(&token("u9", &["p"])))
        .await
        .expect("101 first");
    let (code, reason, texts) = recv_close(&mut extra).await;
    assert_eq!((code, reason.as_str()), (1013, "server overloaded"));
    assert!(
        texts.is_empty(),
        "no welcome for a refused connection: {texts:?}"
    );

    // A slot frees when a connection ends.
    let mut gone = held.pop().unwrap();
    gone.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let _ = recv_close(&mut gone).await;
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let mut ws = try_connect(&server.url("p"), Some(&token("u9", &["p"])))
            .await
            .unwrap();
        let first = tokio::time::timeout(STEP, futures_util::StreamExt::next(&mut ws))
            .await
            .unwrap();
        if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = first {
            assert!(t.contains("welcome"));
            break;
        }
        // The server may not have unregistered the closed one yet.
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
    }
}

#[tokio::test]
async fn the_per_user_limit_answers_1013_for_that_user_only() {
    let server = Server::start("[limits]\nmax_connections_per_user = 2\n");
    let _a = join(&server, "p", "alice").await;
    let _b = join(&server, "q", "alice").await;
    let mut third = try_connect(&server.url("p"), Some(&token("alice", &["p"])))
        .await
        .unwrap();
    let (code, reason, _) = recv_close(&mut third).await;
    assert_eq!(
        (code, reason.as_str()),
        (1013, "too many connections for user")
    );
    let _bob = join(&server, "p", "bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_4008_and_the_others_get_everything() {
    let server = Server::start(
        "[limits]\nsend_queue_frames = 1024\nsend_queue_bytes = 1048576\nclient_publish_rate = 0\n",
    );
    // A small receive buffer so the slow client's kernel absorbs little.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let mut request = server.url("p").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token("slow", &["p"]))).unwrap(),
    );
    let (mut slow, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    assert_eq!(recv_json(&mut slow).await["type"], "welcome");

    // The publisher keeps at most WINDOW messages in flight (it reads its own copies as it
    // goes); the reader drains concurrently. Only the slow client falls behind.
    let (mut publisher, _) = join(&server, "p", "publisher").await;
    let (mut reader, _) = join(&server, "p", "reader").await;
    // Enough to fill the server's socket send buffer (it may grow to tcp_wmem's maximum),
    // then the 1 MiB queue, with room to spare.
    let wmem_max: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().last()?.parse().ok())
        .unwrap_or(4 << 20);
    const SIZE: u64 = 2000;
    const WINDOW: u64 = 100;
    let n = (wmem_max + (2 << 20)) / SIZE;
    let n = n.div_ceil(WINDOW) * WINDOW;
    let reading = tokio::spawn(async move {
        for i in 0..n {
            assert_eq!(
                recv_message(&mut reader).await["data"]["i"],
                i,
                "in order, none lost"
            );
        }
    });
    let filler = "f".repeat(SIZE as usize - 50);
    for start in (0..n).step_by(WINDOW as usize) {
        for i in start..start + WINDOW {
            publish(&mut publisher, json!({"i": i, "filler": filler})).await;
        }
        for i in start..start + WINDOW {
            assert_eq!(
                recv_message(&mut publisher).await["data"]["i"],
                i,
                "in order, none lost"
            );
        }
    }
    reading.await.unwrap();

    // Now the slow client reads: what the kernel held, then the verdict.
    let (code, reason, texts) = recv_close(&mut slow).await;
    assert_eq!((code, reason.as_str()), (4008, "slow consumer"));
    assert!(
        (texts.len() as u64) < n,
        "it was closed before receiving everything"
    );
}
