//! `examples/minimal_server.rs` builds, starts, and serves a real client: the welcome, then its
//! own publish back.
//!
//! `cargo test` builds the examples before running tests, so the binary is taken from the
//! target directory instead of being built again with `cargo run --example`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use ws_auth::{Claims, JwtSigner};

const SECRET: &str = "minimal-server-test-secret-0123456789";
const STEP: Duration = Duration::from_secs(10);

/// `target/<profile>/examples/minimal_server`, beside this test's `target/<profile>/deps/`.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps");
    let binary = profile_dir.join("examples/minimal_server");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test -p ws-transport` builds it (`--test minimal_server` alone \
         does not); or run `cargo build -p ws-transport --example minimal_server`",
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

/// Starts the example on an ephemeral port and returns it with the address it printed.
fn start() -> (Example, String) {
    let mut child = Command::new(example_binary())
        .arg("127.0.0.1:0")
        .env("MINIMAL_SERVER_SECRET", SECRET)
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

async fn next_json(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Value {
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("no frame in time")
            .expect("stream ended")
            .expect("read error");
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn minimal_server_example_serves_a_client() {
    let (_example, addr) = start();

    let token = JwtSigner::hs256(SECRET)
        .sign(&Claims::new("alice", ["demo"], Duration::from_secs(60)))
        .unwrap();
    let mut request = format!("ws://{addr}/ws/projects/demo")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let (mut ws, response) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake timed out")
        .expect("handshake");
    assert_eq!(response.status(), 101);

    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["user"], "alice", "{welcome}");
    assert_eq!(welcome["project"], "demo", "{welcome}");

    ws.send(Message::text(r#"{"type":"publish","data":1}"#))
        .await
        .unwrap();
    let message = loop {
        let frame = next_json(&mut ws).await;
        if frame["type"] == "message" {
            break frame;
        }
    };
    assert_eq!(message["from"], "alice", "{message}");
    assert_eq!(message["data"], 1, "{message}");

    // A token signed with another secret is refused before the upgrade.
    let forged = JwtSigner::hs256("another-secret-0123456789")
        .sign(&Claims::new("mallory", ["demo"], Duration::from_secs(60)))
        .unwrap();
    let url = format!("ws://{addr}/ws/projects/demo?access_token={forged}");
    let refused = tokio_tungstenite::connect_async(url).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected a 401, got {other:?}"),
    }
}
