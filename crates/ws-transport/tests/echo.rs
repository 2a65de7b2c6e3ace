//! `examples/echo.rs`, the Autobahn TestSuite's target (`cargo xtask conformance`): text
//! comes back as text, binary as binary, pings are answered, and a close is echoed.
//!
//! `cargo test` builds the examples before running tests, so the binary is taken from the
//! target directory instead of being built again with `cargo run --example`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const STEP: Duration = Duration::from_secs(10);

/// `target/<profile>/examples/echo`, beside this test's `target/<profile>/deps/`.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps");
    let binary = profile_dir.join("examples/echo");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test -p ws-transport` builds it (`--test echo` alone does \
         not); or run `cargo build -p ws-transport --example echo`",
        binary.display()
    );
    binary
}

/// The example, killed when dropped.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> (Example, String) {
    let mut child = Command::new(example_binary())
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the example");
    let stdout = child.stdout.take().unwrap();
    let example = Example(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(STEP)
        .expect("the example printed no `listening on ADDR`");
    (example, addr)
}

#[tokio::test]
async fn echoes_text_binary_pings_and_the_close() {
    let (_example, addr) = start();
    let (mut ws, response) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::connect_async(format!("ws://{addr}/any/path")),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake");
    assert_eq!(response.status(), 101);

    let big = vec![7u8; 1 << 20];
    let sent = [
        Message::text("hello"),
        Message::binary(vec![0u8, 159, 146, 150]),
        Message::Ping(b"are you there".to_vec().into()),
        Message::binary(big),
        Message::text(""),
    ];
    for message in sent.iter().cloned() {
        ws.send(message).await.unwrap();
    }
    // The pong may overtake the echoes: tungstenite answers a ping on its next read.
    let (mut data, mut pongs) = (Vec::new(), Vec::new());
    while data.len() + pongs.len() < sent.len() {
        let message = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("no echo in time")
            .expect("the connection ended")
            .expect("read error");
        match message {
            Message::Pong(payload) => pongs.push(payload),
            other => data.push(other),
        }
    }
    assert_eq!(pongs, [b"are you there".to_vec()]);
    let expected: Vec<Message> = sent.into_iter().filter(|m| !m.is_ping()).collect();
    // Not assert_eq!: a mismatch would print the 1 MiB message.
    assert!(
        data == expected,
        "echoes differ: {:?}",
        data.iter()
            .map(|m| (m.is_text(), m.len()))
            .collect::<Vec<_>>()
    );

    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let echoed = tokio::time::timeout(STEP, ws.next())
        .await
        .expect("no close in time")
        .expect("the connection ended")
        .expect("read error");
    let Message::Close(Some(frame)) = echoed else {
        panic!("expected the close echoed, got {echoed:?}");
    };
    assert_eq!(frame.code, CloseCode::Away);
}

/// A message, then a frame with a reserved opcode, in one write: the message's echo
/// comes first, then the close frame with 1002 (Autobahn 4.1.3).
#[tokio::test]
async fn a_message_before_a_protocol_error_is_echoed_first() {
    let (_example, addr) = start();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let handshake = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(STEP, tcp.read(&mut chunk))
            .await
            .expect("no 101 in time")
            .unwrap();
        assert!(n > 0, "closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(
        buf.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let rest = buf.split_off(buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4);

    // Masked with a zero key, so the payload goes as is.
    let mut frames = vec![0x81, 0x80 | 2, 0, 0, 0, 0, b'h', b'i'];
    frames.extend_from_slice(&[0x85, 0x80, 0, 0, 0, 0]);
    tcp.write_all(&frames).await.unwrap();

    let mut got = rest;
    loop {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(STEP, tcp.read(&mut chunk))
            .await
            .expect("no answer in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    // Server frames are unmasked: "hi" as text, then a close frame carrying 1002.
    assert_eq!(&got[..4], &[0x81, 2, b'h', b'i'], "{got:?}");
    assert_eq!(got[4], 0x88, "{got:?}");
    assert_eq!(u16::from_be_bytes([got[6], got[7]]), 1002, "{got:?}");
}
