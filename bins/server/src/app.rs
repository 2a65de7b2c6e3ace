//! Wiring: configuration in, a serving hub out, and the shutdown sequence.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http::header;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tracing::{info, warn};
use ws_auth::{ApiKeyLayer, JwtAuthLayer, SharedVerifier};
use ws_broker_redis::RedisBroker;
use ws_core::history::HistoryConfig;
use ws_core::{AdmissionConfig, ClientConfig, HubConfig};
use ws_transport::{
    Broker, MemoryBroker, SharedHub, TlsConfig, TransportConfig, Upgrader, serve, serve_tls,
};

use crate::config::{BrokerKind, Settings};
use crate::routes::{self, CountHandshakes, Router};
use crate::websocket::guard::HandshakeGuardLayer;
use crate::websocket::token_keys as keys;

/// Extra time after the drain window for the last close handshakes; the process exits
/// within `drain + 2 s` (SPEC §5).
const DRAIN_SLACK: Duration = Duration::from_secs(1);

/// Serves until `shutdown` resolves, then drains every connection with 1001.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| format!("binding server.listen = {}", settings.server.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;

    let shards = shard_count(&settings);
    let hub = SharedHub::new(hub_config(&settings), admission_config(&settings), shards);
    let broker = broker(&settings, &hub, shards)?;
    let upgrader = Upgrader::new(
        hub.clone(),
        Arc::clone(&broker),
        transport_config(&settings),
    );
    let verifier = SharedVerifier::new(keys::verifier(&settings)?);
    info!(keys = %keys::describe(&verifier.current()), "user token keys loaded");
    keys::reload_on_hangup(settings.source.clone(), verifier.clone())?;
    let jwt = JwtAuthLayer::new(verifier).allow_query_token(settings.auth.allow_query_token);
    let api_keys = ApiKeyLayer::new(settings.auth.api_keys.iter().map(|k| k.0.as_str()))
        .context("auth.api_keys")?;
    // Admin actions (revoking users, closing projects) deserve keys of their own; without
    // them, whoever may publish may also disconnect everyone, which operators should know.
    let admin_keys = if settings.auth.admin_api_keys.is_empty() {
        warn!(
            "auth.admin_api_keys is empty: the keys of auth.api_keys also open /api/admin/*; \
             set auth.admin_api_keys to keep publishers out of the admin routes"
        );
        api_keys.clone()
    } else {
        ApiKeyLayer::new(settings.auth.admin_api_keys.iter().map(|k| k.0.as_str()))
            .context("auth.admin_api_keys")?
    };
    let leeway = settings.auth.enforce_expiry.then_some(settings.auth.leeway);
    let router = Router::new(
        upgrader.clone(),
        jwt,
        api_keys,
        admin_keys,
        leeway,
        settings.limits.max_message_bytes,
        settings.server.metrics_listen.is_none(),
    )
    .with_demo(settings.server.demo);

    // Tokens travel in these headers: never print them, whatever logs a request.
    let sensitive = [
        header::AUTHORIZATION,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::COOKIE,
    ];
    let counted_hub = hub.clone();
    let service = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
        .layer_fn(move |inner| CountHandshakes::new(inner, counted_hub.clone()))
        .layer(HandshakeGuardLayer::new(&settings, hub.clone())?)
        .service(router);

    let stop_accepting = CancellationToken::new();
    if let Some(metrics_addr) = settings.server.metrics_listen {
        let listener = TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("binding server.metrics_listen = {metrics_addr}"))?;
        let metrics_hub = hub.clone();
        let only_metrics = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let response = if req.uri().path() == "/metrics" {
                routes::metrics(&metrics_hub)
            } else {
                ws_transport::json_error(
                    http::StatusCode::NOT_FOUND,
                    "not_found",
                    "only /metrics is served here",
                )
            };
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        });
        info!(addr = %listener.local_addr()?, "metrics listening");
        tokio::spawn(serve(
            listener,
            only_metrics,
            stop_accepting.clone(),
            settings.timeouts.handshake,
            Duration::from_secs(1),
        ));
    }
    let server = match (
        &settings.server.tls_cert_file,
        &settings.server.tls_key_file,
    ) {
        (Some(cert), Some(key)) => {
            let tls = Arc::new(
                TlsConfig::load(cert, key)
                    .context("loading server.tls_cert_file and server.tls_key_file")?,
            );
            reload_tls_on_hangup(Arc::clone(&tls))?;
            tokio::spawn(serve_tls(
                listener,
                service,
                tls,
                stop_accepting.clone(),
                settings.timeouts.handshake,
                Duration::from_secs(1),
            ))
        }
        _ => tokio::spawn(serve(
            listener,
            service,
            stop_accepting.clone(),
            settings.timeouts.handshake,
            Duration::from_secs(1),
        )),
    };
    let tls = settings.server.tls_cert_file.is_some();
    info!(%addr, tls, "listening");

    shutdown.await;
    let drain = settings.shutdown.drain;
    info!(connections = hub.connections(), drain = ?drain, "shutting down: draining connections with 1001");
    hub.shutdown(Instant::now(), drain);
    let tracker = upgrader.tracker();
    tracker.close();
    let drained = tokio::time::timeout(drain + DRAIN_SLACK, tracker.wait())
        .await
        .is_ok();
    stop_accepting.cancel();
    // Meanwhile the broker withdraws what this node announced (its presence in Redis).
    let _ = tokio::join!(
        tokio::time::timeout(Duration::from_millis(500), server),
        tokio::time::timeout(Duration::from_millis(500), broker.close()),
    );
    if drained {
        info!("all connections drained");
    } else {
        warn!(
            left = hub.connections(),
            "drain window over with connections still open; dropping them"
        );
    }
    Ok(())
}

