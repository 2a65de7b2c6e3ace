//! The webhook sender (SPEC §14): membership events in, signed POSTs out.
//!
//! ```text
//!  hub (memory broker) or Redis script (cluster) ──► Sink::emit ──► ws_core::webhook::Webhooks
//!                                                    (id, time)     (batches, retries, backlog)
//!  sender task: poll_transmit → POST url, X-Wshub-Signature: sha256=<hex HMAC-SHA256(body)>
//!               2xx → handle_delivered; error, timeout, other status → handle_failed
//!               reports → wshub_webhook_* metrics and log lines
//! ```
//!
//! Every decision (when a batch leaves, what is retried when, what is dropped) is the
//! core's; this module moves bytes: one HTTP/1.1 request at a time on a fresh connection
//! (`Connection: close`: a receiver sees at most one request a second or so from a node,
//! a pool would buy nothing), plain or TLS (rustls, the system's roots).
//!
//! Event ids are `<instance>-<n>`: a random instance name per process and a counter, made
//! once when the event is decided and kept across retries, so a receiver deduplicates a
//! retried batch by id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, info, warn};
use ws_core::webhook::{
    DropReason, EventName, EventSet, Report, WebhookConfig, WebhookEvent, Webhooks,
};
use ws_core::{ProjectId, UserId};
use ws_transport::{MembershipSink, SharedHub};

use crate::config::Settings;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-wshub-signature";

/// `sha256=<lowercase hex HMAC-SHA256 of body keyed with secret>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + digest.len() * 2);
    out.push_str("sha256=");
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

/// What the hub or the broker and the sender task share.
#[derive(Debug)]
struct Shared {
    core: Mutex<Webhooks>,
    wake: Notify,
    events: EventSet,
    instance: String,
    next_id: AtomicU64,
    hub: SharedHub,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Webhooks> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where membership changes enter the sender: queued at once, never waited on.
#[derive(Debug, Clone)]
pub struct Sink(Arc<Shared>);

impl MembershipSink for Sink {
    fn emit(&self, project: &ProjectId, name: EventName, user: Option<&UserId>) {
        let shared = &self.0;
        if !shared.events.contains(name) {
            return;
        }
        let id = format!(
            "{}-{}",
            shared.instance,
            shared.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let event = WebhookEvent::new(id, name, unix_millis(), project.clone(), user.cloned());
        let backlog = {
            let mut core = shared.core();
            core.handle_event(Instant::now(), event);
            core.backlog()
        };
        shared.hub.metrics().set_webhook_backlog(backlog);
        shared.wake.notify_one();
    }
}

/// The running sender.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// The sink to hand to the hub (memory broker) or to the Redis broker.
    pub fn sink(&self) -> Arc<dyn MembershipSink> {
        Arc::new(Sink(Arc::clone(&self.shared)))
    }

    /// Sends what waits without lingering, and waits until it went or `within` passed.
    pub async fn flush(&self, within: Duration) {
        self.shared.core().handle_flush();
        self.shared.wake.notify_one();
        let deadline = tokio::time::Instant::now() + within;
        while !self.shared.core().is_idle() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.shared.core().held();
        if left > 0 {
            warn!(
                events = left,
                "webhook events not delivered before shutdown; dropped"
            );
        }
    }
}

/// Starts the sender of `[webhooks]`, or nothing when `webhooks.url` is unset.
pub fn start(settings: &Settings, hub: &SharedHub) -> anyhow::Result<Option<Sender>> {
    let webhooks = &settings.webhooks;
    let Some(url) = &webhooks.url else {
        return Ok(None);
    };
    let target =
        Target::new(url, webhooks.secret.0.as_bytes(), webhooks.timeout).context("webhooks.url")?;
    let mut config = WebhookConfig::default();
    config.retry_for = webhooks.retry_for;
    config.max_backlog = webhooks.max_backlog;
    let events = EventSet::of(
        webhooks
            .events
            .iter()
            .filter_map(|name| EventName::parse(name)),
    );
    let shared = Arc::new(Shared {
        core: Mutex::new(Webhooks::new(config, rand::random())),
        wake: Notify::new(),
        events,
        instance: format!("{:016x}", rand::random::<u64>()),
        next_id: AtomicU64::new(1),
        hub: hub.clone(),
    });
    info!(url = %target.redacted(), events = ?webhooks.events, "webhooks on");
    tokio::spawn(run(Arc::clone(&shared), target));
    Ok(Some(Sender { shared }))
}

/// How often drops are logged at most: a dead receiver under load drops events all the time.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Drops not logged yet, and when they were last logged.
#[derive(Debug, Default)]
struct DropLog {
    backlog: usize,
    expired: usize,
    logged_at: Option<Instant>,
}

impl DropLog {
    fn add(&mut self, events: usize, reason: DropReason) {
        match reason {
            DropReason::Backlog => self.backlog += events,
            DropReason::Expired => self.expired += events,
        }
    }

