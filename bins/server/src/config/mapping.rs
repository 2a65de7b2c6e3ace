//! From [`Settings`] to the configurations of the libraries: `ws-core`'s limits,
//! `ws-transport`'s sizes, the Redis broker's keys and `ws-auth`'s layers. Nothing here reads
//! a file; validation (in the parent module) has already named any key that cannot be used.

use anyhow::Context;
use tracing::warn;
use ws_auth::{
    ApiKeyLayer, CheckOriginLayer, HandshakeRateLimitLayer, SetClientIpLayer, TrustedProxies,
};
use ws_broker_redis::RedisConfig;
use ws_core::history::HistoryConfig;
use ws_core::namespace::{NamespaceOverrides, NamespacePolicy, Namespaces};
use ws_core::{AdmissionConfig, ClientConfig, HubConfig};
use ws_transport::{RemoteAddr, TransportConfig};

use super::Settings;

impl Settings {
    /// `server.shards`: 0 picks four per core.
    pub fn shard_count(&self) -> usize {
        match self.server.shards {
            0 => std::thread::available_parallelism().map_or(4, |n| n.get() * 4),
            n => n,
        }
    }

    /// The hub's send-queue limits (`limits.send_queue_*`).
    pub fn hub_config(&self) -> HubConfig {
        let mut config = HubConfig::default();
        config.send_queue_frames = self.limits.send_queue_frames;
        config.send_queue_bytes = self.limits.send_queue_bytes;
        config.presence_events = self.presence.events;
        config.presence_max_members = self.presence.max_members_for_events;
        config.namespaces = self.namespaces_or_defaults();
        config
    }

    /// The `[namespaces.<name>]` tables over the global settings, validated: an error names
    /// the key at fault (`namespaces.chat.history_size`).
    pub fn namespace_policies(&self) -> anyhow::Result<Namespaces> {
        let defaults = NamespacePolicy::new(
            self.history.size,
            self.history.ttl,
            self.presence.events,
            self.presence.max_members_for_events,
            self.limits.allow_client_publish,
        );
        let overrides = self.namespaces.iter().map(|(name, table)| {
            let mut o = NamespaceOverrides::default();
            o.history_size = table.history_size;
            o.history_ttl = table.history_ttl;
            o.presence_events = table.presence;
            o.max_members_for_events = table.max_members_for_events;
            o.allow_client_publish = table.allow_client_publish;
            (name.clone(), o)
        });
        Namespaces::new(defaults, overrides).map_err(|e| anyhow::anyhow!("{}: {e}", e.key()))
    }

    /// [`Settings::namespace_policies`] after validation (which `load` did).
    fn namespaces_or_defaults(&self) -> Namespaces {
        self.namespace_policies().unwrap_or_else(|_| {
            Namespaces::defaults_only(NamespacePolicy::new(
                self.history.size,
                self.history.ttl,
                self.presence.events,
                self.presence.max_members_for_events,
                self.limits.allow_client_publish,
            ))
        })
    }

    /// The connection limits (`limits.max_connections*`).
    pub fn admission_config(&self) -> AdmissionConfig {
        let mut config = AdmissionConfig::default();
        config.max_connections = self.limits.max_connections;
        config.max_connections_per_user = self.limits.max_connections_per_user;
        config
    }

    /// Each connection's core (`[timeouts]`, `[limits]`) and the presence events.
    pub fn transport_config(&self) -> TransportConfig {
        let mut client = ClientConfig::default();
        client.ping_interval = self.timeouts.ping_interval;
        client.pong_timeout = self.timeouts.pong_timeout;
        client.write_timeout = self.timeouts.write;
        client.close_timeout = self.timeouts.close;
        client.max_message_bytes = self.limits.max_message_bytes;
        // A namespace may allow what the global setting refuses: the core lets publishes
        // through when any does, and the connection checks the project's namespace.
        client.allow_publish = self.limits.allow_client_publish
            || self
                .namespaces
                .values()
                .any(|n| n.allow_client_publish == Some(true));
        client.publish_rate = self.limits.client_publish_rate;
        client.request_rate = self.limits.client_request_rate;
        client.publish_window =
            u32::try_from(self.limits.client_publishes_in_flight).unwrap_or(u32::MAX);
        let mut config = TransportConfig::default();
        config.client = client;
        let subscriptions = &mut config.subscriptions;
        subscriptions.max_subscriptions = self.limits.max_subscriptions;
        // What a subscription may hold back while its recovery is read is bounded like the
        // send queue it would otherwise sit in.
        subscriptions.max_held_frames = self.limits.send_queue_frames;
        subscriptions.max_held_bytes = self.limits.send_queue_bytes;
        config.namespaces = self.namespaces_or_defaults();
        config
    }

