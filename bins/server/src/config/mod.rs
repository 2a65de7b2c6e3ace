//! The configuration of SPEC §7: a TOML file, every key overridable from the environment as
//! `WSHUB__SECTION__KEY`, every default of the spec, unknown keys refused.
//!
//! This module holds [`Settings`], loading and validation; [`reference`](mod@reference) documents every key
//! (docs/configuration.md is generated from it), and `mapping` turns the settings into the
//! configurations and layers of the libraries.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer};

mod mapping;
pub mod reference;

/// Everything `wshub` reads at start-up.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: Server,
    pub auth: Auth,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub presence: Presence,
    pub history: History,
    pub broker: Broker,
    pub shutdown: Shutdown,
    pub log: Log,
    /// `[webhooks]` (SPEC §14): off until `url` is set.
    pub webhooks: Webhooks,
    /// `[namespaces.<name>]` (SPEC §12): overrides for the projects of one namespace (the
    /// part of a project id before its first `:`).
    pub namespaces: BTreeMap<String, NamespaceSettings>,
    /// The file the settings were read from, if any: relative key file paths are resolved
    /// against its directory, and SIGHUP reads it again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// WebSocket and HTTP API address.
    pub listen: SocketAddr,
    /// Where `/metrics` is served; on `listen` when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// The demo page at `/`.
    pub demo: bool,
    /// The operator's page at `/admin` (it asks for an admin API key in the browser).
    pub admin_page: bool,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// Hub shards; 0 picks four per core.
    pub shards: usize,
    /// Runtime worker threads; 0 picks one per CPU the process may use; 1 is the
    /// single-threaded runtime.
    pub worker_threads: usize,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            demo: false,
            admin_page: false,
            tls_cert_file: None,
            tls_key_file: None,
            shards: 0,
            worker_threads: 0,
        }
    }
}

/// `[auth]`: who may connect (SPEC §3). The key settings (`hs256_secrets`,
/// `public_key_files`, `jwks_file`, `issuer`, `audience`, `leeway`) are read again on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// HS256 shared secrets, each at least 16 bytes; several at once for rotation.
    pub hs256_secrets: Vec<Secret>,
    /// RS256, ES256 or EdDSA public keys in PEM: `"path.pem"` or `{ path = "...", kid = "..." }`.
    /// Relative paths are resolved against the configuration file's directory.
    pub public_key_files: Vec<PublicKeyFile>,
    /// A JWKS document (`{"keys": [...]}`); its keys are chosen by `kid`.
    pub jwks_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub leeway: Duration,
    /// Exact origins and `*.example.com` patterns; empty: no Origin check.
    pub allowed_origins: Vec<String>,
    pub require_origin: bool,
    pub allow_query_token: bool,
    pub api_keys: Vec<Secret>,
    /// Keys of `/api/admin/*`, in the format of `api_keys`; empty: `api_keys` open them too
    /// (logged as a warning at start-up).
    pub admin_api_keys: Vec<Secret>,
    pub enforce_expiry: bool,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client
    /// for the handshake rate limit; empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            hs256_secrets: Vec::new(),
            public_key_files: Vec::new(),
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            allowed_origins: Vec::new(),
            require_origin: false,
            allow_query_token: true,
            api_keys: Vec::new(),
            admin_api_keys: Vec::new(),
            enforce_expiry: true,
            trusted_proxies: Vec::new(),
        }
    }
}

/// One entry of `auth.public_key_files`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PublicKeyFile {
    /// A key without `kid`: it checks the tokens of its algorithm whose `kid` names no other
    /// key.
    Path(PathBuf),
    /// A key for the tokens whose `kid` is `kid`.
    WithKid { path: PathBuf, kid: String },
}

impl PublicKeyFile {
    pub fn path(&self) -> &Path {
        match self {
            Self::Path(path) | Self::WithKid { path, .. } => path,
        }
    }

