use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// Any instant will do as the simulation's origin: only differences matter.
#[expect(
    clippy::disallowed_methods,
    reason = "an arbitrary origin for the fake clock"
)]
pub(crate) fn origin() -> Instant {
    Instant::now()
}

type Poke = dyn Fn(&mut Client, Instant);

/// A client on a fake clock that records everything it outputs.
struct Sim {
    client: Client,
    now: Instant,
    transmits: Vec<Transmit>,
    events: Vec<Event>,
    /// Answers each publish as soon as it is raised, as a transport on a broker that
    /// answers at once would: the pipelining tests turn it off and answer themselves.
    answer_publishes: bool,
}

impl Sim {
    fn new(config: ClientConfig) -> Self {
        let now = origin();
        Self {
            client: Client::new(config, now),
            now,
            transmits: Vec::new(),
            events: Vec::new(),
            answer_publishes: true,
        }
    }

    fn drain(&mut self) {
        loop {
            while let Some(t) = self.client.poll_transmit() {
                self.transmits.push(t);
            }
            let mut answered = false;
            while let Some(e) = self.client.poll_event() {
                if self.answer_publishes && is_publish(&e) {
                    self.client.handle_publish_answered();
                    answered = true;
                }
                self.events.push(e);
            }
            if !answered {
                break;
            }
        }
    }

    /// Jumps to the next timer and fires it; false when no timer is armed.
    fn step(&mut self) -> bool {
        let Some(at) = self.client.poll_timeout() else {
            return false;
        };
        assert!(at >= self.now, "timeout in the past");
        self.now = at;
        self.client.handle_timeout(at);
        self.drain();
        true
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.client.poll_timeout() {
            if at > until {
                break;
            }
            self.now = at;
            self.client.handle_timeout(at);
            self.drain();
        }
        self.now = until;
    }

    fn with(&mut self, f: impl FnOnce(&mut Client, Instant)) {
        f(&mut self.client, self.now);
        self.drain();
    }

    fn closed(&self) -> Option<&Closed> {
        self.events.iter().find_map(|e| match e {
            Event::Closed(c) => Some(c),
            _ => None,
        })
    }

    fn close_sent(&self) -> Option<&Close> {
        self.transmits.iter().find_map(|t| match t {
            Transmit::Close(c) => Some(c),
            _ => None,
        })
    }
}

fn config() -> ClientConfig {
    ClientConfig {
        ping_interval: Duration::from_secs(25),
        pong_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(5),
        max_message_bytes: 100,
        max_protocol_errors: 2,
        allow_publish: true,
        publish_rate: 0,
        request_rate: 0,
        protocol: Protocol::V1,
        publish_window: 4,
    }
}

fn is_publish(event: &Event) -> bool {
    matches!(
        event,
        Event::Publish { .. } | Event::Request(Request::Publish { .. })
    )
}

fn config_v2() -> ClientConfig {
    ClientConfig {
        protocol: Protocol::V2,
        ..config()
    }
}

