//! What the transport needs to know: the core's limits plus socket-level sizes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ws_core::client::Protocol;
use ws_core::namespace::{NamespacePolicy, Namespaces};
use ws_core::{ClientConfig, SubscriptionsConfig};

use crate::tungstenite::protocol::WebSocketConfig;

/// Transport settings. `Default` matches SPEC §7.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransportConfig {
    /// The per-connection core's limits and timers.
    pub client: ClientConfig,
    /// Initial capacity of a connection's read buffer, and the most one read system call
    /// takes. tungstenite zero-fills it on the first read, so all of it is resident for
    /// every idle connection: its default (128 KiB) would cost that much per connection,
    /// 4 KiB alone would be the whole budget of one (SPEC: ≤ 4 KiB RSS per idle
    /// connection). The buffer grows to hold a long frame, which is then read 512 bytes
    /// per call: more system calls for large publishes, which are rare next to idle
    /// members.
    pub read_buffer_bytes: usize,
    /// Bytes buffered before tungstenite writes to the socket; a flush always writes all.
    pub write_buffer_bytes: usize,
    /// Frames the write pump takes from a send queue per write, so a stalled writer keeps
    /// the rest counted in the queue's depth.
    pub batch_frames: usize,
    /// How long a closing connection waits for the peer to read our close frame and hang up.
    pub linger: Duration,
    /// A v2 connection's subscription limits (`limits.max_subscriptions`).
    pub subscriptions: SubscriptionsConfig,
    /// The policy of each namespace (`[namespaces.<name>]`), for v2 requests.
    pub namespaces: Namespaces,
    /// `client` as the connections' cores share it, made at the first connection.
    shared_client: SharedClientConfigs,
}

/// The cores' configurations for v1 and v2 connections, one `Arc` each for all of them.
#[derive(Debug, Default)]
struct SharedClientConfigs(OnceLock<[Arc<ClientConfig>; 2]>);

impl Clone for SharedClientConfigs {
    /// Empty: a clone may be changed before its first connection, and makes its own.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            read_buffer_bytes: 512,
            write_buffer_bytes: 8 * 1024,
            batch_frames: 64,
            linger: Duration::from_secs(1),
            subscriptions: SubscriptionsConfig::default(),
            namespaces: Namespaces::defaults_only(NamespacePolicy::default()),
            shared_client: SharedClientConfigs::default(),
        }
    }
}

impl TransportConfig {
    /// The core's configuration for a connection speaking `protocol`: `client`, with its
    /// protocol set, in an `Arc` every such connection shares. Made from `client` at the
    /// first connection; the configuration is not changed after that (the server hands it
    /// to its connections in an `Arc`).
    pub(crate) fn client_for(&self, protocol: Protocol) -> Arc<ClientConfig> {
        let [v1, v2] = self.shared_client.0.get_or_init(|| {
            let with = |protocol| {
                let mut config = self.client.clone();
                config.protocol = protocol;
                Arc::new(config)
            };
            [with(Protocol::V1), with(Protocol::V2)]
        });
        Arc::clone(match protocol {
            Protocol::V2 => v2,
            _ => v1,
        })
    }

    /// tungstenite's configuration: the message limit is enforced while reading, so an
    /// oversized message is refused before it is buffered whole.
    pub(crate) fn websocket(&self) -> WebSocketConfig {
        let max = self.client.max_message_bytes;
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes)
            .write_buffer_size(self.write_buffer_bytes)
            .max_write_buffer_size(self.max_write_buffer_bytes())
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }

    /// The cap of tungstenite's write buffer. Our own frames never fill it (the write pump
    /// waits for the socket before it queues more), but tungstenite queues a pong for every
    /// ping while the socket is full: without a cap, a peer that sends pings and reads
    /// nothing grows the buffer without bound. At the cap, pongs are coalesced (the
    /// newest is kept, which RFC 6455 §5.5.3 allows) and our next frame fails as a stuck
    /// write. Room for the buffer, the largest message's frame twice and a presence list.
    fn max_write_buffer_bytes(&self) -> usize {
        self.write_buffer_bytes + (4 * self.client.max_message_bytes).max(256 * 1024)
    }
}
