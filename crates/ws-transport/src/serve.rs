//! The accept loop: HTTP/1.1 with upgrades, header deadlines against slowloris, and
//! graceful shutdown of plain HTTP connections.
//!
//! HTTP/1.1 only, with hyper's own HTTP/1 connection rather than hyper-util's `auto` one:
//! WebSocket needs HTTP/1.1 (TLS offers only `http/1.1`), and `auto` first reads every
//! connection's preface to tell HTTP/1 from HTTP/2, then replays it: 7 % of the CPU of a
//! handshake (`docs/benchmarks.md`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};
use tracing::{debug, warn};

use crate::socket::Socket;
use crate::tls::TlsConfig;

/// The peer's address, inserted into every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// Serves `service` on `listener` until `shutdown` is cancelled, then lets in-flight HTTP
/// requests finish for up to `grace`. Upgraded connections are not waited for here: they
/// left hyper at the upgrade and are drained through the hub.
///
/// `handshake_timeout` bounds how long a client may take to send its request headers.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
    handshake_timeout: Duration,
    grace: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    accept_loop(listener, service, None, shutdown, handshake_timeout, grace).await;
}

/// [`serve`] over TLS (`https://`, `wss://`): the TLS handshake must also finish within
/// `handshake_timeout`; a client that does not speak TLS is dropped.
pub async fn serve_tls<S, B>(
    listener: TcpListener,
    service: S,
    tls: Arc<TlsConfig>,
    shutdown: CancellationToken,
    handshake_timeout: Duration,
    grace: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    accept_loop(
        listener,
        service,
        Some(tls),
        shutdown,
        handshake_timeout,
        grace,
    )
    .await;
}

async fn accept_loop<S, B>(
    listener: TcpListener,
    service: S,
    tls: Option<Arc<TlsConfig>>,
    shutdown: CancellationToken,
    handshake_timeout: Duration,
    grace: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        // The request head's limit (431 beyond it); `max_buf_size` only bounds the buffer.
        .max_header_size(64 * 1024)
        .max_buf_size(64 * 1024);
    let builder = Arc::new(builder);
    // Plain HTTP connections, to wait for at shutdown. An upgraded connection leaves its
    // task at the upgrade, so WebSocket connections are not counted here.
    let connections = TaskTracker::new();
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service
            .clone()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(RemoteAddr(remote));
                req
            });
        let service = TowerToHyperService::new(service);
        let (builder, shutdown) = (Arc::clone(&builder), shutdown.clone());
        match &tls {
            None => {
                connections.spawn(async move {
                    let io = TokioIo::new(Socket::new(stream));
                    if let Err(e) = serve_connection(&builder, io, service, &shutdown).await {
                        debug!(%remote, error = %e, "http connection ended with an error");
                    }
                });
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                connections.spawn(async move {
                    let stream = match tokio::time::timeout(
                        handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            debug!(%remote, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(%remote, "tls handshake timed out");
                            return;
                        }
                    };
                    let io = TokioIo::new(stream);
                    if let Err(e) = serve_connection(&builder, io, service, &shutdown).await {
                        debug!(%remote, error = %e, "https connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        debug!("some http connections outlived the grace period");
    }
}

/// Serves one connection until it ends or is upgraded; once `shutdown` is cancelled, the
/// request in flight is finished and keep-alive is off, so the connection ends after it.
async fn serve_connection<I, S>(
    builder: &http1::Builder,
    io: I,
    service: S,
    shutdown: &CancellationToken,
) -> hyper::Result<()>
where
    I: Read + Write + Unpin + Send + 'static,
    S: HttpService<Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection(io, service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => ended,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