#[test]
fn publishes_become_events() {
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.handle_text(now, r#"{"type":"publish","id":"7","data":[1]}"#));
    let [Event::Publish { id, data, .. }] = &sim.events[..] else {
        panic!("{:?}", sim.events)
    };
    assert_eq!((id.as_deref(), data.get()), (Some("7"), "[1]"));
    sim.with(|c, now| c.handle_text(now, r#"{"type":"presence"}"#));
    assert_eq!(sim.events.last(), Some(&Event::PresenceRequest));
    assert!(sim.transmits.is_empty());
}

#[test]
fn pings_every_interval_while_the_peer_answers() {
    let mut sim = Sim::new(config());
    for _ in 0..5 {
        sim.advance(Duration::from_secs(25));
        assert_eq!(sim.transmits.pop(), Some(Transmit::Ping));
        sim.with(|c, now| c.handle_control(now)); // the pong
    }
    assert!(sim.client.is_open());
    assert!(sim.closed().is_none());
}

#[test]
fn silence_ends_the_connection_after_ping_interval_plus_pong_timeout() {
    let mut sim = Sim::new(config());
    let start = sim.now;
    while sim.closed().is_none() {
        assert!(sim.step());
    }
    assert_eq!(sim.now - start, Duration::from_secs(35));
    let closed = sim.closed().unwrap();
    assert_eq!(
        (closed.code, closed.initiator, closed.clean),
        (CloseCode::GOING_AWAY, Initiator::Local, false)
    );
    assert_eq!(sim.close_sent().map(Close::reason), Some("ping timeout"));
    assert!(sim.client.poll_timeout().is_none());
}

#[test]
fn any_traffic_counts_as_life() {
    let mut sim = Sim::new(config());
    for _ in 0..10 {
        sim.advance(Duration::from_secs(30));
        sim.with(|c, now| c.handle_text(now, r#"{"type":"presence"}"#));
    }
    assert!(sim.client.is_open());
}

#[test]
fn client_initiated_close_is_clean_and_remote() {
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.handle_close(now, Some((CloseCode::NORMAL, "bye"))));
    let closed = sim.closed().unwrap();
    assert_eq!(closed.code, CloseCode::NORMAL);
    assert_eq!(closed.reason, "bye");
    assert_eq!(closed.initiator, Initiator::Remote);
    assert!(closed.is_normal());
    // The echo is the WebSocket layer's job: the core sends nothing more.
    assert!(sim.transmits.is_empty());
    assert!(sim.client.poll_timeout().is_none());
}

#[test]
fn close_without_code_is_reported_as_1005() {
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.handle_close(now, None));
    assert_eq!(sim.closed().unwrap().code, CloseCode::NO_STATUS);
}

#[test]
fn server_close_waits_for_the_peers_close_frame() {
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.close(now, Close::new(CloseCode::NORMAL, "project closed")));
    assert_eq!(
        sim.transmits,
        [Transmit::Close(Close::new(
            CloseCode::NORMAL,
            "project closed"
        ))]
    );
    assert!(!sim.client.is_open());
    assert!(sim.closed().is_none());
    // A second close is ignored: one close frame only.
    sim.with(|c, now| c.close(now, Close::shutting_down()));
    assert_eq!(sim.transmits.len(), 1);
    sim.advance(Duration::from_secs(1));
    sim.with(|c, now| c.handle_close(now, Some((CloseCode::NORMAL, ""))));
    let closed = sim.closed().unwrap();
    assert_eq!(
        (closed.code, closed.initiator, closed.clean),
        (CloseCode::NORMAL, Initiator::Local, true)
    );
    assert_eq!(closed.reason, "project closed");
}

#[test]
fn server_close_gives_up_after_close_timeout() {
    let mut sim = Sim::new(config());
    let start = sim.now;
    sim.with(|c, now| c.close(now, Close::shutting_down()));
    while sim.closed().is_none() {
        assert!(sim.step());
    }
    assert_eq!(sim.now - start, Duration::from_secs(5));
    let closed = sim.closed().unwrap();
    assert!(!closed.clean);
    assert_eq!(closed.code, CloseCode::GOING_AWAY);
}

#[test]
fn peer_hanging_up_after_our_close_is_clean() {
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.close(now, Close::shutting_down()));
    sim.with(|c, now| c.handle_disconnect(now, true, "eof"));
    let closed = sim.closed().unwrap();
    assert!(closed.is_normal(), "{closed:?}");
}

#[test]
fn dropped_transport_is_abnormal() {
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.handle_disconnect(now, false, "connection reset"));
    let closed = sim.closed().unwrap();
    assert_eq!(closed.code, CloseCode::ABNORMAL);
    assert_eq!(closed.reason, "connection reset");
    assert!(!closed.is_normal());
}

#[test]
fn faults_close_with_their_codes() {
    let cases: [(&Poke, u16); 6] = [
        (&|c, now| c.handle_binary(now, 10), 1003),
        (&|c, now| c.handle_binary(now, 1000), 1009),
        (&|c, now| c.handle_text(now, &" ".repeat(101)), 1009),
        (&|c, now| c.handle_fault(now, PeerFault::TooBig), 1009),
        (&|c, now| c.handle_fault(now, PeerFault::InvalidUtf8), 1007),
        (&|c, now| c.handle_fault(now, PeerFault::Protocol), 1002),
    ];
    for (input, code) in cases {
        let mut sim = Sim::new(config());
        sim.with(|c, now| input(c, now));
        assert_eq!(sim.close_sent().map(|c| c.code().as_u16()), Some(code));
        assert!(!sim.client.is_open());
    }
}

#[test]
fn opaque_data_is_handed_over_within_the_limit() {
    let mut sim = Sim::new(config());
    let mut accepted = Vec::new();
    for len in [0, 10, 100] {
        sim.with(|c, now| accepted.push(c.handle_data(now, len)));
    }
    assert_eq!(accepted, [true, true, true]);
    assert!(sim.transmits.is_empty() && sim.events.is_empty());
    assert!(sim.client.is_open());

    // Any data is life: the idle deadline moves.
    sim.advance(Duration::from_secs(30));
    sim.with(|c, now| assert!(c.handle_data(now, 1)));
    sim.advance(Duration::from_secs(30));
    assert!(sim.client.is_open());

    sim.with(|c, now| assert!(!c.handle_data(now, 101)));
    assert_eq!(sim.close_sent().map(|c| c.code().as_u16()), Some(1009));
    // Closing: nothing more is handed over, and the peer's close ends it cleanly.
    sim.with(|c, now| assert!(!c.handle_data(now, 1)));
    sim.with(|c, now| c.handle_close(now, Some((CloseCode::MESSAGE_TOO_BIG, ""))));
    let closed = sim.closed().unwrap();
    assert_eq!((closed.initiator, closed.clean), (Initiator::Local, true));
}

