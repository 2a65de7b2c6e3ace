//! `ws_core::Client` driven by arbitrary sequences of peer frames, transport events, server
//! commands and time, under an arbitrary (valid) configuration. After every step:
//!
//! - a client that reported `Closed` transmits nothing and reports nothing more;
//! - nothing is written after a close frame, and at most one close frame is written;
//! - every close frame carries a sendable code and a reason that fits a control frame;
//! - exactly one `Closed` event ends a closed client, it is the last event, and a close after
//!   our close frame reports that frame's code (or 1006, unclean, when its write got stuck);
//! - `is_closed()` holds exactly when `Closed` was reported, and then no timer is armed;
//! - no publish or presence request is reported once the client stopped being open;
//! - the next timeout makes progress: firing it at its instant either moves it past that
//!   instant or changes the state, within a few rounds (no busy loop for the driver).
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use ws_core::client::{Client, ClientConfig, Event, PeerFault, Transmit};
use ws_core::{Close, CloseCode};

#[derive(Debug, Arbitrary)]
struct Case {
    config: Config,
    inputs: Vec<Input>,
}

/// A configuration the server would accept: `timeouts.ping_interval`, `timeouts.pong_timeout`
/// and `timeouts.write` are validated to be non-zero; `timeouts.close` may be zero.
#[derive(Debug, Arbitrary)]
struct Config {
    ping_interval_ms: u16,
    pong_timeout_ms: u16,
    close_timeout_ms: u16,
    max_message_bytes: u8,
    max_protocol_errors: u8,
    allow_publish: bool,
    publish_rate: u8,
    request_rate: u8,
}

#[derive(Debug, Arbitrary)]
enum Input {
    /// Time passes by this many milliseconds, firing every timer due on the way.
    Wait(u16),
    /// The driver wakes at the next timeout (what its `sleep_until` does).
    Timeout,
    /// The driver wakes late or early, at an arbitrary instant not before now.
    WakeAt(u16),
    Text(Text),
    Binary(u16),
    Control,
    PeerClose(Option<(u16, String)>),
    Fault(Fault),
    Disconnect {
        eof: bool,
    },
    WriteTimeout,
    /// The answer to a presence request left the send queue.
    PresenceSent,
    /// The server closes it (hub verdicts, kicks, project close): always a sendable code.
    LocalClose(LocalCode, String),
    /// The token expires `ms` from now, or `ms` ago.
    Expiry {
        ms: u16,
        past: bool,
    },
    /// The server drains it `ms` from now, or `ms` ago.
    Drain {
        ms: u16,
        past: bool,
    },
}

#[derive(Debug, Arbitrary)]
enum Text {
    Publish { id: Option<String>, data: u32 },
    PublishNoId,
    Presence,
    Raw(String),
    Big(u16),
}

#[derive(Debug, Arbitrary)]
enum Fault {
    TooBig,
    InvalidUtf8,
    Protocol,
}

#[derive(Debug, Arbitrary)]
enum LocalCode {
    Normal,
    GoingAway,
    Policy,
    TryAgainLater,
    Internal,
    TokenExpired,
    AccessRevoked,
    SlowConsumer,
    /// Any application code 3000..=4999.
    App(u16),
}

impl LocalCode {
    fn code(&self) -> CloseCode {
        match self {
            Self::Normal => CloseCode::NORMAL,
            Self::GoingAway => CloseCode::GOING_AWAY,
            Self::Policy => CloseCode::POLICY_VIOLATION,
            Self::TryAgainLater => CloseCode::TRY_AGAIN_LATER,
            Self::Internal => CloseCode::INTERNAL_ERROR,
            Self::TokenExpired => CloseCode::TOKEN_EXPIRED,
            Self::AccessRevoked => CloseCode::ACCESS_REVOKED,
            Self::SlowConsumer => CloseCode::SLOW_CONSUMER,
            Self::App(n) => CloseCode::new(3000 + n % 2000),
        }
    }
}

