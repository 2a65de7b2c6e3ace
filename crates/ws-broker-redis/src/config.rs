//! The broker's configuration: [`RedisConfig`], its validation ([`ConfigError`]) and
//! [`redact`], which keeps a Redis URL's password out of the logs.

use std::fmt;
use std::time::Duration;

use redis::RedisError;
use ws_core::ProjectId;
use ws_core::history::HistoryConfig;
use ws_core::namespace::{NamespacePolicy, Namespaces};

/// How the broker reaches Redis and what it keeps there.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, or `rediss://…` for TLS (checked against the
    /// system's root certificates; `SSL_CERT_FILE` names another bundle). Unused when
    /// `cluster` or `sentinels` is set.
    pub url: String,
    /// Seed nodes of a Redis Cluster (`redis://[user:password@]host:port`, `rediss://` for
    /// TLS); empty: not a cluster. The others are found from them.
    pub cluster: Vec<String>,
    /// Sentinels watching the master to use (`redis://host:26379`); empty: no Sentinel.
    pub sentinels: Vec<String>,
    /// The name the sentinels know the master by (`sentinel monitor <name> …`).
    pub sentinel_master: String,
    /// The password of the master (and its replicas) the sentinels name (`requirepass`);
    /// empty: none. The sentinels' own passwords go in their URLs.
    pub sentinel_master_password: String,
    /// Prefixes every key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Multiplexed connections for commands (the pub/sub connection comes on top).
    pub pool_size: usize,
    /// How long connecting to Redis may take.
    pub connect_timeout: Duration,
    /// How long one command may take before the broker counts Redis as unavailable.
    pub command_timeout: Duration,
    /// How long a node's presence announcement lives without a refresh: the users of a
    /// crashed node leave the cluster's presence within this time.
    pub presence_ttl: Duration,
    /// History kept per project.
    pub history: HistoryConfig,
    /// `[namespaces.<name>]` overrides of `history`'s size and ttl for the projects of a
    /// namespace (SPEC §12).
    pub namespaces: Namespaces,
    /// History kept across all projects of the deployment (`key_prefix`), in bytes of
    /// entries: over it, the oldest idle projects are freed.
    pub max_total_bytes: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".to_owned(),
            cluster: Vec::new(),
            sentinels: Vec::new(),
            sentinel_master: String::new(),
            sentinel_master_password: String::new(),
            key_prefix: "wshub".to_owned(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(30),
            history: HistoryConfig::default(),
            namespaces: Namespaces::defaults_only(NamespacePolicy::default()),
            max_total_bytes: ws_transport::broker::DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

impl RedisConfig {
    /// The longest any project keeps history: the global ttl or a namespace's longer one.
    pub(crate) fn longest_history_ttl(&self) -> Duration {
        self.namespaces.longest_history_ttl(self.history.ttl)
    }

    /// The retention of `project`: its namespace's size and ttl when it has a table.
    pub(crate) fn history_for(&self, project: &ProjectId) -> HistoryConfig {
        self.namespaces.history_config(project, self.history)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field(
                "cluster",
                &self.cluster.iter().map(|u| redact(u)).collect::<Vec<_>>(),
            )
            .field(
                "sentinels",
                &self.sentinels.iter().map(|u| redact(u)).collect::<Vec<_>>(),
            )
            .field("sentinel_master", &self.sentinel_master)
            .field(
                "sentinel_master_password",
                &if self.sentinel_master_password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("presence_ttl", &self.presence_ttl)
            .field("history", &self.history)
            .field("namespaces", &self.namespaces)
            .field("max_total_bytes", &self.max_total_bytes)
            .finish()
    }
}

/// A Redis URL without its password, for logs.
///
/// The URL is read by redis' own parser (`redis::parse_redis_url`), so what is hidden is
/// what redis would send as a password: the userinfo's password of `redis://`, `rediss://`,
/// `valkey://` and `valkeys://`, and the `pass` query parameter of `redis+unix://`,
/// `valkey+unix://` and `unix://` (its name decoded as redis decodes it: `%70ass` is `pass`).
/// `password` is hidden as well, in every scheme: redis ignores it, but whoever wrote it
/// meant a secret. A URL that does not parse keeps only its scheme, since where its
/// password ends cannot be known. The username is not a secret and stays.
pub fn redact(url: &str) -> String {
    const HIDDEN: &str = "<redacted>";
    let Some(parsed) = redis::parse_redis_url(url) else {
        return match url.split_once("://") {
            Some((scheme, _))
                if scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
            {
                format!("{scheme}://{HIDDEN}")
            }
            _ => HIDDEN.to_owned(),
        };
    };
    // The serialisation, not the input: it is what the parser read, normalised.
    let mut out = parsed.as_str().to_owned();
    if let Some(password) = parsed.password() {
        // `scheme://user:password@…`: with a password, the serialisation always has this shape.
        let start = parsed.scheme().len() + "://".len() + parsed.username().len() + 1;
        let end = start + password.len();
        if out.get(start..end) != Some(password) {
            return format!("{}://{HIDDEN}", parsed.scheme());
        }
        out.replace_range(start..end, HIDDEN);
    }
    if let Some(query) = parsed.query() {
        // Split as `url::form_urlencoded::parse` does, which redis reads the query with.
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_password_name(name) => format!("{name}={HIDDEN}"),
                None if is_password_name(pair) => format!("{pair}={HIDDEN}"),
                _ => pair.to_owned(),
            })
            .collect();
        let start = out.find('?').map_or(out.len(), |i| i + 1);
        let end = start + query.len();
        if out.get(start..end) != Some(query) {
            return format!("{}://{HIDDEN}", parsed.scheme());
        }
        out.replace_range(start..end, &redacted.join("&"));
    }
    out
}

