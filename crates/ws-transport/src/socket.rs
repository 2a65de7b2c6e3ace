//! The socket under hyper and then under the WebSocket, and the upgrade that hands it over.
//!
//! Two savings on every handshake, both from owning the socket's type instead of hyper's
//! type-erased `Upgraded`:
//!
//! - **The 101 leaves with the first frame.** hyper writes and flushes the `101 Switching
//!   Protocols` answer on its own, and the welcome frame follows a moment later: two
//!   segments, and on loopback two trips through the receiver's TCP input. [`Socket`] holds
//!   a 101 back (the only answer after which the server always writes at once) and sends
//!   it with the first write after the hand-off, in one `writev`. What TCP_CORK does in the
//!   kernel, without two extra system calls.
//! - **No boxed, rewinding stream under every frame.** After the upgrade the socket is taken
//!   back from hyper ([`hyper::upgrade::Upgraded::downcast`]) with the bytes hyper had read
//!   past the request, which tungstenite reads first.
//!
//! - **No buffer kept by an idle connection.** After the hand-off, tungstenite hands each
//!   frame down as it is written (its own write buffer is off for these connections), and
//!   [`Socket`] gathers them until the flush, which writes them in one system call and then
//!   frees the buffer. tungstenite would keep its buffer at the size of the largest burst
//!   the connection ever wrote (a v2 client's 20 subscribe answers: 4 KiB, for as long as
//!   the connection lives); here an idle connection holds no gathered frames. Data frames
//!   skip tungstenite altogether: the write pump encodes them into this buffer
//!   ([`Socket::hold_frame`], [`crate::wire`]), one copy of the shared payload each.
//!
//! Connections of another kind (TLS) keep hyper's `Upgraded`, send the 101 on their own and
//! keep tungstenite's write buffer.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_tungstenite::WebSocketStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tungstenite::error::ProtocolError;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::Role;

use crate::config::TransportConfig;
use crate::{tungstenite, wire};

/// An upgraded WebSocket connection, whatever carries it.
pub(crate) type WsStream = WebSocketStream<Io>;

/// What an upgraded connection runs on.
#[derive(Debug)]
pub(crate) enum Io {
    /// A plain TCP connection accepted by [`crate::serve`]: ours again after the upgrade.
    Tcp(Socket),
    /// Anything else (TLS): hyper's upgraded stream.
    Upgraded(TokioIo<Upgraded>),
}

/// A TCP connection that holds a `101 Switching Protocols` answer back until the first
/// frame after it, so both leave in one segment.
///
/// While hyper owns the socket, a flush leaves a held 101 where it is (hyper flushes its
/// answer before the hand-off). Once handed over ([`Socket::handed_over`]), the held bytes
/// go out before anything else with the next write, read, flush or shutdown, so the peer
/// gets its 101 however the connection continues.
#[derive(Debug)]
pub(crate) struct Socket {
    tcp: TcpStream,
    /// What is written but not yet sent: the 101 answer, then the frames written since the
    /// last flush (empty: nothing held, no allocation).
    held: Vec<u8>,
    /// The WebSocket owns the socket now: a flush sends what is held.
    handed_over: bool,
}

/// Where a 101 answer starts; hyper writes the head in one buffer (no vectored writes).
const SWITCHING_PROTOCOLS: &[u8] = b"HTTP/1.1 101 ";

/// Most bytes gathered before a flush: beyond, a write goes to the socket (with what is
/// held) at once, so a burst larger than this costs a system call per this many bytes and
/// never more memory.
const GATHER_BYTES: usize = 64 * 1024;

