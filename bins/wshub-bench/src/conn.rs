//! Opening one client connection: the TCP socket (bound to a spread source address when
//! asked), the WebSocket handshake with the token, and for wshub the welcome frame.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use ws_auth::{Claims, JwtSigner};

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// The protocol the generator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Target {
    /// wshub's v1 protocol on `/ws/projects/<project>`, a JWT on every handshake, the welcome
    /// frame awaited, publishes as `{"type":"publish","data":...}`.
    Wshub,
    /// Plain broadcast on `/ws/<room>` (the baseline servers): every text message goes to
    /// every client of the room, sender included.
    Raw,
}

/// The wshub protocol version (`--target wshub` only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// `/ws/projects/<project>`: one project per connection.
    #[default]
    V1,
    /// `GET /ws` (subprotocol `wshub.v2`, SPEC §10): many projects per connection, query
    /// subscriptions (`?subscribe=p1,p2`) and in-band `subscribe`/`unsubscribe` requests.
    V2,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Wshub => "wshub",
            Self::Raw => "raw",
        }
    }
}

/// Where and how to connect.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) target: Target,
    /// For wshub: v1 or v2.
    pub(crate) protocol: Protocol,
    /// `Authorization: Bearer` values, one per user; connection `i` uses `tokens[i % len]`.
    tokens: Vec<HeaderValue>,
    /// Connection `i` binds to `127.0.0.(2 + i % source_ips)`; 0: the kernel's choice (127.0.0.1).
    source_ips: usize,
    /// The first source address is `127.0.0.(2 + first_source)`.
    first_source: usize,
    /// The tungstenite read buffer: its default (128 KiB, zero-filled) would cost the
    /// generator 2.4 GiB at 19 000 connections.
    read_buffer: usize,
    /// How long a connection may take from `connect` to its welcome (a SYN dropped by a full
    /// accept queue is sent again after 1, 3, 7 and 15 s).
    pub(crate) timeout: Duration,
}

impl Endpoint {
    /// Mints `users` tokens (users `bench-0`, `bench-1`, …, every project, 24 h) for wshub.
    pub(crate) fn new(
        addr: SocketAddr,
        target: Target,
        secret: Option<&str>,
        users: usize,
    ) -> anyhow::Result<Self> {
        let tokens = match target {
            Target::Raw => Vec::new(),
            Target::Wshub => {
                let secret = secret.context(
                    "wshub needs tokens: pass --secret or set WSHUB_BENCH_SECRET to the \
                     configuration's auth.hs256_secrets[0]",
                )?;
                let signer = JwtSigner::hs256(secret);
                (0..users.max(1))
                    .map(|user| {
                        let claims = Claims::new(
                            format!("bench-{user}"),
                            ["*"],
                            Duration::from_secs(86_400),
                        );
                        let token = signer.sign(&claims).context("signing a token")?;
                        Ok(HeaderValue::from_str(&format!("Bearer {token}"))?)
                    })
                    .collect::<anyhow::Result<_>>()?
            }
        };
        Ok(Self {
            addr,
            target,
            protocol: Protocol::V1,
            tokens,
            source_ips: 0,
            first_source: 0,
            read_buffer: 16 * 1024,
            timeout: Duration::from_secs(30),
        })
    }

    /// Spreads connections over `source_ips` addresses from 127.0.0.2 ..= 127.0.0.254, starting
    /// at an offset drawn from the process id: the ports an earlier run left in TIME_WAIT on
    /// its addresses make `bind` search longer (seconds per thousand connections).
    pub(crate) fn with_source_ips(mut self, source_ips: usize) -> Self {
        self.source_ips = source_ips.min(253);
        self.first_source = if self.source_ips == 0 {
            0
        } else {
            std::process::id() as usize % (253 - self.source_ips + 1)
        };
        self
    }

    /// Speaks `protocol` to wshub.
    pub(crate) fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    pub(crate) fn source_ips(&self) -> usize {
        self.source_ips
    }