    pub fn kid(&self) -> Option<&str> {
        match self {
            Self::Path(_) => None,
            Self::WithKid { kid, .. } => Some(kid),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_message_bytes: usize,
    pub send_queue_frames: usize,
    pub send_queue_bytes: usize,
    pub client_publish_rate: u32,
    /// Presence requests per second per connection (SPEC §10), bursts of twice as many.
    pub client_request_rate: u32,
    pub handshake_rate_per_ip: u32,
    pub allow_client_publish: bool,
    /// Subscriptions per v2 connection (SPEC §10).
    pub max_subscriptions: usize,
    /// Publishes one connection may have in flight (sent to the broker, not yet answered).
    pub client_publishes_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_connections_per_user: 32,
            max_message_bytes: 65_536,
            send_queue_frames: 1024,
            send_queue_bytes: 4 * 1024 * 1024,
            client_publish_rate: 50,
            client_request_rate: 20,
            handshake_rate_per_ip: 50,
            allow_client_publish: true,
            max_subscriptions: 128,
            client_publishes_in_flight: ws_core::client::DEFAULT_PUBLISH_WINDOW as usize,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    #[serde(deserialize_with = "duration")]
    pub ping_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub pong_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub write: Duration,
    #[serde(deserialize_with = "duration")]
    pub handshake: Duration,
    /// How long a server-initiated close waits for the client's close frame.
    #[serde(deserialize_with = "duration")]
    pub close: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            write: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
            close: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Presence {
    pub events: bool,
    pub max_members_for_events: usize,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            events: true,
            max_members_for_events: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct History {
    pub size: usize,
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// Bytes of frames kept per project; the oldest go first, as for `size`.
    pub max_bytes: usize,
    /// Bytes of frames kept across all projects (per node on the memory broker, per
    /// deployment on Redis); the oldest idle projects are freed first.
    pub max_total_bytes: u64,
}

impl Default for History {
    fn default() -> Self {
        Self {
            size: 1000,
            ttl: Duration::from_secs(600),
            max_bytes: ws_core::history::DEFAULT_MAX_BYTES,
            max_total_bytes: ws_transport::broker::DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

/// The Redis of `broker.redis_url` when neither it, a cluster nor sentinels are set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// `[broker]`: where offsets, history and presence live (SPEC §8).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Broker {
    pub kind: BrokerKind,
    /// `redis://[user:password@]host:port/db`, `rediss://` for TLS; redacted in logs.
    /// Unset: [`DEFAULT_REDIS_URL`], unless `redis_cluster` or `redis_sentinels` is set.
    pub redis_url: Option<Secret>,
    /// Seed nodes of a Redis Cluster, instead of `redis_url`.
    pub redis_cluster: Vec<Secret>,
    /// Sentinels (`redis://host:26379`) to find the master through, instead of `redis_url`.
    pub redis_sentinels: Vec<Secret>,
    /// The master's name as the sentinels know it.
    pub redis_sentinel_master: String,
    /// The master's password (`requirepass`); empty: none.
    pub redis_sentinel_master_password: Secret,
    /// Prefixes every Redis key and channel, so several deployments share one Redis.
    pub key_prefix: String,
    /// Multiplexed Redis connections for commands; the pub/sub connection comes on top.
    pub pool_size: usize,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// A Redis command slower than this counts as Redis being unavailable.
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// The users of a node that stops refreshing its presence (a crash) leave the
    /// cluster's presence within this time.
    #[serde(deserialize_with = "duration")]
    pub presence_ttl: Duration,
}

impl Default for Broker {
    fn default() -> Self {
        Self {
            kind: BrokerKind::Memory,
            redis_url: None,
            redis_cluster: Vec::new(),
            redis_sentinels: Vec::new(),
            redis_sentinel_master: String::new(),
            redis_sentinel_master_password: Secret::default(),
            key_prefix: "wshub".to_owned(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// Closes with 1001 are spread over this window.
    #[serde(deserialize_with = "duration")]
    pub drain: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            drain: Duration::from_secs(10),
        }
    }
}

/// `[webhooks]`: membership events POSTed to the backend (SPEC §14).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhooks {
    /// `http://` or `https://` receiver; unset: webhooks off.
    pub url: Option<String>,
    /// The HMAC-SHA256 key of `X-Wshub-Signature`; required with `url`.
    pub secret: Secret,
    /// Which of the four events are sent.
    pub events: Vec<String>,
    /// How long a failed batch is retried before its events are dropped.
    #[serde(deserialize_with = "duration")]
    pub retry_for: Duration,
    /// One request's deadline: connect, send, and the answer's head.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Events waiting behind the request in flight; over it the oldest are dropped.
    pub max_backlog: usize,
}

impl Default for Webhooks {
    fn default() -> Self {
        Self {
            url: None,
            secret: Secret::default(),
            events: ws_core::webhook::EventName::ALL
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
            retry_for: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            max_backlog: 10_000,
        }
    }
}

impl Webhooks {
    /// Checks what types cannot: every error names its key.
    fn validate(&self) -> anyhow::Result<()> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("webhooks.url: not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            bail!("webhooks.url: must be an http:// or https:// URL with a host");
        }
        if self.secret.0.is_empty() {
            bail!("webhooks.secret: must be set with webhooks.url (it signs every request)");
        }
        if self.events.is_empty() {
            bail!("webhooks.events: name at least one event, or leave webhooks.url unset");
        }
        for name in &self.events {
            if ws_core::webhook::EventName::parse(name).is_none() {
                bail!(
                    "webhooks.events: unknown event {name:?}; the events are project_occupied, project_vacated, user_joined, user_left"
                );
            }
        }
        if self.retry_for.is_zero() {
            bail!("webhooks.retry_for must be longer than 0s");
        }
        if self.timeout.is_zero() {
            bail!("webhooks.timeout must be longer than 0s");
        }
        if self.max_backlog == 0 {
            bail!("webhooks.max_backlog must be greater than 0");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `pretty` for people, `json` for machines.
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A secret read from the configuration: never printed, not even by `Debug`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// One `[namespaces.<name>]` table: every key optional, the global value when absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceSettings {
    /// Overrides `history.size`.
    pub history_size: Option<usize>,
    /// Overrides `history.ttl`.
    #[serde(deserialize_with = "optional_duration")]
    pub history_ttl: Option<Duration>,
    /// Overrides `presence.events`.
    pub presence: Option<bool>,
    /// Overrides `presence.max_members_for_events`.
    pub max_members_for_events: Option<usize>,
    /// Overrides `limits.allow_client_publish`.
    pub allow_client_publish: Option<bool>,
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration like \"25s\" or \"10m\": {e}"
        ))
    })
}

impl Settings {
    /// Reads `file` (when given), then the `WSHUB__…` environment on top.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("WSHUB")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("auth.hs256_secrets")
                .with_list_parse_key("auth.api_keys")
                .with_list_parse_key("auth.allowed_origins")
                .with_list_parse_key("auth.public_key_files")
                .with_list_parse_key("auth.trusted_proxies")
                .with_list_parse_key("webhooks.events")
                .with_list_parse_key("broker.redis_cluster")
                .with_list_parse_key("broker.redis_sentinels"),
        );
        let mut settings: Self = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| anyhow::anyhow!("{}", without_values(&e.to_string())))
            .context(match file {
                Some(f) => format!(
                    "invalid configuration in {} or WSHUB__* variables",
                    f.display()
                ),
                None => "invalid configuration in WSHUB__* variables".to_owned(),
            })?;
        settings.validate()?;
        settings.source = file.map(Path::to_path_buf);
        Ok(settings)
    }