    /// The memory broker's retention per project (`[history]`).
    pub fn history_config(&self) -> HistoryConfig {
        HistoryConfig {
            size: self.history.size,
            ttl: self.history.ttl,
            max_bytes: self.history.max_bytes,
        }
    }

    /// The Redis broker's configuration, from `[broker]` and `[history]`.
    pub fn redis_config(&self) -> RedisConfig {
        let mut config = RedisConfig::default();
        config.url = self
            .broker
            .redis_url
            .as_ref()
            .map_or_else(|| super::DEFAULT_REDIS_URL.to_owned(), |u| u.0.clone());
        config.cluster = self
            .broker
            .redis_cluster
            .iter()
            .map(|u| u.0.clone())
            .collect();
        config.sentinels = self
            .broker
            .redis_sentinels
            .iter()
            .map(|u| u.0.clone())
            .collect();
        config.sentinel_master = self.broker.redis_sentinel_master.clone();
        config.sentinel_master_password = self.broker.redis_sentinel_master_password.0.clone();
        config.key_prefix = self.broker.key_prefix.clone();
        config.pool_size = self.broker.pool_size;
        config.connect_timeout = self.broker.connect_timeout;
        config.command_timeout = self.broker.command_timeout;
        config.presence_ttl = self.broker.presence_ttl;
        config.history.size = self.history.size;
        config.history.ttl = self.history.ttl;
        config.history.max_bytes = self.history.max_bytes;
        config.namespaces = self.namespaces_or_defaults();
        config.max_total_bytes = self.history.max_total_bytes;
        config
    }

    /// Who the client of a handshake is: the TCP peer, or what `X-Forwarded-For` says when the
    /// peer is one of `auth.trusted_proxies`.
    ///
    /// # Errors
    ///
    /// A trusted proxy that cannot be parsed.
    pub fn client_ip_layer(&self) -> Result<SetClientIpLayer, ws_auth::ConfigError> {
        let trusted = TrustedProxies::parse(&self.auth.trusted_proxies)?;
        Ok(
            SetClientIpLayer::new(|ext| ext.get::<RemoteAddr>().map(|a| a.0.ip()))
                .trusted_proxies(trusted),
        )
    }

    /// `auth.allowed_origins` and `auth.require_origin`.
    ///
    /// # Errors
    ///
    /// An allowed origin that cannot be parsed.
    pub fn origin_layer(&self) -> Result<CheckOriginLayer, ws_auth::ConfigError> {
        Ok(CheckOriginLayer::allow(&self.auth.allowed_origins)?
            .require_origin(self.auth.require_origin))
    }

    /// `limits.handshake_rate_per_ip` (0: none); over the rate a handshake is only marked, and
    /// refused after authentication, unless it is a whole burst beyond (docs/decisions.md).
    pub fn handshake_rate_limit_layer(&self) -> Option<HandshakeRateLimitLayer> {
        let rate = self.limits.handshake_rate_per_ip;
        (rate > 0).then(|| HandshakeRateLimitLayer::new(rate).defer_rejection(true))
    }

    /// The keys of the HTTP API (`auth.api_keys`) and of `/api/admin/*`
    /// (`auth.admin_api_keys`, or the API keys when empty, which is logged as a warning).
    ///
    /// # Errors
    ///
    /// A key that cannot be parsed, named by its configuration key.
    pub fn api_key_layers(&self) -> anyhow::Result<(ApiKeyLayer, ApiKeyLayer)> {
        let api_keys = ApiKeyLayer::new(self.auth.api_keys.iter().map(|k| k.0.as_str()))
            .context("auth.api_keys")?;
        // Admin actions (revoking users, closing projects) deserve keys of their own; without
        // them, whoever may publish may also disconnect everyone, which operators should know.
        let admin_keys = if self.auth.admin_api_keys.is_empty() {
            warn!(
                "auth.admin_api_keys is empty: the keys of auth.api_keys also open /api/admin/*; \
                 set auth.admin_api_keys to keep publishers out of the admin routes"
            );
            api_keys.clone()
        } else {
            ApiKeyLayer::new(self.auth.admin_api_keys.iter().map(|k| k.0.as_str()))
                .context("auth.admin_api_keys")?
        };
        Ok((api_keys, admin_keys))
    }
}
