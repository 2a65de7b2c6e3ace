//! The accept loop: HTTP/1.1 and HTTP/2 with upgrades, header deadlines against slowloris,
//! and graceful shutdown of plain HTTP connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};
use tracing::{debug, warn};

use crate::tls::TlsConfig;

/// The peer's address, inserted into every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// Serves `service` on `listener` until `shutdown` is cancelled, then lets in-flight HTTP
/// requests finish for up to `grace`. Upgraded connections are not waited for here: they
/// left hyper at the upgrade and are drained through the hub.
///
/// `handshake_timeout` bounds how long a client may take to send its request headers.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
    handshake_timeout: Duration,
    grace: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    accept_loop(listener, service, None, shutdown, handshake_timeout, grace).await;
}

/// [`serve`] over TLS (`https://`, `wss://`): the TLS handshake must also finish within
/// `handshake_timeout`; a client that does not speak TLS is dropped.
pub async fn serve_tls<S>(
    listener: TcpListener,
    service: S,
    tls: Arc<TlsConfig>,
    shutdown: CancellationToken,
    handshake_timeout: Duration,
    grace: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
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

async fn accept_loop<S>(
    listener: TcpListener,
    service: S,
    tls: Option<Arc<TlsConfig>>,
    shutdown: CancellationToken,
    handshake_timeout: Duration,
    grace: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_buf_size(64 * 1024);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
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
        let (builder, watcher) = (Arc::clone(&builder), graceful.watcher());
        match &tls {
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = watcher.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(%remote, error = %e, "http connection ended with an error");
                    }
                });
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                tokio::spawn(async move {
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
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let conn = watcher.watch(conn.into_owned());
                    if let Err(e) = conn.await {
                        debug!(%remote, error = %e, "https connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("some http connections outlived the grace period");
    }
}