    /// Checks what types cannot: every error names its key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("limits.max_connections", self.limits.max_connections),
            (
                "limits.max_connections_per_user",
                self.limits.max_connections_per_user,
            ),
            ("limits.max_message_bytes", self.limits.max_message_bytes),
            ("limits.send_queue_frames", self.limits.send_queue_frames),
            ("limits.max_subscriptions", self.limits.max_subscriptions),
            (
                "limits.client_publishes_in_flight",
                self.limits.client_publishes_in_flight,
            ),
            ("limits.send_queue_bytes", self.limits.send_queue_bytes),
            ("history.max_bytes", self.history.max_bytes),
            (
                "history.max_total_bytes",
                usize::try_from(self.history.max_total_bytes).unwrap_or(usize::MAX),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                bail!("{key} must be greater than 0");
            }
        }
        let durations = [
            ("timeouts.ping_interval", self.timeouts.ping_interval),
            ("timeouts.pong_timeout", self.timeouts.pong_timeout),
            ("timeouts.write", self.timeouts.write),
            ("timeouts.handshake", self.timeouts.handshake),
        ];
        for (key, value) in durations {
            if value.is_zero() {
                bail!("{key} must be longer than 0s");
            }
        }
        if self.auth.hs256_secrets.iter().any(|s| s.0.len() < 16) {
            bail!(
                "auth.hs256_secrets: each secret must be at least 16 bytes (32 or more recommended)"
            );
        }
        self.namespace_policies()?;
        self.auth.validate()?;
        self.webhooks.validate()?;
        if self.broker.kind == BrokerKind::Redis {
            let b = &self.broker;
            let places = [
                b.redis_url.is_some(),
                !b.redis_cluster.is_empty(),
                !b.redis_sentinels.is_empty(),
            ];
            if places.iter().filter(|set| **set).count() > 1 {
                bail!(
                    "broker.redis_url, broker.redis_cluster, broker.redis_sentinels: set one of them (one Redis, a cluster, or the sentinels of a master)"
                );
            }
            if b.redis_sentinels.is_empty() && !b.redis_sentinel_master.is_empty() {
                bail!("broker.redis_sentinel_master: goes with broker.redis_sentinels");
            }
            if b.redis_sentinels.is_empty() && !b.redis_sentinel_master_password.0.is_empty() {
                bail!("broker.redis_sentinel_master_password: goes with broker.redis_sentinels");
            }
            self.redis_config().validate().map_err(|e| {
                use ws_broker_redis::Field;
                let key = match e.field() {
                    Field::Url => "broker.redis_url",
                    Field::KeyPrefix => "broker.key_prefix",
                    Field::PoolSize => "broker.pool_size",
                    Field::ConnectTimeout => "broker.connect_timeout",
                    Field::CommandTimeout => "broker.command_timeout",
                    Field::PresenceTtl => "broker.presence_ttl",
                    Field::Cluster => "broker.redis_cluster",
                    Field::Sentinels => "broker.redis_sentinels",
                    Field::SentinelMaster => "broker.redis_sentinel_master",
                    _ => "broker",
                };
                anyhow::anyhow!("{key}: {e}")
            })?;
        }
        if self.server.tls_cert_file.is_some() != self.server.tls_key_file.is_some() {
            bail!(
                "server.tls_cert_file and server.tls_key_file go together: set both to serve wss://, or neither"
            );
        }
        Ok(())
    }

    /// Whether no token key is configured: nothing to verify tokens with. Start-up then
    /// refuses, unless development mode is allowed (no configuration at all, or `--dev`;
    /// see `dev::unconfigured`), which invents a secret.
    pub fn is_development(&self) -> bool {
        self.auth.hs256_secrets.is_empty()
            && self.auth.public_key_files.is_empty()
            && self.auth.jwks_file.is_none()
    }

    /// Where a path from the configuration is: relative paths are taken from the directory of
    /// the configuration file (from the working directory without one).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match self.source.as_deref().and_then(Path::parent) {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// A configuration error without the values it quotes, since a value may be a secret (a