/// What the client produced so far, checked after every step.
struct Observed {
    close_frame: Option<Close>,
    closed: Option<ws_core::client::Closed>,
    /// A presence request was reported and its answer not yet sent.
    presence_outstanding: bool,
}

fn ms(n: u16) -> Duration {
    Duration::from_millis(u64::from(n))
}

libfuzzer_sys::fuzz_target!(|case: Case| run(case));

fn run(case: Case) {
    let mut config = ClientConfig::default();
    config.ping_interval = ms(case.config.ping_interval_ms.max(1));
    config.pong_timeout = ms(case.config.pong_timeout_ms.max(1));
    config.close_timeout = ms(case.config.close_timeout_ms);
    config.max_message_bytes = usize::from(case.config.max_message_bytes) * 4;
    config.max_protocol_errors = u32::from(case.config.max_protocol_errors % 8);
    config.allow_publish = case.config.allow_publish;
    config.publish_rate = u32::from(case.config.publish_rate % 8);
    config.request_rate = u32::from(case.config.request_rate % 8);

    // Any origin will do: only differences matter. Far enough from boot that `past` offsets
    // cannot underflow.
    let origin = Instant::now() + Duration::from_secs(3600);
    let mut now = origin;
    let mut client = Client::new(config, now);
    let mut seen = Observed {
        close_frame: None,
        closed: None,
        presence_outstanding: false,
    };

    for input in case.inputs {
        let was_open = client.is_open();
        match input {
            Input::Wait(n) => {
                let until = now + ms(n);
                let mut rounds = 0u32;
                while let Some(at) = client.poll_timeout() {
                    if at > until {
                        break;
                    }
                    now = now.max(at);
                    fire(&mut client, now, &mut seen, was_open);
                    rounds += 1;
                    // Each firing moves a timer forward by at least 1 ms (the smallest
                    // interval), so a wait of n ms fires at most ~n + a few times.
                    assert!(rounds <= u32::from(n) + 16, "timers fire without progress");
                }
                now = until;
                continue;
            }
            Input::Timeout => {
                if let Some(at) = client.poll_timeout() {
                    now = now.max(at);
                    fire(&mut client, now, &mut seen, was_open);
                }
                continue;
            }
            Input::WakeAt(n) => {
                now += ms(n);
                client.handle_timeout(now);
            }
            Input::Text(text) => {
                let text = match text {
                    Text::Publish { id, data } => match id {
                        Some(id) => serde_json_escape_publish(&id, data),
                        None => format!(r#"{{"type":"publish","data":{data}}}"#),
                    },
                    Text::PublishNoId => r#"{"type":"publish","data":{"a":[1,2]}}"#.to_owned(),
                    Text::Presence => r#"{"type":"presence"}"#.to_owned(),
                    Text::Raw(s) => s,
                    Text::Big(n) => format!(
                        r#"{{"type":"publish","data":"{}"}}"#,
                        "x".repeat(usize::from(n % 2048))
                    ),
                };
                client.handle_text(now, &text);
            }
            Input::Binary(n) => client.handle_binary(now, usize::from(n)),
            Input::Control => client.handle_control(now),
            Input::PeerClose(frame) => {
                let frame = frame
                    .as_ref()
                    .map(|(c, r)| (CloseCode::new(*c), r.as_str()));
                client.handle_close(now, frame);
            }
            Input::Fault(f) => client.handle_fault(
                now,
                match f {
                    Fault::TooBig => PeerFault::TooBig,
                    Fault::InvalidUtf8 => PeerFault::InvalidUtf8,
                    Fault::Protocol => PeerFault::Protocol,
                },
            ),
            Input::Disconnect { eof } => client.handle_disconnect(now, eof, "transport ended"),
            Input::WriteTimeout => client.handle_write_timeout(now),
            Input::PresenceSent => {
                client.handle_presence_sent();
                seen.presence_outstanding = false;
            }
            Input::LocalClose(code, reason) => client.close(now, Close::new(code.code(), reason)),
            Input::Expiry { ms: n, past } => {
                let at = if past { now - ms(n) } else { now + ms(n) };
                client.set_expiry(at);
            }
            Input::Drain { ms: n, past } => {
                let at = if past { now - ms(n) } else { now + ms(n) };
                client.handle_drain(now, at);
            }
        }
        drain(&mut client, &mut seen, was_open);
    }

    // Whatever state it is in, the client ends within a bounded run of its own timers once
    // the peer goes silent: an idle deadline, a close deadline or a drain.
    let was_open = client.is_open();
    client.handle_drain(now, now);
    drain(&mut client, &mut seen, was_open);
    let mut rounds = 0;
    while let Some(at) = client.poll_timeout() {
        now = now.max(at);
        let was_open = client.is_open();
        fire(&mut client, now, &mut seen, was_open);
        rounds += 1;
        assert!(rounds < 8, "a drained client did not close");
    }
    assert!(
        seen.closed.is_some(),
        "a drained client never reported Closed"
    );
}

/// Fires the timer due at `now` and checks that the driver would not spin: within a few
/// rounds at the same instant the next timeout moves past `now` (or the client closes).
fn fire(client: &mut Client, now: Instant, seen: &mut Observed, was_open: bool) {
    for _ in 0..4 {
        client.handle_timeout(now);
        drain(client, seen, was_open);
        match client.poll_timeout() {
            Some(next) if next <= now => continue,
            _ => return,
        }
    }
    panic!(
        "poll_timeout stays at or before now after 4 handle_timeout calls: {:?}",
        client
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
    );
}

fn drain(client: &mut Client, seen: &mut Observed, was_open: bool) {
    while let Some(t) = client.poll_transmit() {
        assert!(
            seen.closed.is_none(),
            "{t:?} written after Closed was reported"
        );
        assert!(
            seen.close_frame.is_none(),
            "{t:?} written after the close frame {:?}",
            seen.close_frame
        );
        if let Transmit::Close(close) = &t {
            assert!(close.code().is_sendable(), "{close:?} is not sendable");
            assert!(close.reason().len() <= Close::MAX_REASON_BYTES);
            seen.close_frame = Some(close.clone());
        }
    }
    while let Some(e) = client.poll_event() {
        assert!(seen.closed.is_none(), "{e:?} reported after Closed");
        match e {
            Event::Closed(closed) => {
                if let Some(sent) = &seen.close_frame {
                    // Once our close frame went out, the end is reported with its code, unless
                    // the write of that very frame got stuck (1006, not clean).
                    assert!(
                        closed.code == sent.code()
                            || closed.code == CloseCode::ABNORMAL && !closed.clean,
                        "{closed:?} after sending {sent:?}"
                    );
                } else if closed.initiator == ws_core::client::Initiator::Local {
                    assert_eq!(closed.code, CloseCode::ABNORMAL, "{closed:?}");
                    assert!(!closed.clean);
                }
                seen.closed = Some(closed);
            }
            Event::PresenceRequest => {
                assert!(
                    !seen.presence_outstanding,
                    "a second presence request before the first answer was sent"
                );
                assert!(was_open, "a presence request reported by a client that was not open");
                assert!(seen.close_frame.is_none(), "a presence request after our close frame");
                seen.presence_outstanding = true;
            }
            other => {
                assert!(was_open, "{other:?} reported by a client that was not open");
                assert!(
                    seen.close_frame.is_none(),
                    "{other:?} after our close frame"
                );
            }
        }
    }
    assert_eq!(
        client.is_closed(),
        seen.closed.is_some(),
        "is_closed vs Closed event"
    );
    assert_eq!(client.is_closed(), client.poll_timeout().is_none());
    if client.is_open() {
        assert!(
            seen.close_frame.is_none(),
            "open after sending a close frame"
        );
    }
}

fn serde_json_escape_publish(id: &str, data: u32) -> String {
    let mut escaped = String::with_capacity(id.len() + 2);
    for c in id.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if c.is_control() => escaped.push_str(&format!("\\u{:04x}", c as u32)),
            c => escaped.push(c),
        }
    }
    format!(r#"{{"type":"publish","id":"{escaped}","data":{data}}}"#)
}
