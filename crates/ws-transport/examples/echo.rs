//! An echo server on ws-transport's own upgrade, core and pumps: text comes back as text,
//! binary as binary. `cargo xtask conformance` runs the Autobahn TestSuite against it.
//!
//! ```sh
//! cargo run --release -p ws-transport --example echo -- 127.0.0.1:9001
//! ```
//!
//! Any path upgrades. The first line on stdout is `listening on ADDR` (with port 0, the
//! port the system picked). The limits are the hub's but for the message size: 64 MiB, so
//! the suite's 16 MiB messages fit.

use std::convert::Infallible;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use ws_transport::{EchoUpgrader, TransportConfig, Upgrader};

/// The largest message echoed; the Autobahn suite's largest is 16 MiB.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());

    let mut config = TransportConfig::default();
    config.client.max_message_bytes = MAX_MESSAGE_BYTES;
    let echo = EchoUpgrader::new(config);
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let echo = echo.clone();
        async move {
            if let Err(refusal) = Upgrader::check(&req) {
                return Ok::<_, Infallible>(refusal);
            }
            Ok(echo.upgrade(req))
        }
    });

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    // Killed by its runner; nothing to drain.
    let shutdown = CancellationToken::new();
    let (handshake_timeout, grace) = (Duration::from_secs(10), Duration::from_secs(1));
    ws_transport::serve(listener, service, shutdown, handshake_timeout, grace).await;
    Ok(())
}