/// password in `broker.redis_url`, an `auth.hs256_secrets` entry): the TOML parser's excerpt
/// of the broken line goes (its position and message stay), and so does the string serde
/// quotes in "invalid type: string \"…\"" (the key stays named), and a non-Unicode
/// variable's value.
fn without_values(message: &str) -> String {
    let kept: Vec<&str> = message
        .lines()
        .filter(|line| {
            // `  |`, `6 | redis_url = "…"` and `  |     ^`: the excerpt of the source.
            let line = line
                .trim_start()
                .trim_start_matches(|c: char| c.is_ascii_digit());
            !line.trim_start().starts_with('|')
        })
        .collect();
    let mut out = kept.join("\n");
    // The last: config's "env variable … contains non-Unicode data: \"…\"".
    for (marker, shown) in [
        ("string \"", "a string"),
        ("char '", "a char"),
        ("data: \"", "data"),
    ] {
        let mut from = 0;
        while let Some(at) = out[from..].find(marker).map(|i| from + i) {
            let quote = out[at + marker.len() - 1..].chars().next().unwrap_or('"');
            let body = at + marker.len();
            // serde quotes with `{:?}`: an escaped quote does not end the value.
            let mut escaped = false;
            let end = out[body..].char_indices().find_map(|(i, c)| {
                let ends = c == quote && !escaped;
                escaped = c == '\\' && !escaped;
                ends.then_some(body + i + 1)
            });
            let Some(end) = end else { break };
            out.replace_range(at..end, shown);
            from = at + shown.len();
        }
    }
    out
}