/// Whether a query parameter's name, still form-encoded, names a password.
fn is_password_name(encoded: &str) -> bool {
    let mut name = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.bytes();
    while let Some(b) = bytes.next() {
        name.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [bytes.next(), bytes.next()];
                let digits = hex.map(|d| d.and_then(|d| char::from(d).to_digit(16)));
                match digits {
                    [Some(hi), Some(lo)] => (hi * 16 + lo) as u8,
                    // Malformed escapes are kept as they are by the decoder: not a password name.
                    _ => return false,
                }
            }
            b => b,
        });
    }
    name.eq_ignore_ascii_case(b"pass") || name.eq_ignore_ascii_case(b"password")
}

/// Why the broker cannot start: the configuration is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL does not parse (or names TLS in a build without it); fix `url`.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] RedisError),
    /// Braces would break the key layout; pick another `key_prefix`.
    #[error("the key prefix must not contain '{{' or '}}'")]
    KeyPrefix,
    /// At least one command connection is needed.
    #[error("the pool size must be at least 1")]
    PoolSize,
    /// Zero durations would make every command fail.
    #[error("{0} must be longer than 0s")]
    Zero(Field),
    /// A cluster seed URL does not parse, or the seeds do not make a cluster client.
    #[error("invalid Redis Cluster seed: {0}")]
    Cluster(#[source] RedisError),
    /// A sentinel URL does not parse.
    #[error("invalid sentinel URL: {0}")]
    Sentinel(#[source] RedisError),
    /// `sentinels` without the master's name.
    #[error("sentinel_master must name the master the sentinels watch")]
    SentinelMaster,
    /// Both `cluster` and `sentinels` are set: the broker talks to one of them.
    #[error("set either cluster or sentinels, not both")]
    Topology,
}

impl ConfigError {
    /// The field of [`RedisConfig`] that is wrong, so that a caller can name its own key.
    pub fn field(&self) -> Field {
        match self {
            Self::Url(_) => Field::Url,
            Self::KeyPrefix => Field::KeyPrefix,
            Self::PoolSize => Field::PoolSize,
            Self::Zero(field) => *field,
            Self::Cluster(_) | Self::Topology => Field::Cluster,
            Self::Sentinel(_) => Field::Sentinels,
            Self::SentinelMaster => Field::SentinelMaster,
        }
    }
}

/// A field of [`RedisConfig`] that a [`ConfigError`] is about; displayed as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `url`.
    Url,
    /// `key_prefix`.
    KeyPrefix,
    /// `pool_size`.
    PoolSize,
    /// `connect_timeout`.
    ConnectTimeout,
    /// `command_timeout`.
    CommandTimeout,
    /// `presence_ttl`.
    PresenceTtl,
    /// `cluster`.
    Cluster,
    /// `sentinels`.
    Sentinels,
    /// `sentinel_master`.
    SentinelMaster,
}

