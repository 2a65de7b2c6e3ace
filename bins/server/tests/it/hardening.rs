//! One client must never take a node down: request floods, answers that pile up behind a
//! socket that does not read, long replays on slow links, and what a failing broker says.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::harness::*;

/// The growth of the server's RSS a flooder may cause (the issue's bound).
const ALLOWED_GROWTH_KIB: u64 = 64 << 10;

/// A client whose socket has a 4 KiB receive buffer: its kernel absorbs little, so what the
/// server queues for it stays in the server.
async fn connect_small_buffer(server: &Server, project: &str, user: &str) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let mut request = server.url(project).into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(user, &[project]))).unwrap(),
    );
    let (mut ws, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    assert_eq!(recv_json(&mut ws).await["type"], "welcome");
    ws
}

/// `n` members of `project` with 100-character user ids, so a presence answer there is
/// tens of KiB; each reads its welcome, then nothing.
async fn crowd(server: &Server, project: &str, n: usize) -> Vec<Ws> {
    futures_util::stream::iter(0..n)
        .map(|i| async move {
            let user = format!("{i:04}-{}", "u".repeat(95));
            join(server, project, &user).await.0
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Sends presence requests as fast as the socket takes them, for `limit` or until the
/// server stops reading or hangs up, counting them in `sent`.
async fn flood_presence(
    sink: &mut futures_util::stream::SplitSink<Ws, Message>,
    limit: Duration,
    sent: &mut u64,
) {
    let started = Instant::now();
    while started.elapsed() < limit {
        let frame = Message::text(r#"{"type":"presence"}"#);
        match tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await {
            Ok(Ok(())) => *sent += 1,
            // The server closed it (the reaction asked for), or stopped reading.
            Ok(Err(_)) | Err(_) => break,
        }
    }
}

/// The frames a client reads until its close frame: (texts, close code and reason).
async fn read_to_close(
    stream: &mut futures_util::stream::SplitStream<Ws>,
) -> (Vec<Value>, Option<(u16, String)>) {
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(STEP, stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => texts.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(Some(CloseFrame { code, reason }))))) => {
                return (texts, Some((code.into(), reason.to_string())));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => return (texts, None),
        }
    }
}

/// The attack as reported: one client floods presence requests in a project with many
/// users, on a socket that reads little. Before the request budget, every request queued
/// a copy of the user list, without the send-queue check: 131 MB to 3 GB in 12 s.
/// Now the burst is answered, then refused with `rate_limited`, then closed with 1008;
/// the server's RSS stays within 64 MiB and the project's members keep their messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_flood_is_closed_and_the_node_stays_small() {
    let server = Server::start("");
    let project = "crowded";
    let _crowd = crowd(&server, project, 300).await;
    let (mut observer, _) = join(&server, project, "observer").await;

    let flooder = connect_small_buffer(&server, project, "flooder").await;
    let before = server.rss_kib();
    let (mut sink, mut stream) = flooder.split();
    // It reads what it is sent (else the close frame would be lost to the TCP reset that
    // ends a connection whose peer never stops sending), and floods until it is closed.
    let mut reading = tokio::spawn(async move { read_to_close(&mut stream).await });
    let mut sent = 0;
    let (texts, close) = tokio::select! {
        () = flood_presence(&mut sink, Duration::from_secs(10), &mut sent) => reading.await,
        read = &mut reading => read,
    }
    .unwrap();
    let after = server.rss_kib();
    eprintln!("presence flood: {sent} requests; server RSS {before} KiB -> {after} KiB");
    assert!(
        after.saturating_sub(before) < ALLOWED_GROWTH_KIB,
        "{sent} presence requests grew the server from {before} KiB to {after} KiB"
    );
    let answers = texts.iter().filter(|t| t["event"] == "sync").count();
    let refused = texts
        .iter()
        .filter(|t| t["type"] == "error" && t["code"] == "rate_limited")
        .count();
    eprintln!("presence flood: {answers} answers, {refused} refusals, then {close:?}");
    let (code, reason) = close.expect("a close frame, not a dropped connection");
    assert!(
        (code, reason.as_str()) == (1008, "request rate exceeded repeatedly") || code == 4008,
        "closed with {code} {reason:?}"
    );
    assert!(answers <= 40, "{answers} answers: more than the burst");
    assert!(refused <= 3, "{refused} refusals before the close");

    // Nobody else noticed: a member still gets a message and an answer of its own.
    let (status, _, body) = http(
        "POST",
        &server.http(&format!("/api/projects/{project}/messages")),
        &[("authorization", &format!("Bearer {API_KEY}"))],
        r#"{"data":"after the flood"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    loop {
        let frame = recv_json(&mut observer).await;
        if frame["type"] == "message" {
            assert_eq!(frame["data"], "after the flood");
            break;
        }
        assert_eq!(frame["type"], "presence", "{frame}");
    }
    observer
        .send(Message::text(r#"{"type":"presence"}"#))
        .await
        .unwrap();
    loop {
        let frame = recv_json(&mut observer).await;
        if frame["event"] == "sync" {
            // The flooder may still be listed while its close handshake ends.
            let others = frame["users"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|u| *u != "flooder")
                .count();
            assert_eq!(others, 301, "the crowd and the observer");
            break;
        }
    }
}

/// With the request budget lifted, a flooder that reads slowly still cannot make answers
/// pile up: at most one presence answer waits per connection, later requests are answered
/// by it. The server's RSS stays within 64 MiB and the flooder gets far fewer answers than
/// requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_answers_never_pile_up_behind_a_slow_socket() {
    let server = Server::start("[limits]\nclient_request_rate = 0\n");
    let project = "crowded";
    let _crowd = crowd(&server, project, 300).await;
    let flooder = connect_small_buffer(&server, project, "flooder").await;
    let before = server.rss_kib();
    let (mut sink, mut stream) = flooder.split();
    // The flooder reads a few KiB every so often while it floods, as in the report.
    let reading = tokio::spawn(async move {
        let mut frames = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            let read = Instant::now();
            while read.elapsed() < Duration::from_millis(20) {
                match tokio::time::timeout(Duration::from_millis(20), stream.next()).await {
                    Ok(Some(Ok(Message::Text(_)))) => frames += 1,
                    Ok(Some(Ok(_))) | Err(_) => {}
                    Ok(Some(Err(_)) | None) => return (frames, stream),
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (frames, stream)
    });
    let mut sent = 0;
    flood_presence(&mut sink, Duration::from_secs(8), &mut sent).await;
    let after = server.rss_kib();
    let (read_during, mut stream) = reading.await.unwrap();
    eprintln!(
        "unbudgeted presence flood: {sent} requests, {read_during} frames read meanwhile; \
         server RSS {before} KiB -> {after} KiB"
    );
    assert!(sent > 1000, "the flood was a flood: {sent} requests");
    assert!(
        after.saturating_sub(before) < ALLOWED_GROWTH_KIB,
        "{sent} presence requests grew the server from {before} KiB to {after} KiB"
    );
    // Whatever is still queued for it is at most one answer and its last part in flight.
    sink.send(Message::text(r#"{"type":"publish","data":"last"}"#))
        .await
        .unwrap();
    let mut answers = read_during;
    loop {
        let frame = tokio::time::timeout(STEP, stream.next())
            .await
            .expect("the flooder is still served")
            .expect("open")
            .expect("no read error");
        let Message::Text(text) = frame else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "message" && frame["data"] == "last" {
            break;
        }
        answers += 1;
    }
    eprintln!("unbudgeted presence flood: {answers} frames for {sent} requests");
    assert!(
        answers * 10 < sent,
        "{answers} answers for {sent} requests: they were not coalesced"
    );
}

/// A client on a slow link asks for 1 000 missed messages of 16 KiB (16 MiB, more than
/// the kernel's socket buffers hold): the replay takes longer than `timeouts.write`, but
/// each write makes progress, so it gets them all, in order, then live ones.
/// Before, the welcome and the replay were one write with one deadline: the connection
/// was dropped mid-replay, and the client's reconnect would ask for the same again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_replay_reaches_a_slow_reader_whole() {
    const MISSED: u64 = 1000;
    // 16 MiB of history in one project: over the default history.max_bytes.
    let server = Server::start(
        "[timeouts]\nwrite = \"1s\"\n\n[history]\nsize = 1000\nmax_bytes = 67108864\n",
    );
    let project = "replayed";
    let (_, welcome) = join(&server, project, "first").await;
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    let url = server.http(&format!("/api/projects/{project}/messages"));
    let auth = format!("Bearer {API_KEY}");
    let filler = "r".repeat(16 * 1024);
    let published = futures_util::stream::iter(0..MISSED)
        .map(|i| {
            let body = json!({"data": {"i": i, "filler": filler}}).to_string();
            let (url, auth) = (url.clone(), auth.clone());
            async move { http("POST", &url, &[("authorization", &auth)], &body).await }
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await;
    assert!(published.iter().all(|(status, _, _)| *status == 202));

    // A fixed 64 KiB receive buffer (no autotuning): the kernels hold at most the server's
    // send buffer (up to tcp_wmem's 4 MiB) and this, a quarter of the replay.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let mut request = format!("{}?since=0&epoch={epoch}", server.url(project))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token("slow", &[project]))).unwrap(),
    );
    let (mut slow, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    let welcome = recv_json(&mut slow).await;
    assert_eq!(
        (welcome["recovered"].as_bool(), welcome["missed"].as_u64()),
        (Some(true), Some(MISSED)),
        "{welcome}"
    );
    let started = Instant::now();
    for i in 0..MISSED {
        let message = recv_message(&mut slow).await;
        // Published eight at a time: offsets follow arrival, not `i`.
        assert_eq!(
            message["offset"],
            i + 1,
            "every missed message once, in order"
        );
        // A slow link: about 3 s for the whole replay, well over timeouts.write.
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    eprintln!(
        "slow reader: {MISSED} replayed messages read in {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the replay was read faster than timeouts.write: the test proves nothing"
    );
    let (status, _, _) = http(
        "POST",
        &url,
        &[("authorization", &auth)],
        r#"{"data":"live"}"#,
    )
    .await;
    assert_eq!(status, 202);
    let live = recv_message(&mut slow).await;
    assert_eq!(
        (live["offset"].as_u64(), &live["data"]),
        (Some(MISSED + 1), &json!("live"))
    );
}

/// What a broker failure tells a client is always the same sentence: the broker's own
/// error (a Redis error text, an address, a port) goes to the log only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_errors_never_reach_clients() {
    // A Redis that is not there: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(&format!(
        "[broker]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"\n\
         connect_timeout = \"200ms\"\ncommand_timeout = \"200ms\"\n"
    ));
    let auth = format!("Bearer {API_KEY}");
    for (method, path, body) in [
        ("POST", "/api/projects/p/messages", r#"{"data":1}"#),
        ("GET", "/api/projects/p/messages?since=0", ""),
    ] {
        let (status, _, answer) = http(
            method,
            &server.http(path),
            &[("authorization", &auth)],
            body,
        )
        .await;
        assert_eq!(status, 503, "{method} {path}: {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            answer,
            json!({"error": "broker_unavailable", "message": "the message broker is unavailable; retry later"}),
            "{method} {path}"
        );
    }
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("broker call failed")),
        "the cause is logged"
    );
}
