//! The configuration of SPEC §7: a TOML file, every key overridable from the environment as
//! `WSHUB__SECTION__KEY`, every default of the spec, unknown keys refused.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer};

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
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// Hub shards; 0 picks four per core.
    pub shards: usize,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            demo: false,
            tls_cert_file: None,
            tls_key_file: None,
            shards: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    pub hs256_secrets: Vec<Secret>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub leeway: Duration,
    pub allowed_origins: Vec<String>,
    pub require_origin: bool,
    pub allow_query_token: bool,
    pub api_keys: Vec<Secret>,
    pub enforce_expiry: bool,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            hs256_secrets: Vec::new(),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            allowed_origins: Vec::new(),
            require_origin: false,
            allow_query_token: true,
            api_keys: Vec::new(),
            enforce_expiry: true,
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
    pub handshake_rate_per_ip: u32,
    pub allow_client_publish: bool,
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
            handshake_rate_per_ip: 50,
            allow_client_publish: true,
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
}

impl Default for History {
    fn default() -> Self {
        Self {
            size: 1000,
            ttl: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Broker {
    pub kind: BrokerKind,
    pub redis_url: Secret,
    pub key_prefix: String,
}

impl Default for Broker {
    fn default() -> Self {
        Self {
            kind: BrokerKind::Memory,
            redis_url: Secret("redis://127.0.0.1:6379/0".to_owned()),
            key_prefix: "wshub".to_owned(),
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
                .with_list_parse_key("auth.allowed_origins"),
        );
        let settings: Self = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context(match file {
                Some(f) => format!(
                    "invalid configuration in {} or WSHUB__* variables",
                    f.display()
                ),
                None => "invalid configuration in WSHUB__* variables".to_owned(),
            })?;
        settings.validate()?;
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
            ("limits.send_queue_bytes", self.limits.send_queue_bytes),
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
        if self.broker.kind == BrokerKind::Redis {
            bail!("broker.kind = \"redis\" is not available yet in this build; use \"memory\"");
        }
        if self.server.tls_cert_file.is_some() || self.server.tls_key_file.is_some() {
            bail!(
                "server.tls_cert_file / server.tls_key_file: TLS is not available yet in this build; terminate TLS in front of wshub"
            );
        }
        Ok(())
    }

    /// Whether start-up must invent a secret: nothing to verify tokens with.
    pub fn is_development(&self) -> bool {
        self.auth.hs256_secrets.is_empty()
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
}
