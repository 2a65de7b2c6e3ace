//! The upgrade: checks that only the transport can make, the 101 answer, and the hand-off
//! of the socket to its pumps.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::body::Body;
use crate::broker::Broker;
use crate::config::TransportConfig;
use crate::connection::{self, Admitted};
use crate::hub::SharedHub;
use crate::session::{self, AdmittedSession, Reauthorize};
use crate::socket::{self, PendingUpgrade};
use crate::sse;

/// The subprotocol wshub answers when a client offers it (defined with the frames).
pub use ws_core::envelope::{SUBPROTOCOL, SUBPROTOCOL_V2};

/// Turns authenticated upgrade requests into running connections.
///
/// Cheap to clone; every connection it starts is tracked so shutdown can wait for them.
#[derive(Debug, Clone)]
pub struct Upgrader {
    hub: SharedHub,
    broker: Arc<dyn Broker>,
    config: Arc<TransportConfig>,
    reauthorize: Option<Arc<dyn Reauthorize>>,
    tracker: TaskTracker,
}

impl Upgrader {
    /// An upgrader that registers connections in `hub` and recovers them from `broker`.
    pub fn new(hub: SharedHub, broker: Arc<dyn Broker>, config: TransportConfig) -> Self {
        Self {
            hub,
            broker,
            config: Arc::new(config),
            reauthorize: None,
            tracker: TaskTracker::new(),
        }
    }

    /// Lets v2 connections renew their token in band (`refresh`), verified by
    /// `reauthorize`; without it a `refresh` answers `invalid_token`.
    #[must_use]
    pub fn with_reauthorize(mut self, reauthorize: Arc<dyn Reauthorize>) -> Self {
        self.reauthorize = Some(reauthorize);
        self
    }

    /// The first check of SPEC §3: a WebSocket upgrade at all (426) with a usable
    /// version and key (400). Run it before authentication.
    #[allow(clippy::result_large_err, reason = "the error is the response to send")]
    pub fn check<B>(req: &Request<B>) -> Result<(), Response<Full<Bytes>>> {
        if !hyper_tungstenite::is_upgrade_request(req) {
            let mut response = json_error(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                "this endpoint speaks WebSocket only",
            );
            response
                .headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return Err(response);
        }
        if req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            let mut response = json_error(
                StatusCode::BAD_REQUEST,
                "bad_websocket_version",
                "Sec-WebSocket-Version must be 13",
            );
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return Err(response);
        }
        let key_ok = req
            .headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .is_some_and(|k| k.len() == 24 && k.as_bytes().ends_with(b"=="));
        if !key_ok {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "bad_websocket_key",
                "Sec-WebSocket-Key must be 16 random bytes in base64",
            ));
        }
        Ok(())
    }

    /// Answers 101 at once and hands the socket to a new connection of `who`.
    ///
    /// The request must have passed [`Upgrader::check`] and authentication. When the
    /// client offered [`SUBPROTOCOL`], it is answered (browsers fail the handshake
    /// otherwise); nothing else offered is ever echoed, the token it may carry least of all.
    pub fn upgrade<B>(&self, mut req: Request<B>, who: Admitted) -> Response<Full<Bytes>> {
        let (response, websocket) = match self.switch(&mut req, SUBPROTOCOL) {
            Ok(switched) => switched,
            Err(refusal) => return refusal,
        };
        let conn = self.hub.next_conn();
        let span =
            tracing::info_span!("conn", conn = conn.0, user = %who.user, project = %who.project);
        self.tracker.spawn(
            connection::run(
                websocket,
                self.hub.clone(),
                Arc::clone(&self.broker),
                Arc::clone(&self.config),
                conn,
                who,
            )
            .instrument(span),
        );
        response
    }

    /// Answers 101 at once and hands the socket to a new v2 connection of `who` (`GET /ws`,
    /// SPEC §10). [`SUBPROTOCOL_V2`] is answered when offered, as [`SUBPROTOCOL`] is by
    /// [`Upgrader::upgrade`].
    pub fn upgrade_session<B>(
        &self,
        mut req: Request<B>,
        who: AdmittedSession,
    ) -> Response<Full<Bytes>> {
        let (response, websocket) = match self.switch(&mut req, SUBPROTOCOL_V2) {
            Ok(switched) => switched,
            Err(refusal) => return refusal,
        };
        let conn = self.hub.next_conn();
        let span = tracing::info_span!("conn", conn = conn.0, user = %who.user, protocol = 2);
        self.tracker.spawn(
            session::run(
                websocket,
                self.hub.clone(),
                Arc::clone(&self.broker),
                Arc::clone(&self.config),
                self.reauthorize.clone(),
                conn,
                who,
            )
            .instrument(span),
        );
        response
    }

    /// The 101 answer to `req`, answering `protocol` when the client offered it, and the
    /// socket it will become; or the `400` of an upgrade that cannot be made.
    #[allow(clippy::result_large_err, reason = "the error is the response to send")]
    fn switch<B>(
        &self,
        req: &mut Request<B>,
        protocol: &'static str,
    ) -> Result<(Answer, PendingUpgrade), Answer> {
        let offered = offers(req.headers(), protocol);
        let (mut response, websocket) = socket::upgrade(req, &self.config)
            .map_err(|e| json_error(StatusCode::BAD_REQUEST, "bad_upgrade", &e.to_string()))?;
        if offered {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        Ok((response, websocket))
    }

    /// Answers `200 text/event-stream` at once and starts the server-sent event stream of
    /// `who` (`GET /sse/projects/{p}`, SPEC §14), a hub member like a v1 connection; its
    /// `since` comes from `Last-Event-ID`.
    ///
    /// The request must have passed authentication. The stream is tracked with the
    /// connections ([`Upgrader::tracker`]), so shutdown waits for its `event: close`.
    pub fn event_stream(&self, who: Admitted) -> Response<Body> {
        let (tx, rx) = mpsc::channel(sse::CHANNEL_CHUNKS);
        let conn = self.hub.next_conn();
        let span =
            tracing::info_span!("sse", conn = conn.0, user = %who.user, project = %who.project);
        self.tracker.spawn(
            sse::run(
                tx,
                self.hub.clone(),
                Arc::clone(&self.broker),
                Arc::clone(&self.config),
                conn,
                who,
            )
            .instrument(span),
        );
        let mut response = Response::new(Body::stream(rx));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // nginx buffers answers unless told not to: events would arrive in bursts.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }

    /// The hub connections are registered in.
    pub fn hub(&self) -> &SharedHub {
        &self.hub
    }

    /// The broker that orders and keeps messages.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The tracker of running connections: `close()` then `wait()` on shutdown.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }
}

/// A plain HTTP answer of the upgrade: the 101, or a refusal.
type Answer = Response<Full<Bytes>>;

/// Whether the `Sec-WebSocket-Protocol` headers list `protocol`.
fn offers(headers: &http::HeaderMap, protocol: &str) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == protocol)
}

/// A JSON error answer `{"error": code, "message": text}` (SPEC §3): ws-auth's, so the
/// transport's refusals and the authentication layers' have one shape.
pub use ws_auth::json_error;