    /// Logs what was dropped, unless it was logged less than [`DROP_LOG_EVERY`] ago.
    fn flush(&mut self, now: Instant) {
        if self.backlog + self.expired == 0
            || self
                .logged_at
                .is_some_and(|at| now.duration_since(at) < DROP_LOG_EVERY)
        {
            return;
        }
        warn!(
            backlog = self.backlog,
            expired = self.expired,
            "webhook events dropped undelivered (backlog: webhooks.max_backlog was full; expired: retried for webhooks.retry_for)"
        );
        *self = Self {
            logged_at: Some(now),
            ..Self::default()
        };
    }
}

/// The sender task: one request at a time, as the core says.
async fn run(shared: Arc<Shared>, target: Target) {
    let mut drops = DropLog::default();
    loop {
        let (batch, timeout) = {
            let mut core = shared.core();
            let batch = core.poll_transmit(Instant::now());
            (batch, core.poll_timeout())
        };
        report(&shared, &mut drops);
        let Some(batch) = batch else {
            // Drops not logged yet get their line within DROP_LOG_EVERY.
            let recheck =
                (drops.backlog + drops.expired > 0).then(|| Instant::now() + DROP_LOG_EVERY);
            let wait = match (timeout, recheck) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(tokio::time::Instant::from_std);
            tokio::select! {
                () = shared.wake.notified() => {}
                () = sleep_until(wait) => {}
            }
            continue;
        };
        let outcome = target.post(Bytes::from(batch.body)).await;
        let now = Instant::now();
        match outcome {
            Ok(status) if (200..300).contains(&status) => {
                shared.core().handle_delivered(now, batch.id);
            }
            Ok(status) => {
                warn!(
                    status,
                    attempt = batch.attempt,
                    events = batch.events,
                    "webhook receiver answered a non-2xx status; retrying"
                );
                shared.core().handle_failed(now, batch.id);
            }
            Err(e) => {
                warn!(
                    error = %format!("{e:#}"),
                    attempt = batch.attempt,
                    events = batch.events,
                    "webhook request failed; retrying"
                );
                shared.core().handle_failed(now, batch.id);
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The core's reports to metrics and logs.
fn report(shared: &Shared, drops: &mut DropLog) {
    let (reports, backlog): (Vec<Report>, usize) = {
        let mut core = shared.core();
        (
            std::iter::from_fn(|| core.poll_report()).collect(),
            core.backlog(),
        )
    };
    let metrics = shared.hub.metrics();
    metrics.set_webhook_backlog(backlog);
    for r in reports {
        match r {
            Report::Delivered {
                events,
                attempts,
                latency,
            } => {
                metrics.webhook_delivered(events, latency);
                debug!(events, attempts, latency = ?latency, "webhook batch delivered");
            }
            Report::Failed {
                attempts, retry_in, ..
            } => {
                metrics.webhook_failed();
                debug!(attempts, retry_in = ?retry_in, "webhook batch to be retried");
            }
            Report::Dropped { events, reason } => {
                metrics.webhook_dropped(events, reason == DropReason::Expired);
                drops.add(events, reason);
            }
        }
    }
    drops.flush(Instant::now());
}

/// Where requests go, and how.
struct Target {
    uri: Uri,
    host: String,
    port: u16,
    /// `Host:`, with the port when it is not the scheme's.
    authority: String,
    tls: Option<tokio_rustls::TlsConnector>,
    secret: Vec<u8>,
    timeout: Duration,
}

impl Target {
    fn new(url: &str, secret: &[u8], timeout: Duration) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().context("not a URL")?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("must be http:// or https://"),
        };
        let host = uri.host().context("no host")?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().rsplit('@').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let tls = https.then(tls_connector).transpose()?;
        Ok(Self {
            uri,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authority,
            tls,
            secret: secret.to_vec(),
            timeout,
        })
    }

    /// The URL without its query or credentials, for logs.
    fn redacted(&self) -> String {
        format!(
            "{}://{}{}",
            self.uri.scheme_str().unwrap_or("http"),
            self.authority,
            self.uri.path()
        )
    }

    /// POSTs `body`, signed; the answer's status, within the timeout.
    async fn post(&self, body: Bytes) -> anyhow::Result<u16> {
        tokio::time::timeout(self.timeout, self.post_now(body))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within webhooks.timeout"))?
    }

    async fn post_now(&self, body: Bytes) -> anyhow::Result<u16> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .context("connecting")?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                    .context("the URL's host is not a TLS server name")?;
                let stream = tls.connect(name, tcp).await.context("TLS handshake")?;
                self.exchange(stream, body).await
            }
            None => self.exchange(tcp, body).await,
        }
    }

    async fn exchange<S>(&self, stream: S, body: Bytes) -> anyhow::Result<u16>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        let connection = tokio::spawn(connection);
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let request = Request::post(path)
            .header(header::HOST, &self.authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("wshub/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::CONNECTION, "close")
            .header(SIGNATURE_HEADER, sign(&self.secret, &body))
            .body(Full::new(body))
            .context("building the request")?;
        let answer = sender.send_request(request).await.context("sending")?;
        let status = answer.status().as_u16();
        // Read (and drop) the answer, bounded by the timeout around us, so the connection
        // ends cleanly.
        let _ = answer.into_body().collect().await;
        connection.abort();
        Ok(status)
    }
}

fn tls_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        anyhow::bail!("no root certificate found on this system for https://");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn targets_keep_their_port_and_path() {
        let t = Target::new(
            "http://127.0.0.1:8081/hooks?x=1",
            b"s",
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8081));
        assert_eq!(t.authority, "127.0.0.1:8081");
        assert_eq!(t.redacted(), "http://127.0.0.1:8081/hooks");
        assert!(Target::new("ftp://x/", b"s", Duration::from_secs(1)).is_err());
    }
}
