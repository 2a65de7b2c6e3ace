//! Close codes and the close frame wshub sends: every close carries a code and a short reason.
//!
//! The table lives in `docs/close-codes.md`; each constant here says when wshub sends it.

use std::borrow::Cow;
use std::fmt;

/// A WebSocket close code (RFC 6455 §7.4) as wshub uses it.
///
/// ```
/// use ws_core::CloseCode;
/// assert_eq!(CloseCode::SLOW_CONSUMER.as_u16(), 4008);
/// assert!(CloseCode::GOING_AWAY.should_reconnect());
/// assert!(!CloseCode::NORMAL.should_reconnect());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the client asked to close, or the hub unregistered it (kicked, project closed).
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is draining (SIGTERM), or the peer stopped answering pings.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the WebSocket framing rules.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a binary frame where JSON text is expected.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: reserved; means "the close frame carried no code". Never sent.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: reserved; means "closed without a close frame". Never sent.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: a text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: malformed envelopes or publish-rate abuse, repeated.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message over `limits.max_message_bytes`.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1011: an unexpected server error.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1013: overloaded: a connection limit was reached or the broker is unavailable.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 4001: the token expired while the connection was open.
    pub const TOKEN_EXPIRED: Self = Self(4001);
    /// 4003: access was revoked.
    pub const ACCESS_REVOKED: Self = Self(4003);
    /// 4008: the client's send queue overflowed (slow consumer).
    pub const SLOW_CONSUMER: Self = Self(4008);

    /// Wraps a raw code.
    pub const fn new(code: u16) -> Self {
        Self(code)
    }

    /// The raw code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether this close ends a connection the way it was meant to end:
    /// 1000 and 1001 are logged at debug, everything else at warn.
    pub const fn is_normal(self) -> bool {
        matches!(self.0, 1000 | 1001)
    }

    /// Whether a code may appear in a close frame on the wire (RFC 6455 §7.4.1):
    /// 1005, 1006 and 1015 are reserved for reporting and never sent.
    pub const fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// Whether a client following SPEC §6 reconnects after this code.
    ///
    /// Besides the codes the spec names, the ones proxies and load balancers send
    /// (1005 no status, 1012 service restart, 1014 bad gateway, 1015 TLS failure, and the
    /// registered 3000–3999 range) are transient too; the JS client follows the same table. Unknown codes from 4000 up mean "stop and report", the safe default
    /// for codes a newer server may add; so do the ones that name a client bug.
    pub const fn should_reconnect(self) -> bool {
        matches!(
            self.0,
            1001 | 1005 | 1006 | 1011 | 1012 | 1013 | 1014 | 1015 | 3000..=3999 | 4001 | 4008
        )
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

/// A close frame: a code and a short human-readable reason.
///
/// The reason is cut to [`Close::MAX_REASON_BYTES`] on a character boundary, because a
/// control frame's payload is at most 125 bytes, two of which hold the code.
///
/// ```
/// use ws_core::{Close, CloseCode};
/// let close = Close::new(CloseCode::TRY_AGAIN_LATER, "server overloaded");
/// assert_eq!(close.code(), CloseCode::TRY_AGAIN_LATER);
/// assert_eq!(close.reason(), "server overloaded");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Close {
    code: CloseCode,
    reason: Cow<'static, str>,
}

impl Close {
    /// The longest reason that fits in a close frame.
    pub const MAX_REASON_BYTES: usize = 123;

    /// A close with `code` and `reason` (cut to fit a control frame).
    pub fn new(code: CloseCode, reason: impl Into<Cow<'static, str>>) -> Self {
        let mut reason = reason.into();
        if reason.len() > Self::MAX_REASON_BYTES {
            let mut end = Self::MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = Cow::Owned(reason[..end].to_owned());
        }
        Self { code, reason }
    }

    /// 1000 "normal closure": the answer to a client's own close.
    pub fn normal() -> Self {
        Self::new(CloseCode::NORMAL, "normal closure")
    }

    /// 1001 "server shutting down".
    pub fn shutting_down() -> Self {
        Self::new(CloseCode::GOING_AWAY, "server shutting down")
    }

    /// 1013 "server overloaded": the global connection limit.
    pub fn server_overloaded() -> Self {
        Self::new(CloseCode::TRY_AGAIN_LATER, "server overloaded")
    }

    /// 1013 "too many connections for user": the per-user connection limit.
    pub fn too_many_for_user() -> Self {
        Self::new(CloseCode::TRY_AGAIN_LATER, "too many connections for user")
    }

    /// 4008 "slow consumer": the send queue overflowed.
    pub fn slow_consumer() -> Self {
        Self::new(CloseCode::SLOW_CONSUMER, "slow consumer")
    }

    /// Whether the frames queued behind this close are dropped instead of sent ahead of
    /// it: after a slow-consumer verdict they are what the client could not keep up with,
    /// it recovers them after reconnecting, and sending them first would only delay the
    /// close frame. Other closes let the batch already taken go out first.
    ///
    /// ```
    /// use ws_core::Close;
    /// assert!(Close::slow_consumer().discards_queued());
    /// assert!(!Close::shutting_down().discards_queued());
    /// ```
    pub fn discards_queued(&self) -> bool {
        self.code() == CloseCode::SLOW_CONSUMER
    }

    /// The code.
    pub fn code(&self) -> CloseCode {
        self.code
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Debug for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Close({} {:?})", self.code.0, self.reason)
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.0, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let close = Close::new(CloseCode::NORMAL, reason);
        assert!(close.reason().len() <= Close::MAX_REASON_BYTES);
        assert_eq!(close.reason().len(), 122);
    }

    #[test]
    fn reserved_codes_are_never_sendable() {
        for code in [1004, 1005, 1006, 1015, 999, 2999, 5000] {
            assert!(!CloseCode::new(code).is_sendable(), "{code}");
        }
        for code in [
            1000, 1001, 1003, 1007, 1008, 1009, 1011, 1013, 4001, 4003, 4008,
        ] {
            assert!(CloseCode::new(code).is_sendable(), "{code}");
        }
    }

    #[test]
    fn reconnect_policy_matches_the_spec() {
        let reconnect = [
            1001, 1005, 1006, 1011, 1012, 1013, 1014, 1015, 3000, 3999, 4001, 4008,
        ];
        let stop = [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4003, 4000, 4999];
        for code in reconnect {
            assert!(CloseCode::new(code).should_reconnect(), "{code}");
        }
        for code in stop {
            assert!(!CloseCode::new(code).should_reconnect(), "{code}");
        }
    }
}