/// Reads the certificate and key again on every SIGHUP; a bad pair keeps the old one.
fn reload_tls_on_hangup(tls: Arc<TlsConfig>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => info!("tls certificate reloaded"),
                Err(e) => {
                    warn!(error = %e, "tls certificate reload failed; keeping the previous one")
                }
            }
        }
    });
    Ok(())
}

/// The broker of `broker.kind`: in memory, or Redis shared with other nodes (SPEC §8).
fn broker(settings: &Settings, hub: &SharedHub, shards: usize) -> anyhow::Result<Arc<dyn Broker>> {
    match settings.broker.kind {
        BrokerKind::Memory => {
            let broker = Arc::new(
                MemoryBroker::new(hub.clone(), history_config(settings), shards)
                    .with_budget(settings.history.max_total_bytes),
            );
            tokio::spawn(sweep(Arc::clone(&broker), settings.history.ttl));
            Ok(broker)
        }
        BrokerKind::Redis => {
            let broker = RedisBroker::start(hub.clone(), settings.redis_config())
                .context("broker.redis_url")?;
            Ok(Arc::new(broker))
        }
    }
}

/// Frees idle streams of the memory broker now and then.
async fn sweep(broker: Arc<MemoryBroker>, ttl: Duration) {
    let mut every = tokio::time::interval((ttl / 4).max(Duration::from_secs(1)));
    loop {
        every.tick().await;
        broker.sweep(Instant::now());
    }
}

fn history_config(settings: &Settings) -> HistoryConfig {
    HistoryConfig {
        size: settings.history.size,
        ttl: settings.history.ttl,
        max_bytes: settings.history.max_bytes,
    }
}

fn shard_count(settings: &Settings) -> usize {
    match settings.server.shards {
        0 => std::thread::available_parallelism().map_or(4, |n| n.get() * 4),
        n => n,
    }
}

fn hub_config(settings: &Settings) -> HubConfig {
    let mut config = HubConfig::default();
    config.send_queue_frames = settings.limits.send_queue_frames;
    config.send_queue_bytes = settings.limits.send_queue_bytes;
    config
}

fn admission_config(settings: &Settings) -> AdmissionConfig {
    let mut config = AdmissionConfig::default();
    config.max_connections = settings.limits.max_connections;
    config.max_connections_per_user = settings.limits.max_connections_per_user;
    config
}

fn transport_config(settings: &Settings) -> TransportConfig {
    let mut client = ClientConfig::default();
    client.ping_interval = settings.timeouts.ping_interval;
    client.pong_timeout = settings.timeouts.pong_timeout;
    client.write_timeout = settings.timeouts.write;
    client.close_timeout = settings.timeouts.close;
    client.max_message_bytes = settings.limits.max_message_bytes;
    client.allow_publish = settings.limits.allow_client_publish;
    client.publish_rate = settings.limits.client_publish_rate;
    client.request_rate = settings.limits.client_request_rate;
    let mut config = TransportConfig::default();
    config.client = client;
    config.presence_events = settings.presence.events;
    config.presence_max_members = settings.presence.max_members_for_events;
    config
}