    /// The URL of a connection to `project`. On v2, `project` is a comma-separated list of
    /// query subscriptions, possibly empty (none).
    pub(crate) fn url(&self, project: &str) -> String {
        match (self.target, self.protocol) {
            (Target::Wshub, Protocol::V1) => format!("ws://{}/ws/projects/{project}", self.addr),
            (Target::Wshub, Protocol::V2) if project.is_empty() => format!("ws://{}/ws", self.addr),
            (Target::Wshub, Protocol::V2) => {
                format!("ws://{}/ws?subscribe={project}", self.addr)
            }
            (Target::Raw, _) => format!("ws://{}/ws/{project}", self.addr),
        }
    }

    /// Whether connections speak wshub's v2 protocol.
    pub(crate) fn v2(&self) -> bool {
        self.target == Target::Wshub && self.protocol == Protocol::V2
    }

    fn source(&self, index: usize) -> Option<SocketAddr> {
        if self.source_ips == 0 {
            return None;
        }
        #[allow(clippy::cast_possible_truncation)] // at most 253
        let last = (2 + self.first_source + index % self.source_ips) as u8;
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))
    }

    /// Connection `index` to `project`, ready to use: for wshub the welcome has been read, and
    /// on v2 the `subscribed` answer of every query subscription in `project` (a
    /// comma-separated list, possibly empty).
    pub(crate) async fn open(&self, project: &str, index: usize) -> anyhow::Result<Ws> {
        tokio::time::timeout(self.timeout, self.open_inner(project, index))
            .await
            .map_err(|_| anyhow::anyhow!("no welcome within {:?}", self.timeout))?
    }

    async fn open_inner(&self, project: &str, index: usize) -> anyhow::Result<Ws> {
        let socket = TcpSocket::new_v4()?;
        if let Some(source) = self.source(index) {
            // Earlier runs leave their ports in TIME_WAIT: let `bind` pick those too (the
            // kernel still refuses a 4-tuple that is in use).
            socket.set_reuseaddr(true)?;
            socket
                .bind(source)
                .with_context(|| format!("binding to {source}"))?;
        }
        let stream = socket.connect(self.addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        let mut request = self.url(project).into_client_request()?;
        if !self.tokens.is_empty() {
            let token = self.tokens[index % self.tokens.len()].clone();
            request.headers_mut().insert("authorization", token);
        }
        if self.v2() {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("wshub.v2"),
            );
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(self.read_buffer)
            .write_buffer_size(0);
        let (mut ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .context("WebSocket handshake")?;
        if self.target == Target::Wshub {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) if text.contains("\"type\":\"welcome\"") => {
                        break;
                    }
                    Some(Ok(Message::Text(text))) => bail!("expected a welcome, got {text}"),
                    Some(Ok(Message::Close(frame))) => {
                        bail!("closed before the welcome: {frame:?}")
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e).context("reading the welcome"),
                    None => bail!("stream ended before the welcome"),
                }
            }
        }
        if self.v2() {
            let mut pending = project.split(',').filter(|p| !p.is_empty()).count();
            while pending > 0 {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) if text.contains("\"type\":\"subscribed\"") => {
                        pending -= 1;
                    }
                    Some(Ok(Message::Text(text))) => {
                        bail!("expected `subscribed`, got {text}")
                    }
                    Some(Ok(Message::Close(frame))) => {
                        bail!("closed before `subscribed`: {frame:?}")
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e).context("reading `subscribed`"),
                    None => bail!("stream ended before `subscribed`"),
                }
            }
        }
        Ok(ws)
    }
}

/// The close code of a close frame, 1005 when it had none.
pub(crate) fn close_code(message: &Message) -> Option<u16> {
    match message {
        Message::Close(Some(frame)) => Some(frame.code.into()),
        Message::Close(None) => Some(1005),
        _ => None,
    }
}