impl Auth {
    /// Parses what the layers will parse again, so that start-up fails here, naming the key.
    fn validate(&self) -> anyhow::Result<()> {
        ws_auth::CheckOriginLayer::allow(&self.allowed_origins).context("auth.allowed_origins")?;
        ws_auth::TrustedProxies::parse(&self.trusted_proxies).context("auth.trusted_proxies")?;
        for (i, file) in self.public_key_files.iter().enumerate() {
            if file.path().as_os_str().is_empty() {
                bail!("auth.public_key_files[{i}]: the path is empty");
            }
            if file.kid() == Some("") {
                bail!("auth.public_key_files[{i}]: kid is empty; leave it out instead");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> anyhow::Result<Settings> {
        let settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()?
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = parse("").unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.timeouts.ping_interval, Duration::from_secs(25));
        assert_eq!(s.limits.max_message_bytes, 65_536);
        assert_eq!(s.shutdown.drain, Duration::from_secs(10));
        assert!(s.is_development());
    }

    #[test]
    fn webhooks_are_off_by_default_and_validated_when_on() {
        let s = parse("").unwrap();
        assert!(s.webhooks.url.is_none());
        assert_eq!(s.webhooks.events.len(), 4);
        assert_eq!(s.webhooks.retry_for, Duration::from_secs(600));
        let ok = parse(
            "[webhooks]\nurl = \"https://hooks.example.com/x\"\nsecret = \"s\"\nevents = [\"user_left\"]\nretry_for = \"1m\"",
        )
        .unwrap();
        assert_eq!(ok.webhooks.events, ["user_left"]);
        for (toml, key, what) in [
            ("url = \"ftp://x/\"\nsecret = \"s\"", "webhooks.url", "http"),
            (
                "url = \"/relative\"\nsecret = \"s\"",
                "webhooks.url",
                "http",
            ),
            ("url = \"http://x/\"", "webhooks.secret", "must be set"),
            (
                "url = \"http://x/\"\nsecret = \"s\"\nevents = [\"user_kicked\"]",
                "webhooks.events",
                "user_kicked",
            ),
            (
                "url = \"http://x/\"\nsecret = \"s\"\nevents = []",
                "webhooks.events",
                "at least one",
            ),
            (
                "url = \"http://x/\"\nsecret = \"s\"\nmax_backlog = 0",
                "webhooks.max_backlog",
                "greater than 0",
            ),
        ] {
            let err = parse(&format!("[webhooks]\n{toml}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains(what), "{toml}: {err}");
            assert!(!err.contains("\"s\""), "the secret is not quoted: {err}");
        }
    }

    #[test]
    fn durations_are_human() {
        let s = parse("[timeouts]\nping_interval = \"1m 5s\"\npong_timeout = \"250ms\"").unwrap();
        assert_eq!(s.timeouts.ping_interval, Duration::from_secs(65));
        assert_eq!(s.timeouts.pong_timeout, Duration::from_millis(250));
    }

    #[test]
    fn errors_name_the_key() {
        let err = parse("[limits]\nmax_conections = 5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_conections"), "{err}");
        let err = parse("[timeouts]\nping_interval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("timeouts.ping_interval") && err.contains("soon"),
            "{err}"
        );
        let err = parse("[limits]\nmax_connections = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_connections"), "{err}");
        let err = parse("[limits]\nmax_connections = \"many\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_connections"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let s = parse("[auth]\nhs256_secrets = [\"0123456789abcdef-secret\"]").unwrap();
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn auth_keys_origins_and_proxies() {
        let s = parse(
            r#"
            [auth]
            public_key_files = ["keys/a.pem", { path = "/etc/wshub/b.pem", kid = "b" }]
            jwks_file = "jwks.json"
            allowed_origins = ["https://app.example.com", "*.example.org"]
            require_origin = true
            trusted_proxies = ["10.0.0.0/8", "::1"]
            "#,
        )
        .unwrap();
        assert_eq!(
            s.auth.public_key_files,
            [
                PublicKeyFile::Path("keys/a.pem".into()),
                PublicKeyFile::WithKid {
                    path: "/etc/wshub/b.pem".into(),
                    kid: "b".to_owned()
                }
            ]
        );
        assert_eq!(s.auth.public_key_files[1].kid(), Some("b"));
        assert_eq!(s.auth.jwks_file.as_deref(), Some(Path::new("jwks.json")));
        assert!(s.auth.require_origin);
        assert!(!s.is_development(), "public keys are keys");
        assert!(parse("[auth]\njwks_file = \"j.json\"").is_ok_and(|s| !s.is_development()));
    }

    #[test]
    fn auth_errors_name_the_key() {
        let cases = [
            (
                "allowed_origins = [\"https://app.example.com/\"]",
                "auth.allowed_origins",
            ),
            ("allowed_origins = [\"null\"]", "auth.allowed_origins"),
            (
                "trusted_proxies = [\"10.0.0.0/40\"]",
                "auth.trusted_proxies",
            ),
            (
                "public_key_files = [{ path = \"a.pem\", kid = \"\" }]",
                "auth.public_key_files[0]",
            ),
            ("public_key_files = [\"\"]", "auth.public_key_files[0]"),
            (
                "public_key_files = [{ path = \"a.pem\", kidd = \"x\" }]",
                "public_key_files",
            ),
            ("trusted_proxy = []", "trusted_proxy"),
        ];
        for (toml, key) in cases {
            let err = format!("{:#}", parse(&format!("[auth]\n{toml}")).unwrap_err());
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn redis_broker_keys() {
        let s = parse(
            r#"
            [broker]
            kind = "redis"
            redis_url = "rediss://:pw@cache.example.com:6380/2"
            key_prefix = "staging"
            pool_size = 4
            command_timeout = "500ms"
            presence_ttl = "15s"
            [history]
            size = 50
            "#,
        )
        .unwrap();
        let redis = s.redis_config();
        assert_eq!(redis.url, "rediss://:pw@cache.example.com:6380/2");
        assert_eq!((redis.key_prefix.as_str(), redis.pool_size), ("staging", 4));
        assert_eq!(redis.command_timeout, Duration::from_millis(500));
        assert_eq!(redis.presence_ttl, Duration::from_secs(15));
        assert_eq!(redis.history.size, 50);
        assert!(!format!("{s:?}").contains(":pw@"));
        let cases = [
            ("redis_url = \"http://x\"", "broker.redis_url"),
            ("key_prefix = \"a{b}\"", "broker.key_prefix"),
            ("pool_size = 0", "broker.pool_size"),
            ("presence_ttl = \"0s\"", "broker.presence_ttl"),
            ("pool = 2", "pool"),
        ];
        for (toml, key) in cases {
            let err = format!(
                "{:#}",
                parse(&format!("[broker]\nkind = \"redis\"\n{toml}")).unwrap_err()
            );
            assert!(err.contains(key), "{toml}: {err}");
        }
        // The memory broker ignores the Redis keys.
        assert!(parse("[broker]\npool_size = 0").is_ok());
    }

    #[test]
    fn redis_cluster_and_sentinel_keys() {
        let s = parse(
            r#"
            [broker]
            kind = "redis"
            redis_cluster = ["redis://:pw@10.0.0.1:7000", "redis://:pw@10.0.0.2:7000"]
            "#,
        )
        .unwrap();
        let redis = s.redis_config();
        assert_eq!(redis.cluster.len(), 2);
        assert!(redis.sentinels.is_empty());
        assert!(!format!("{s:?}").contains(":pw@"));
        assert!(!format!("{redis:?}").contains(":pw@"));
        let s = parse(
            r#"
            [broker]
            kind = "redis"
            redis_sentinels = ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"]
            redis_sentinel_master = "main"
            redis_sentinel_master_password = "master-pw-K8"
            "#,
        )
        .unwrap();
        let redis = s.redis_config();
        assert_eq!(redis.sentinels.len(), 2);
        assert_eq!(redis.sentinel_master, "main");
        assert_eq!(redis.sentinel_master_password, "master-pw-K8");
        assert!(!format!("{s:?}{redis:?}").contains("master-pw-K8"));
        // Exactly one place: one Redis, a cluster, or sentinels.
        let cases = [
            (
                "redis_url = \"redis://a\"\nredis_cluster = [\"redis://b:7000\"]",
                "set one of them",
            ),
            (
                "redis_cluster = [\"redis://b:7000\"]\nredis_sentinels = [\"redis://c:26379\"]\nredis_sentinel_master = \"m\"",
                "set one of them",
            ),
            (
                "redis_sentinels = [\"redis://c:26379\"]",
                "broker.redis_sentinel_master",
            ),
            (
                "redis_sentinel_master = \"m\"",
                "broker.redis_sentinel_master",
            ),
            (
                "redis_sentinel_master_password = \"pw-K9\"",
                "broker.redis_sentinel_master_password",
            ),
            (
                "redis_cluster = [\"http://:pw-K9@b:7000\"]",
                "broker.redis_cluster",
            ),
            (
                "redis_sentinels = [\"nope\"]\nredis_sentinel_master = \"m\"",
                "broker.redis_sentinels",
            ),
        ];
        for (toml, key) in cases {
            let err = format!(
                "{:#}",
                parse(&format!("[broker]\nkind = \"redis\"\n{toml}")).unwrap_err()
            );
            assert!(err.contains(key), "{toml}: {err}");
            assert!(!err.contains("pw-K9"), "{toml}: {err}");
        }
        // Unset: the default URL.
        assert_eq!(
            parse("[broker]\nkind = \"redis\"")
                .unwrap()
                .redis_config()
                .url,
            DEFAULT_REDIS_URL
        );
    }

    #[test]
    fn history_budgets() {
        let s = parse("").unwrap();
        assert_eq!(s.history.max_bytes, 4 << 20);
        assert_eq!(s.history.max_total_bytes, 256 << 20);
        let s = parse("[history]\nmax_bytes = 65536\nmax_total_bytes = 1048576").unwrap();
        assert_eq!(
            (s.history.max_bytes, s.history.max_total_bytes),
            (65_536, 1 << 20)
        );
        assert_eq!(s.redis_config().history.max_bytes, 65_536);
        assert_eq!(s.redis_config().max_total_bytes, 1 << 20);
        for key in ["max_bytes", "max_total_bytes"] {
            let err = format!("{:#}", parse(&format!("[history]\n{key} = 0")).unwrap_err());
            assert!(err.contains(&format!("history.{key}")), "{err}");
        }
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let mut s = parse("").unwrap();
        assert_eq!(s.resolve(Path::new("k.pem")), Path::new("k.pem"));
        s.source = Some(PathBuf::from("/etc/wshub/wshub.toml"));
        assert_eq!(s.resolve(Path::new("k.pem")), Path::new("/etc/wshub/k.pem"));
        assert_eq!(s.resolve(Path::new("/k.pem")), Path::new("/k.pem"));
    }
}
