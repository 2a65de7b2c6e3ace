//! Wiring: configuration in, a serving hub out, and the shutdown sequence.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http::header;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tracing::{info, warn};
use ws_auth::SharedVerifier;
use ws_broker_redis::RedisBroker;
use ws_transport::{Broker, MemoryBroker, SharedHub, TlsConfig, Upgrader, serve, serve_tls};

use crate::config::{BrokerKind, Settings};
use crate::routes;
use crate::websocket::{TokenRenewal, token_keys};

/// Extra time after the drain window for the last close handshakes; the process exits
/// within `drain + 2 s` (SPEC §5).
const DRAIN_SLACK: Duration = Duration::from_secs(1);

/// Serves until `shutdown` resolves, then drains every connection with 1001.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| format!("binding server.listen = {}", settings.server.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;

    let shards = settings.shard_count();
    let hub = SharedHub::new(settings.hub_config(), settings.admission_config(), shards);
    let webhooks = crate::webhooks::start(&settings, &hub)?;
    let broker = broker(&settings, &hub, shards, webhooks.as_ref())?;
    let verifier = SharedVerifier::new(token_keys::verifier(&settings)?);
    let leeway = settings.auth.enforce_expiry.then_some(settings.auth.leeway);
    let upgrader = Upgrader::new(
        hub.clone(),
        Arc::clone(&broker),
        settings.transport_config(),
    )
    .with_reauthorize(Arc::new(TokenRenewal::new(verifier.clone(), leeway)));
    info!(keys = %token_keys::describe(&verifier.current()), "user token keys loaded");
    token_keys::reload_on_hangup(settings.source.clone(), verifier.clone())?;
    let router = routes::router(&settings, upgrader.clone(), verifier)?;
    // Tokens travel in these headers: never print them, whatever logs a request.
    let sensitive = [
        header::AUTHORIZATION,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::COOKIE,
    ];
    let service = SetSensitiveRequestHeadersLayer::new(sensitive).layer(router);

    let stop_accepting = CancellationToken::new();
    if let Some(metrics_addr) = settings.server.metrics_listen {
        let listener = TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("binding server.metrics_listen = {metrics_addr}"))?;
        info!(addr = %listener.local_addr()?, "metrics listening");
        tokio::spawn(serve(
            listener,
            routes::metrics_only(hub.clone()),
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
    let exit_by = tokio::time::Instant::now() + drain + DRAIN_SLACK * 2;
    info!(connections = hub.connections(), drain = ?drain, "shutting down: draining connections with 1001");
    hub.shutdown(Instant::now(), drain);
    let tracker = upgrader.tracker();
    tracker.close();
    let drained = tokio::time::timeout(drain + DRAIN_SLACK, tracker.wait())
        .await
        .is_ok();
    stop_accepting.cancel();
    // The HTTP connections finish the answers in flight (an event stream's last chunks)
    // within the time left, at least 500 ms; meanwhile the broker withdraws what this
    // node announced (its presence in Redis).
    let left = exit_by
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_millis(500));
    let _ = tokio::join!(
        tokio::time::timeout(left, server),
        tokio::time::timeout(Duration::from_millis(500), broker.close()),
    );
    // What the last leaves decided goes out now, within the exit's slack.
    if let Some(webhooks) = &webhooks {
        webhooks.flush(Duration::from_millis(500)).await;
    }
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
/// With webhooks, membership changes go to their sender: from the hub (one node decides
/// alone), or from the Redis broker (decided once for the cluster).
fn broker(
    settings: &Settings,
    hub: &SharedHub,
    shards: usize,
    webhooks: Option<&crate::webhooks::Sender>,
) -> anyhow::Result<Arc<dyn Broker>> {
    match settings.broker.kind {
        BrokerKind::Memory => {
            if let Some(webhooks) = webhooks {
                hub.report_membership(webhooks.sink());
            }
            let broker = Arc::new(
                MemoryBroker::new(hub.clone(), settings.history_config(), shards)
                    .with_budget(settings.history.max_total_bytes)
                    .with_namespaces(settings.namespace_policies()?),
            );
            tokio::spawn(sweep(Arc::clone(&broker), settings.history.ttl));
            Ok(broker)
        }
        BrokerKind::Redis => {
            let broker = RedisBroker::start(hub.clone(), settings.redis_config())
                .context("broker.redis_url")?;
            if let Some(webhooks) = webhooks {
                broker.report_membership(webhooks.sink());
            }
            Ok(Arc::new(broker))
        }
    }
}

/// Frees idle streams of the memory broker now and then.
async fn sweep(broker: Arc<MemoryBroker>, ttl: Duration) {
    let period = (ttl / 4).max(Duration::from_secs(1));
    // The first sweep comes one period after start-up, not at once: there is nothing to free
    // yet, and a late first tick could free a stream a client had just read (a new epoch).
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        every.tick().await;
        broker.sweep(Instant::now());
    }
}