#[test]
fn framing_faults_end_the_connection_at_once() {
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.handle_fault(now, PeerFault::TooBig));
    let closed = sim.closed().expect("no waiting for an unparseable stream");
    assert_eq!(
        (closed.code, closed.initiator),
        (CloseCode::MESSAGE_TOO_BIG, Initiator::Local)
    );
    assert!(sim.client.poll_timeout().is_none());
}

#[test]
fn malformed_frames_get_error_frames_then_1008() {
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.handle_text(now, "not json"));
    sim.with(|c, now| c.handle_text(now, r#"{"type":"dance"}"#));
    assert_eq!(sim.transmits.len(), 2);
    let Transmit::Text(first) = &sim.transmits[0] else {
        panic!()
    };
    assert!(
        first.starts_with(r#"{"type":"error","code":"invalid_json""#),
        "{first}"
    );
    let Transmit::Text(second) = &sim.transmits[1] else {
        panic!()
    };
    assert_eq!(
        second,
        r#"{"type":"error","code":"unknown_type","message":"unknown type `dance`"}"#
    );
    sim.with(|c, now| c.handle_text(now, "{}"));
    assert_eq!(
        sim.close_sent().map(|c| c.code()),
        Some(CloseCode::POLICY_VIOLATION)
    );
}

#[test]
fn publishing_can_be_disabled() {
    let mut sim = Sim::new(ClientConfig {
        allow_publish: false,
        ..config()
    });
    sim.with(|c, now| c.handle_text(now, r#"{"type":"publish","data":1}"#));
    assert!(sim.events.is_empty());
    let [Transmit::Text(error)] = &sim.transmits[..] else {
        panic!()
    };
    assert!(error.contains("publish_not_allowed"));
}

#[test]
fn publishes_over_the_rate_are_refused_then_closed_with_1008() {
    let mut sim = Sim::new(ClientConfig {
        publish_rate: 5,
        max_protocol_errors: 3,
        ..config()
    });
    let publish = r#"{"type":"publish","data":1}"#;
    // A burst of twice the rate passes.
    for _ in 0..10 {
        sim.with(|c, now| c.handle_text(now, publish));
    }
    assert_eq!(sim.events.len(), 10);
    assert!(sim.transmits.is_empty());
    sim.with(|c, now| c.handle_text(now, publish));
    let [Transmit::Text(error)] = &sim.transmits[..] else {
        panic!("{:?}", sim.transmits)
    };
    assert!(error.contains("rate_limited"), "{error}");
    // A fifth of a second later one token is back.
    sim.advance(Duration::from_millis(200));
    sim.with(|c, now| c.handle_text(now, publish));
    assert_eq!(sim.events.len(), 11);
    for _ in 0..3 {
        sim.with(|c, now| c.handle_text(now, publish));
    }
    assert_eq!(
        sim.close_sent(),
        Some(&Close::new(
            CloseCode::POLICY_VIOLATION,
            "publish rate exceeded repeatedly"
        ))
    );
}

#[test]
fn token_expiry_closes_with_4001() {
    let mut sim = Sim::new(config());
    let expiry = sim.now + Duration::from_secs(2);
    sim.with(|c, _| c.set_expiry(expiry));
    sim.step();
    assert_eq!(sim.now, expiry);
    assert_eq!(
        sim.close_sent(),
        Some(&Close::new(CloseCode::TOKEN_EXPIRED, "token expired"))
    );
}

#[test]
fn drain_closes_with_1001_at_its_time() {
    let mut sim = Sim::new(config());
    let at = sim.now + Duration::from_secs(3);
    sim.with(|c, now| c.handle_drain(now, at));
    assert!(sim.transmits.is_empty());
    sim.step();
    assert_eq!(sim.now, at);
    assert_eq!(sim.close_sent(), Some(&Close::shutting_down()));
    // A drain time already past closes at once.
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.handle_drain(now, now));
    assert_eq!(sim.close_sent(), Some(&Close::shutting_down()));
}

#[test]
fn write_timeout_drops_without_a_close_frame() {
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.handle_write_timeout(now));
    assert!(sim.close_sent().is_none());
    let closed = sim.closed().unwrap();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (CloseCode::ABNORMAL, "write timeout")
    );
}

#[test]
fn nothing_is_accepted_after_close() {
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.close(now, Close::normal()));
    sim.with(|c, now| c.handle_text(now, r#"{"type":"publish","data":1}"#));
    sim.with(|c, now| c.handle_text(now, "garbage"));
    assert_eq!(sim.transmits.len(), 1);
    assert!(sim.events.is_empty());
}

/// One input to the machine, for property tests.
#[derive(Debug, Clone)]
enum Input {
    Wait(u64),
    Text(&'static str),
    Binary(usize),
    Control,
    PeerClose(u16),
    Fault(u8),
    Disconnect(bool),
    WriteTimeout,
    Close(u16),
    Drain(u64),
    Expire(u64),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (0u64..40_000).prop_map(Input::Wait),
        prop::sample::select(vec![
            r#"{"type":"publish","data":1}"#,
            r#"{"type":"presence"}"#,
            "nope",
            r#"{"type":"x"}"#,
        ])
        .prop_map(Input::Text),
        (0usize..200).prop_map(Input::Binary),
        Just(Input::Control),
        prop::sample::select(vec![1000u16, 1001, 1005, 4000]).prop_map(Input::PeerClose),
        (0u8..3).prop_map(Input::Fault),
        any::<bool>().prop_map(Input::Disconnect),
        Just(Input::WriteTimeout),
        prop::sample::select(vec![1000u16, 1008, 1013, 4003, 4008]).prop_map(Input::Close),
        (0u64..10_000).prop_map(Input::Drain),
        (0u64..10_000).prop_map(Input::Expire),
    ]
}

proptest! {
    /// Whatever happens: at most one `Closed` event and it is the last; every close frame
    /// carries a sendable code; nothing is written after a close frame; no timer is armed
    /// once closed.
    #[test]
    fn lifecycle_invariants(inputs in prop::collection::vec(input(), 0..60)) {
        let mut sim = Sim::new(config());
        for input in inputs {
            let now = sim.now;
            match input {
                Input::Wait(ms) => sim.advance(Duration::from_millis(ms)),
                Input::Text(t) => sim.with(|c, now| c.handle_text(now, t)),
                Input::Binary(n) => sim.with(|c, now| c.handle_binary(now, n)),
                Input::Control => sim.with(|c, now| c.handle_control(now)),
                Input::PeerClose(code) => sim.with(|c, now| c.handle_close(now, Some((CloseCode::new(code), "")))),
                Input::Fault(f) => sim.with(|c, now| c.handle_fault(now, [PeerFault::TooBig, PeerFault::InvalidUtf8, PeerFault::Protocol][f as usize])),
                Input::Disconnect(eof) => sim.with(|c, now| c.handle_disconnect(now, eof, "gone")),
                Input::WriteTimeout => sim.with(|c, now| c.handle_write_timeout(now)),
                Input::Close(code) => sim.with(|c, now| c.close(now, Close::new(CloseCode::new(code), "x"))),
                Input::Drain(ms) => sim.with(|c, now| c.handle_drain(now, now + Duration::from_millis(ms))),
                Input::Expire(ms) => sim.with(|c, _| c.set_expiry(now + Duration::from_millis(ms))),
            }
            prop_assert_eq!(sim.client.is_closed(), sim.client.poll_timeout().is_none());
        }
        let closes: Vec<_> = sim.events.iter().enumerate().filter(|(_, e)| matches!(e, Event::Closed(_))).collect();
        prop_assert!(closes.len() <= 1);
        if let Some((i, _)) = closes.first() {
            prop_assert_eq!(*i, sim.events.len() - 1, "Closed must be the last event");
            prop_assert!(sim.client.is_closed());
        }
        let close_frames: Vec<_> = sim.transmits.iter().enumerate().filter(|(_, t)| matches!(t, Transmit::Close(_))).collect();
        prop_assert!(close_frames.len() <= 1);
        if let Some((i, Transmit::Close(close))) = close_frames.first() {
            prop_assert!(close.code().is_sendable());
            prop_assert_eq!(*i, sim.transmits.len() - 1, "nothing after a close frame");
        }
    }
}

/// `peer_finished` decides whether the shell lingers: true only when the peer can send
/// nothing more, so that closing the socket at once cannot reset our close frame away.
#[test]
fn the_peer_is_finished_only_after_its_close_frame_or_end_of_stream() {
    let ends: [(&str, &Poke, bool); 7] = [
        ("peer's close", &|c, now| c.handle_close(now, None), true),
        (
            "our close answered",
            &|c, now| {
                c.close(now, Close::shutting_down());
                c.handle_close(now, Some((CloseCode::GOING_AWAY, "")));
            },
            true,
        ),
        (
            "our close, then EOF",
            &|c, now| {
                c.close(now, Close::shutting_down());
                c.handle_disconnect(now, true, "eof");
            },
            true,
        ),
        (
            "our close, then a reset",
            &|c, now| {
                c.close(now, Close::shutting_down());
                c.handle_disconnect(now, false, "reset");
            },
            false,
        ),
        // The peer may still be sending the rest of what it started: linger.
        (
            "too big",
            &|c, now| c.handle_fault(now, PeerFault::TooBig),
            false,
        ),
        (
            "write timeout",
            &|c, now| c.handle_write_timeout(now),
            false,
        ),
        (
            "reset while open",
            &|c, now| c.handle_disconnect(now, false, "reset"),
            false,
        ),
    ];
    for (name, end, finished) in ends {
        let mut sim = Sim::new(config());
        sim.with(|c, now| end(c, now));
        let closed = sim.closed().unwrap_or_else(|| panic!("{name}: not closed"));
        assert_eq!(closed.peer_finished, finished, "{name}: {closed:?}");
    }
    // Our close left unanswered until the deadline: the peer may be sending still.
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.close(now, Close::shutting_down()));
    while sim.closed().is_none() {
        assert!(sim.step());
    }
    assert!(!sim.closed().unwrap().peer_finished);
}

#[test]
fn presence_requests_over_the_request_rate_are_refused_then_closed_with_1008() {
    let mut sim = Sim::new(ClientConfig {
        request_rate: 5,
        max_protocol_errors: 3,
        ..config()
    });
    let presence = r#"{"type":"presence"}"#;
    // A burst of twice the rate passes the budget (answered as they are sent).
    for _ in 0..10 {
        sim.with(|c, now| c.handle_text(now, presence));
        sim.with(|c, _| c.handle_presence_sent());
    }
    assert_eq!(sim.events.len(), 10);
    assert!(sim.transmits.is_empty());
    sim.with(|c, now| c.handle_text(now, presence));
    let [Transmit::Text(error)] = &sim.transmits[..] else {
        panic!("{:?}", sim.transmits)
    };
    assert_eq!(
        error,
        r#"{"type":"error","code":"rate_limited","message":"request rate exceeded; slow down"}"#
    );
    for _ in 0..3 {
        sim.with(|c, now| c.handle_text(now, presence));
    }
    assert_eq!(
        sim.events.len(),
        10,
        "no request over the budget is answered"
    );
    assert_eq!(
        sim.close_sent(),
        Some(&Close::new(
            CloseCode::POLICY_VIOLATION,
            "request rate exceeded repeatedly"
        ))
    );
}

#[test]
fn the_request_budget_is_separate_from_the_publish_rate() {
    let mut sim = Sim::new(ClientConfig {
        request_rate: 1,
        publish_rate: 1,
        ..config()
    });
    for _ in 0..2 {
        sim.with(|c, now| c.handle_text(now, r#"{"type":"publish","data":1}"#));
        sim.with(|c, now| c.handle_text(now, r#"{"type":"presence"}"#));
        sim.with(|c, _| c.handle_presence_sent());
    }
    assert_eq!(sim.events.len(), 4, "{:?}", sim.events);
    assert!(sim.transmits.is_empty());
}

#[test]
fn at_most_one_presence_answer_is_outstanding() {
    let mut sim = Sim::new(config());
    let presence = r#"{"type":"presence"}"#;
    for _ in 0..100 {
        sim.with(|c, now| c.handle_text(now, presence));
    }
    assert_eq!(
        sim.events,
        [Event::PresenceRequest],
        "one answer serves them all"
    );
    assert!(sim.transmits.is_empty(), "coalescing is not a fault");
    sim.with(|c, _| c.handle_presence_sent());
    sim.with(|c, now| c.handle_text(now, presence));
    assert_eq!(
        sim.events.len(),
        2,
        "a request after the answer left gets its own"
    );
}

proptest! {
    /// Whatever the interleaving of requests and sent answers, at most one request is
    /// outstanding, and none is answered while the budget is spent.
    #[test]
    fn presence_events_never_outnumber_sent_answers_plus_one(
        steps in proptest::collection::vec((any::<bool>(), 0u64..200), 1..200),
    ) {
        let mut sim = Sim::new(ClientConfig { request_rate: 10, max_protocol_errors: 1000, ..config() });
        let mut sent = 0usize;
        let mut outstanding = false;
        for (answer, wait_ms) in steps {
            sim.now += Duration::from_millis(wait_ms);
            if answer {
                sim.with(|c, _| c.handle_presence_sent());
                if outstanding {
                    sent += 1;
                }
            } else {
                sim.with(|c, now| c.handle_text(now, r#"{"type":"presence"}"#));
            }
            let requests = sim.events.iter().filter(|e| **e == Event::PresenceRequest).count();
            outstanding = requests > sent;
            prop_assert!(requests <= sent + 1, "{requests} requests, {sent} answers sent");
        }
    }
}

#[test]
fn pings_are_answered_at_once_with_pongs() {
    let mut sim = Sim::new(config());
    sim.with(|c, now| c.handle_text(now, r#"{"type":"ping"}"#));
    sim.with(|c, now| c.handle_text(now, r#"{"type":"ping","id":"p7"}"#));
    assert_eq!(
        sim.transmits,
        [
            Transmit::Text(r#"{"type":"pong"}"#.to_owned()),
            Transmit::Text(r#"{"type":"pong","id":"p7"}"#.to_owned()),
        ]
    );
    assert!(sim.events.is_empty(), "the application is not involved");
    // Never a fault: far more pings than the fault budget leave the connection open.
    for _ in 0..10 {
        sim.with(|c, now| c.handle_text(now, r#"{"type":"ping"}"#));
    }
    assert_eq!(sim.transmits.len(), 12);
    assert!(sim.client.is_open());
}

#[test]
fn pings_over_the_request_rate_are_refused_then_closed_with_1008() {
    let mut sim = Sim::new(ClientConfig {
        request_rate: 5,
        max_protocol_errors: 3,
        ..config()
    });
    let ping = r#"{"type":"ping","id":"x"}"#;
    // A burst of twice the rate passes, paid from the same budget as presence requests.
    for _ in 0..9 {
        sim.with(|c, now| c.handle_text(now, ping));
    }
    sim.with(|c, now| c.handle_text(now, r#"{"type":"presence"}"#));
    assert_eq!(sim.transmits.len(), 9);
    assert_eq!(sim.events, [Event::PresenceRequest]);
    sim.with(|c, now| c.handle_text(now, ping));
    assert_eq!(
        sim.transmits.last(),
        Some(&Transmit::Text(
            r#"{"type":"error","code":"rate_limited","message":"request rate exceeded; slow down"}"#
                .to_owned()
        ))
    );
    // A fifth of a second later one token is back.
    sim.advance(Duration::from_millis(200));
    sim.with(|c, now| c.handle_text(now, ping));
    assert_eq!(
        sim.transmits.last(),
        Some(&Transmit::Text(r#"{"type":"pong","id":"x"}"#.to_owned()))
    );
    for _ in 0..3 {
        sim.with(|c, now| c.handle_text(now, ping));
    }
    assert_eq!(
        sim.close_sent(),
        Some(&Close::new(
            CloseCode::POLICY_VIOLATION,
            "request rate exceeded repeatedly"
        ))
    );
}

// === protocol v2 ===

fn texts(sim: &Sim) -> Vec<&str> {
    sim.transmits
        .iter()
        .filter_map(|t| match t {
            Transmit::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn v2_requests_become_events_and_pings_are_answered_here() {
    let mut sim = Sim::new(config_v2());
    sim.with(|c, now| c.handle_text(now, r#"{"type":"subscribe","id":"1","project":"a"}"#));
    sim.with(|c, now| c.handle_text(now, r#"{"type":"ping","id":"2"}"#));
    sim.with(|c, now| {
        c.handle_text(
            now,
            r#"{"type":"publish","id":"3","project":"~user","data":1}"#,
        )
    });
    let kinds: Vec<_> = sim
        .events
        .iter()
        .map(|e| match e {
            Event::Request(Request::Subscribe { .. }) => "subscribe",
            Event::Request(Request::Publish { .. }) => "publish",
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["subscribe", "publish"]);
    assert_eq!(texts(&sim), [r#"{"type":"pong","id":"2"}"#]);
}

#[test]
fn v2_refusals_repeat_the_request_and_cost_no_fault() {
    let mut sim = Sim::new(config_v2());
    // Well-formed but out of range: refused, never closing, whatever their number.
    for _ in 0..10 {
        sim.with(|c, now| c.handle_text(now, r#"{"type":"subscribe","id":"s","project":"a b"}"#));
    }
    assert!(sim.client.is_open());
    assert_eq!(texts(&sim).len(), 10);
    let error: serde_json::Value = serde_json::from_str(texts(&sim)[0]).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], "s");
    assert_eq!(error["code"], "invalid_project");
    assert!(sim.events.is_empty());
}

#[test]
fn v2_faults_answer_v2_errors_then_close_with_1008() {
    let mut sim = Sim::new(config_v2());
    for _ in 0..2 {
        sim.with(|c, now| c.handle_text(now, r#"{"type":"dance","id":"d"}"#));
    }
    let error: serde_json::Value = serde_json::from_str(texts(&sim)[0]).unwrap();
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("unknown_type"), Some("d"))
    );
    assert!(sim.client.is_open());
    sim.with(|c, now| c.handle_text(now, "not json"));
    assert_eq!(
        sim.close_sent().map(Close::code),
        Some(CloseCode::POLICY_VIOLATION)
    );
}

#[test]
fn v2_budgets_apply_per_connection_with_the_request_named() {
    let mut sim = Sim::new(ClientConfig {
        publish_rate: 1,
        request_rate: 1,
        max_protocol_errors: 10,
        ..config_v2()
    });
    let publish = r#"{"type":"publish","id":"p","project":"a","data":1}"#;
    let history = r#"{"type":"history","id":"h","project":"b"}"#;
    for _ in 0..3 {
        sim.with(|c, now| c.handle_text(now, publish));
        sim.with(|c, now| c.handle_text(now, history));
    }
    // A burst of twice the rate of each passes; the third of each is refused.
    assert_eq!(sim.events.len(), 4);
    let errors: Vec<serde_json::Value> = texts(&sim)
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    let refused: Vec<_> = errors
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap(),
                e["id"].as_str().unwrap(),
                e["project"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [("rate_limited", "p", "a"), ("rate_limited", "h", "b")]
    );
    let mut closed = Sim::new(ClientConfig {
        allow_publish: false,
        ..config_v2()
    });
    closed.with(|c, now| c.handle_text(now, publish));
    let error: serde_json::Value = serde_json::from_str(texts(&closed)[0]).unwrap();
    assert_eq!(error["code"], "publish_not_allowed");
}

#[test]
fn v2_refreshes_are_paid_from_the_request_budget() {
    let mut sim = Sim::new(ClientConfig {
        request_rate: 1,
        max_protocol_errors: 10,
        ..config_v2()
    });
    for _ in 0..3 {
        sim.with(|c, now| c.handle_text(now, r#"{"type":"refresh","id":"r","token":"a.b.c"}"#));
    }
    // A burst of twice the rate reaches the application; the third is refused.
    assert_eq!(sim.events.len(), 2);
    let error: serde_json::Value = serde_json::from_str(texts(&sim)[0]).unwrap();
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("rate_limited"), Some("r"))
    );
}

#[test]
fn publishes_pipeline_up_to_the_window_then_the_reader_must_wait() {
    let mut sim = Sim::new(config());
    sim.answer_publishes = false;
    for n in 0..4 {
        assert!(!sim.client.publish_window_full(), "after {n}");
        sim.with(|c, now| c.handle_text(now, r#"{"type":"publish","data":1}"#));
    }
    assert_eq!(sim.events.len(), 4, "all four raised without an answer");
    assert_eq!(sim.client.publishes_in_flight(), 4);
    assert!(sim.client.publish_window_full());
    sim.client.handle_publish_answered();
    assert!(
        !sim.client.publish_window_full(),
        "one answer makes room for one"
    );
    assert_eq!(sim.client.publishes_in_flight(), 3);
}

#[test]
fn a_window_of_zero_is_one_publish_at_a_time() {
    let mut sim = Sim::new(ClientConfig {
        publish_window: 0,
        ..config()
    });
    sim.answer_publishes = false;
    assert!(!sim.client.publish_window_full());
    sim.with(|c, now| c.handle_text(now, r#"{"type":"publish","data":1}"#));
    assert!(sim.client.publish_window_full());
}

#[test]
fn own_answers_wait_behind_the_publishes_raised_before_them() {
    let mut sim = Sim::new(ClientConfig {
        publish_rate: 1,
        max_protocol_errors: 10,
        ..config()
    });
    sim.answer_publishes = false;
    // A burst of two passes the rate; the third is refused, the ping answered.
    for _ in 0..3 {
        sim.with(|c, now| c.handle_text(now, r#"{"type":"publish","data":1}"#));
    }
    sim.with(|c, now| c.handle_text(now, r#"{"type":"ping","id":"x"}"#));
    assert_eq!(sim.events.len(), 2);
    assert!(
        sim.transmits.is_empty(),
        "the refusal and the pong wait for the two acks: {:?}",
        sim.transmits
    );
    sim.client.handle_publish_answered();
    sim.drain();
    assert!(sim.transmits.is_empty(), "one ack is not enough");
    sim.client.handle_publish_answered();
    sim.drain();
    let texts: Vec<serde_json::Value> = sim
        .transmits
        .iter()
        .map(|t| match t {
            Transmit::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts.len(), 2);
    assert_eq!(texts[0]["code"], "rate_limited");
    assert_eq!(texts[1]["type"], "pong");
    // Nothing in flight: answered at once again.
    sim.with(|c, now| c.handle_text(now, r#"{"type":"ping"}"#));
    assert_eq!(sim.transmits.len(), 3);
}

#[test]
fn an_answer_held_behind_a_publish_raised_later_is_not_released_early() {
    let mut sim = Sim::new(config_v2());
    sim.answer_publishes = false;
    let publish = r#"{"type":"publish","project":"a","data":1}"#;
    sim.with(|c, now| c.handle_text(now, publish));
    sim.with(|c, now| c.handle_text(now, r#"{"type":"ping","id":"1"}"#));
    sim.with(|c, now| c.handle_text(now, publish));
    sim.with(|c, now| c.handle_text(now, r#"{"type":"ping","id":"2"}"#));
    assert!(sim.transmits.is_empty());
    sim.client.handle_publish_answered();
    sim.drain();
    assert_eq!(texts(&sim), [r#"{"type":"pong","id":"1"}"#]);
    sim.client.handle_publish_answered();
    sim.drain();
    assert_eq!(
        texts(&sim),
        [r#"{"type":"pong","id":"1"}"#, r#"{"type":"pong","id":"2"}"#]
    );
}

#[test]
fn held_answers_are_dropped_once_the_connection_closes() {
    let mut sim = Sim::new(config());
    sim.answer_publishes = false;
    sim.with(|c, now| c.handle_text(now, r#"{"type":"publish","data":1}"#));
    sim.with(|c, now| c.handle_text(now, r#"{"type":"ping"}"#));
    sim.with(|c, now| c.close(now, Close::new(CloseCode::NORMAL, "bye")));
    sim.client.handle_publish_answered();
    sim.drain();
    assert!(
        matches!(sim.transmits.last(), Some(Transmit::Close(_))),
        "nothing after the close frame: {:?}",
        sim.transmits
    );
}

proptest! {
    /// Whatever the mix of publishes, pings and answers, the machine's own answers come out
    /// in request order relative to the acks, and the window is never exceeded.
    #[test]
    fn answers_keep_request_order(steps in proptest::collection::vec(0u8..3, 1..60)) {
        let mut sim = Sim::new(ClientConfig { publish_window: 3, ..config() });
        sim.answer_publishes = false;
        // What the client sees, in order: "a<n>" for the ack of publish n, "p<n>" for the
        // pong of the ping sent after publish n-1.
        let mut seen: Vec<(char, u64)> = Vec::new();
        let mut sent: Vec<(char, u64)> = Vec::new();
        let mut raised = 0u64;
        let mut acked = 0u64;
        for step in steps {
            match step {
                0 if !sim.client.publish_window_full() => {
                    sim.with(|c, now| c.handle_text(now, r#"{"type":"publish","data":1}"#));
                    sent.push(('a', raised));
                    raised += 1;
                }
                1 => {
                    sim.with(|c, now| c.handle_text(now, r#"{"type":"ping"}"#));
                    sent.push(('p', raised));
                }
                _ if acked < raised => {
                    seen.push(('a', acked));
                    acked += 1;
                    sim.client.handle_publish_answered();
                    sim.drain();
                }
                _ => {}
            }
            prop_assert!(sim.client.publishes_in_flight() <= 3);
            for t in sim.transmits.drain(..) {
                prop_assert!(matches!(t, Transmit::Text(_)));
                // A pong's position: after the acks of the publishes sent before its ping.
                seen.push(('p', acked));
            }
        }
        let pongs_sent: Vec<u64> = sent.iter().filter(|(k, _)| *k == 'p').map(|(_, n)| *n).collect();
        let pongs_seen: Vec<u64> = seen.iter().filter(|(k, _)| *k == 'p').map(|(_, n)| *n).collect();
        // Every pong seen so far came out once its earlier publishes were acked, no sooner.
        for (sent_after, seen_after) in pongs_sent.iter().zip(&pongs_seen) {
            prop_assert!(seen_after >= sent_after);
            prop_assert!(seen_after <= &acked);
        }
        // Those not yet seen wait for acks still due.
        for waiting in pongs_sent.iter().skip(pongs_seen.len()) {
            prop_assert!(*waiting > acked);
        }
    }
}