impl Socket {
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            held: Vec::new(),
            handed_over: false,
        }
    }

    fn handed_over(mut self) -> Self {
        self.handed_over = true;
        self
    }

    /// Writes what is held, then `buf`, in as few system calls as the socket allows.
    /// Returns how much of `buf` was written.
    fn poll_write_after_held(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        while !self.held.is_empty() {
            let slices = [IoSlice::new(&self.held), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut self.tcp).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n >= self.held.len() {
                let of_buf = n - self.held.len();
                self.held = Vec::new();
                if of_buf > 0 || buf.is_empty() {
                    return Poll::Ready(Ok(of_buf));
                }
            } else {
                self.held.drain(..n);
            }
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    /// Makes room in the gather buffer for `bytes` more: when they would take it past
    /// [`GATHER_BYTES`], what is held goes to the socket first (Pending while the socket
    /// takes no more). A frame larger than that is held whole, alone.
    pub(crate) fn poll_room(&mut self, cx: &mut Context<'_>, bytes: usize) -> Poll<io::Result<()>> {
        if self.held.is_empty() || self.held.len() + bytes <= GATHER_BYTES {
            return Poll::Ready(Ok(()));
        }
        self.poll_release(cx)
    }

    /// Appends a data frame carrying `payload` to what the next flush sends: one copy of
    /// the shared payload, none in tungstenite ([`crate::wire`]). Call
    /// [`Socket::poll_room`] first.
    pub(crate) fn hold_frame(&mut self, opcode: wire::Opcode, payload: &[u8]) {
        debug_assert!(self.handed_over, "frames are written after the hand-off");
        wire::encode(&mut self.held, opcode, payload);
    }

    /// Sends what is held, if anything.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_write_after_held(cx, &[]))?;
        Poll::Ready(Ok(()))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Best effort for a connection dropped right after its 101: the answer still goes.
        if !self.held.is_empty() {
            let _ = self.tcp.try_write(&self.held);
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Whoever reads after the hand-off expects the peer to have its 101 (the echo reads
        // first). A full send buffer (Pending) registers the write interest and the read goes
        // on; before the hand-off, hyper's reads leave the 101 held.
        if this.handed_over
            && let Poll::Ready(Err(e)) = this.poll_release(cx)
        {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let hold = if this.handed_over {
            this.held.len() + buf.len() <= GATHER_BYTES
        } else {
            this.held.is_empty() && buf.starts_with(SWITCHING_PROTOCOLS)
        };
        if hold {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        this.poll_write_after_held(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.handed_over {
            ready!(this.poll_release(cx))?;
        }
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Upgraded(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl Io {
    /// The plain TCP socket under the WebSocket, whose gather buffer the write pump fills
    /// with data frames itself; `None` for other transports (TLS), whose frames all go
    /// through tungstenite.
    pub(crate) fn socket(&mut self) -> Option<&mut Socket> {
        match self {
            Self::Tcp(s) => Some(s),
            Self::Upgraded(_) => None,
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Upgraded(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Upgraded(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Upgraded(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// An accepted upgrade: resolves to the WebSocket once hyper has written the 101.
///
/// It holds the transport's configuration by `Arc` (16 bytes with the upgrade), not
/// tungstenite's 64-byte `WebSocketConfig`: a connection's task keeps what it was spawned
/// with for its whole life (an async block's captures are never overlapped with its later
/// state), so every byte here is a byte per idle connection.
#[derive(Debug)]
pub(crate) struct PendingUpgrade {
    on_upgrade: OnUpgrade,
    config: Arc<TransportConfig>,
}

/// Answers a WebSocket handshake (the caller checked the request) with a 101 and the
/// future of the upgraded connection.
pub(crate) fn upgrade<B>(
    req: &mut Request<B>,
    config: &Arc<TransportConfig>,
) -> Result<(Response<Full<Bytes>>, PendingUpgrade), ProtocolError> {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(ProtocolError::MissingSecWebSocketKey)?;
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| ProtocolError::MissingSecWebSocketKey)?;
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    let pending = PendingUpgrade {
        on_upgrade: hyper::upgrade::on(req),
        config: Arc::clone(config),
    };
    Ok((response, pending))
}

impl PendingUpgrade {
    /// Waits for hyper to write the 101 and hand the connection over.
    pub(crate) async fn finish(self) -> Result<WsStream, hyper::Error> {
        let upgraded = self.on_upgrade.await?;
        let websocket = self.config.websocket();
        let (io, read, config) = match upgraded.downcast::<TokioIo<Socket>>() {
            // The socket gathers the frames until the flush: tungstenite's own buffer would
            // only copy them once more, and keep its largest size for good.
            Ok(parts) => (
                Io::Tcp(parts.io.into_inner().handed_over()),
                parts.read_buf,
                websocket.write_buffer_size(0),
            ),
            Err(upgraded) => (
                Io::Upgraded(TokioIo::new(upgraded)),
                Bytes::new(),
                websocket,
            ),
        };
        let config = Some(config);
        Ok(if read.is_empty() {
            WebSocketStream::from_raw_socket(io, Role::Server, config).await
        } else {
            // Frames the peer sent right behind its request, already read by hyper.
            WebSocketStream::from_partially_read(io, read.to_vec(), Role::Server, config).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    const ANSWER: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
    const FRAME: &[u8] = b"\x81\x05hello";

    /// A loopback pair: our `Socket` and a blocking client whose reads are system calls
    /// (loopback delivers a segment before the sender's system call returns).
    async fn pair() -> (Socket, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Socket::new(server), client)
    }

    fn nothing_to_read(client: &std::net::TcpStream) -> bool {
        client.set_nonblocking(true).unwrap();
        let got = (&*client).read(&mut [0; 64]);
        client.set_nonblocking(false).unwrap();
        matches!(got, Err(e) if e.kind() == ErrorKind::WouldBlock)
    }

    #[tokio::test]
    async fn a_101_waits_for_the_first_frame_and_leaves_with_it() {
        let (mut socket, mut client) = pair().await;
        socket.write_all(ANSWER).await.unwrap();
        socket.flush().await.unwrap(); // hyper's flush, before the hand-off
        assert!(nothing_to_read(&client), "the 101 left alone");

        let mut socket = socket.handed_over();
        socket.write_all(FRAME).await.unwrap();
        socket.flush().await.unwrap();
        let mut got = vec![0; 1024];
        let n = client.read(&mut got).unwrap();
        assert_eq!(&got[..n], [ANSWER, FRAME].concat(), "one read: one segment");
    }

    #[tokio::test]
    async fn frames_gather_until_the_flush_and_the_buffer_is_freed() {
        let (socket, mut client) = pair().await;
        let mut socket = socket.handed_over();
        for _ in 0..20 {
            socket.write_all(FRAME).await.unwrap();
        }
        assert!(nothing_to_read(&client), "nothing leaves before the flush");
        socket.flush().await.unwrap();
        assert_eq!(socket.held.capacity(), 0, "an idle socket keeps no buffer");
        let mut got = vec![0; 1024];
        let n = client.read(&mut got).unwrap();
        assert_eq!(&got[..n], FRAME.repeat(20), "one read: one segment");

        // Past GATHER_BYTES a write goes out without waiting for the flush.
        let big = vec![b'x'; GATHER_BYTES];
        socket.write_all(FRAME).await.unwrap();
        socket.write_all(&big).await.unwrap();
        assert!(socket.held.len() <= GATHER_BYTES);
        socket.flush().await.unwrap();
        let mut got = vec![0; FRAME.len() + GATHER_BYTES];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got[..FRAME.len()], FRAME);
        assert!(got[FRAME.len()..].iter().all(|&b| b == b'x'));
    }

    #[tokio::test]
    async fn after_the_hand_off_a_read_or_a_flush_sends_the_101() {
        let (mut socket, mut client) = pair().await;
        socket.write_all(ANSWER).await.unwrap();
        let mut socket = socket.handed_over();
        // The echo reads first: its read must not leave the peer waiting for the 101.
        let mut one = [0; 1];
        let read = std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut one);
            Poll::Ready(Pin::new(&mut socket).poll_read(cx, &mut buf))
        })
        .await;
        assert!(read.is_pending(), "the peer sent nothing yet");
        let mut got = vec![0; ANSWER.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, ANSWER);

        let (mut socket, mut client) = pair().await;
        socket.write_all(ANSWER).await.unwrap();
        let mut socket = socket.handed_over();
        socket.flush().await.unwrap();
        let mut got = vec![0; ANSWER.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, ANSWER);
    }

    /// The write pump's path (`pump::write_all`): data frames encoded into the gather
    /// buffer after the held 101, then a close through tungstenite after them, in order.
    #[tokio::test]
    async fn frames_written_by_the_pumps_follow_the_101_and_precede_the_close() {
        let (mut socket, mut client) = pair().await;
        socket.write_all(ANSWER).await.unwrap();
        let mut ws =
            WebSocketStream::from_raw_socket(Io::Tcp(socket.handed_over()), Role::Server, None)
                .await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let welcome = [tungstenite::Message::text("hello")];
        crate::pump::write_all(&mut ws, welcome, deadline)
            .await
            .unwrap()
            .unwrap();
        let mut got = vec![0; ANSWER.len() + FRAME.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, [ANSWER, FRAME].concat());

        let big = "x".repeat(70_000);
        let ws = std::sync::Mutex::new(Box::new(ws));
        let messages = [
            tungstenite::Message::text(big.clone()),
            tungstenite::Message::binary(&b"\x01\x02"[..]),
            crate::pump::close_message(&ws_core::Close::normal()),
        ];
        crate::pump::write_all(&ws, messages, deadline)
            .await
            .unwrap()
            .unwrap();
        let mut expected = Vec::new();
        wire::encode(&mut expected, wire::Opcode::Text, big.as_bytes());
        wire::encode(&mut expected, wire::Opcode::Binary, b"\x01\x02");
        let mut got = vec![0; expected.len()];
        client.read_exact(&mut got).unwrap();
        assert!(got == expected, "the data frames, whole and in order");
        let mut close = [0; 2];
        client.read_exact(&mut close).unwrap();
        assert_eq!(close[0], 0x88, "then tungstenite's close frame");
    }

    #[tokio::test]
    async fn a_socket_dropped_with_a_held_101_still_sends_it() {
        let (mut socket, mut client) = pair().await;
        socket.write_all(ANSWER).await.unwrap();
        drop(socket);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, ANSWER);
    }

    #[tokio::test]
    async fn other_answers_are_written_at_once() {
        let (mut socket, mut client) = pair().await;
        let answer = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
        socket.write_all(answer).await.unwrap();
        let mut got = vec![0; answer.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, answer);
    }
}