impl Field {
    /// The field's name in [`RedisConfig`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::KeyPrefix => "key_prefix",
            Self::PoolSize => "pool_size",
            Self::ConnectTimeout => "connect_timeout",
            Self::CommandTimeout => "command_timeout",
            Self::PresenceTtl => "presence_ttl",
            Self::Cluster => "cluster",
            Self::Sentinels => "sentinels",
            Self::SentinelMaster => "sentinel_master",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl RedisConfig {
    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::KeyPrefix);
        }
        if self.pool_size == 0 {
            return Err(ConfigError::PoolSize);
        }
        for (field, value) in [
            (Field::ConnectTimeout, self.connect_timeout),
            (Field::CommandTimeout, self.command_timeout),
            (Field::PresenceTtl, self.presence_ttl),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(field));
            }
        }
        if !self.cluster.is_empty() && !self.sentinels.is_empty() {
            return Err(ConfigError::Topology);
        }
        if !self.cluster.is_empty() {
            for seed in &self.cluster {
                redis::Client::open(seed.as_str()).map_err(ConfigError::Cluster)?;
            }
            // Mixed TLS and plain seeds, or differing passwords, are the builder's to refuse.
            redis::cluster::ClusterClient::new(self.cluster.iter().map(String::as_str))
                .map_err(ConfigError::Cluster)?;
            return Ok(());
        }
        if !self.sentinels.is_empty() {
            for sentinel in &self.sentinels {
                redis::Client::open(sentinel.as_str()).map_err(ConfigError::Sentinel)?;
            }
            if self.sentinel_master.trim().is_empty() {
                return Err(ConfigError::SentinelMaster);
            }
            return Ok(());
        }
        redis::Client::open(self.url.as_str()).map_err(ConfigError::Url)?;
        Ok(())
    }

    /// Where the broker's Redis is, for logs: the URL, the cluster's seeds or the
    /// sentinels, passwords hidden.
    pub fn describe(&self) -> String {
        if !self.cluster.is_empty() {
            let seeds: Vec<String> = self.cluster.iter().map(|u| redact(u)).collect();
            format!("cluster {}", seeds.join(" "))
        } else if !self.sentinels.is_empty() {
            let sentinels: Vec<String> = self.sentinels.iter().map(|u| redact(u)).collect();
            format!(
                "sentinel master {} via {}",
                self.sentinel_master,
                sentinels.join(" ")
            )
        } else {
            redact(&self.url)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("redis://:s3cret@cache:6379/0"),
            "redis://:<redacted>@cache:6379/0"
        );
        assert_eq!(
            redact("rediss://app:s3cret@cache.example.com:6380"),
            "rediss://app:<redacted>@cache.example.com:6380"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        // Every form redis' URL parser (redis 1.8, `connection.rs`) reads a password from:
        // the userinfo of the TCP schemes, `pass=` in the query of the unix ones.
        let cases = [
            (
                "redis://app:s3cret@cache:6379/0",
                "redis://app:<redacted>@cache:6379/0",
            ),
            ("valkey://:s3cret@cache", "valkey://:<redacted>@cache"),
            (
                "valkeys://app:s3cret@cache/#insecure",
                "valkeys://app:<redacted>@cache/#insecure",
            ),
            // The last '@' ends the userinfo: an '@' in the password stays hidden.
            (
                "redis://:s3c@ret@cache:6379",
                "redis://:<redacted>@cache:6379",
            ),
            (
                "redis://:s3cret@cache?protocol=resp3",
                "redis://:<redacted>@cache?protocol=resp3",
            ),
            (
                "redis+unix:///run/redis.sock?pass=s3cret",
                "redis+unix:///run/redis.sock?pass=<redacted>",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&user=app&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&user=app&pass=<redacted>",
            ),
            (
                "unix:///run/redis.sock?pass=s3cret&db=2",
                "unix:///run/redis.sock?pass=<redacted>&db=2",
            ),
            (
                "valkey+unix:///v.sock?pass=s3cret",
                "valkey+unix:///v.sock?pass=<redacted>",
            ),
            // The parser decodes the query's names: `%70ass` is `pass`.
            (
                "unix:///r.sock?%70ass=s3cret",
                "unix:///r.sock?%70ass=<redacted>",
            ),
            // Repeated: the parser keeps the last, both are hidden.
            (
                "unix:///r.sock?pass=s3cret&pass=s3cret2",
                "unix:///r.sock?pass=<redacted>&pass=<redacted>",
            ),
            // Not read by redis 1.8, but plainly meant as a password: hidden too.
            (
                "unix:///r.sock?password=s3cret",
                "unix:///r.sock?password=<redacted>",
            ),
            (
                "redis://cache/0?pass=s3cret",
                "redis://cache/0?pass=<redacted>",
            ),
            ("unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact(url), redacted, "{url}");
            assert!(!redact(url).contains("s3c"), "{url}");
        }
        // What does not parse cannot be redacted piece by piece: only its scheme is kept.
        for url in [
            "redis://:s3cret@",
            "http://:s3cret@cache",
            ":s3cret@cache",
            "redis://:s3c ret@[::",
        ] {
            assert!(!redact(url).contains("s3c"), "{url}: {}", redact(url));
        }
        let config = RedisConfig {
            url: "redis://:s3cret@h/0".to_owned(),
            ..RedisConfig::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn configuration_is_checked() {
        let ok = RedisConfig::default();
        assert!(ok.validate().is_ok());
        let check = |f: fn(&mut RedisConfig)| {
            let mut c = RedisConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(check(|c| c.key_prefix = "a{b".to_owned()).contains("prefix"));
        assert!(check(|c| c.pool_size = 0).contains("pool size"));
        assert!(check(|c| c.command_timeout = Duration::ZERO).contains("command_timeout"));
        assert!(check(|c| c.url = "http://x".to_owned()).contains("invalid Redis URL"));
        let field = |f: fn(&mut RedisConfig)| {
            let mut c = RedisConfig::default();
            f(&mut c);
            c.validate().unwrap_err().field()
        };
        assert_eq!(field(|c| c.url = "http://x".to_owned()), Field::Url);
        assert_eq!(field(|c| c.key_prefix = "{".to_owned()), Field::KeyPrefix);
        assert_eq!(field(|c| c.pool_size = 0), Field::PoolSize);
        assert_eq!(
            field(|c| c.connect_timeout = Duration::ZERO),
            Field::ConnectTimeout
        );
        assert_eq!(
            field(|c| c.command_timeout = Duration::ZERO),
            Field::CommandTimeout
        );
        assert_eq!(
            field(|c| c.presence_ttl = Duration::ZERO),
            Field::PresenceTtl
        );
        let tls = RedisConfig {
            url: "rediss://:pw@cache.example.com:6380/0".to_owned(),
            ..RedisConfig::default()
        };
        assert!(tls.validate().is_ok());
    }

    #[test]
    fn cluster_and_sentinel_settings_are_checked() {
        let cluster = |seeds: &[&str]| RedisConfig {
            cluster: seeds.iter().map(|s| (*s).to_owned()).collect(),
            // Not used with a cluster, so not checked either.
            url: "http://ignored".to_owned(),
            ..RedisConfig::default()
        };
        assert!(
            cluster(&["redis://10.0.0.1:7000", "redis://:pw@10.0.0.2:7000"])
                .validate()
                .is_ok()
        );
        assert!(
            cluster(&["rediss://:pw@c1.example.com:7000"])
                .validate()
                .is_ok()
        );
        let e = cluster(&["redis://10.0.0.1:7000", "http://x"])
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), Field::Cluster);
        assert!(e.to_string().contains("Redis Cluster seed"), "{e}");
        let sentinel = |sentinels: &[&str], master: &str| RedisConfig {
            sentinels: sentinels.iter().map(|s| (*s).to_owned()).collect(),
            sentinel_master: master.to_owned(),
            ..RedisConfig::default()
        };
        assert!(
            sentinel(&["redis://10.0.0.1:26379"], "main")
                .validate()
                .is_ok()
        );
        let e = sentinel(&["redis://10.0.0.1:26379"], " ")
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), Field::SentinelMaster);
        let e = sentinel(&["nope"], "main").validate().unwrap_err();
        assert_eq!(e.field(), Field::Sentinels);
        let both = RedisConfig {
            cluster: vec!["redis://10.0.0.1:7000".to_owned()],
            ..sentinel(&["redis://10.0.0.1:26379"], "main")
        };
        assert_eq!(both.validate().unwrap_err().field(), Field::Cluster);
        // Passwords stay out of what is logged.
        let secret = RedisConfig {
            cluster: vec!["redis://:s3cret@10.0.0.1:7000".to_owned()],
            sentinels: vec!["redis://:s3cret@10.0.0.1:26379".to_owned()],
            sentinel_master_password: "s3cret".to_owned(),
            ..RedisConfig::default()
        };
        assert!(!format!("{secret:?}").contains("s3cret"));
        assert!(!secret.describe().contains("s3cret"));
        assert!(secret.describe().starts_with("cluster "));
    }
}
