//! What the transport needs to know: the core's limits plus socket-level sizes.

use std::time::Duration;

use ws_core::ClientConfig;

use crate::tungstenite::protocol::WebSocketConfig;

/// Transport settings. `Default` matches SPEC §7.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransportConfig {
    /// The per-connection core's limits and timers.
    pub client: ClientConfig,
    /// Initial capacity of a connection's read buffer. tungstenite's default (128 KiB)
    /// would cost that much RSS per idle connection; the buffer grows on demand.
    pub read_buffer_bytes: usize,
    /// Bytes buffered before tungstenite writes to the socket; a flush always writes all.
    pub write_buffer_bytes: usize,
    /// Frames the write pump takes from a send queue per write, so a stalled writer keeps
    /// the rest counted in the queue's depth.
    pub batch_frames: usize,
    /// How long a closing connection waits for the peer to read our close frame and hang up.
    pub linger: Duration,
    /// Whether members get `join`/`leave` presence frames.
    pub presence_events: bool,
    /// Above this many members a project gets no presence frames (N joins would cost N²).
    pub presence_max_members: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            read_buffer_bytes: 4 * 1024,
            write_buffer_bytes: 8 * 1024,
            batch_frames: 64,
            linger: Duration::from_secs(1),
            presence_events: true,
            presence_max_members: 1000,
        }
    }
}

impl TransportConfig {
    /// tungstenite's configuration: the message limit is enforced while reading, so an
    /// oversized message is refused before it is buffered whole.
    pub(crate) fn websocket(&self) -> WebSocketConfig {
        let max = self.client.max_message_bytes;
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes)
            .write_buffer_size(self.write_buffer_bytes)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }
}
