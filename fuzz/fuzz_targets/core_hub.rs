//! `ws_core::Hub` driven by arbitrary registrations, unregistrations, publishes, queue depths,
//! kicks, project and user closes and shutdowns, checked against a plain model after every
//! step:
//!
//! - the member count is registrations − unregistrations, per shard and per project;
//! - a publish reaches each open member of the project exactly once (no recipient twice) and
//!   no member the hub decided to close;
//! - each member is closed at most once, only when a verdict applies, with a sendable code;
//! - presence counts and join/leave flags match the model;
//! - a shutdown drains every open member once, at instants within the drain window.
#![no_main]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use ws_core::hub::{Action, Hub, HubConfig, QueueDepth};
use ws_core::{Close, CloseCode, ConnId, ProjectId, UserId};

#[derive(Debug, Arbitrary)]
struct Case {
    send_queue_frames: u8,
    send_queue_bytes: u16,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Register {
        project: u8,
        user: u8,
    },
    Unregister(u8),
    /// An id that was never registered, or was already removed.
    UnregisterUnknown(u16),
    Publish(u8),
    Depth {
        which: u8,
        frames: u16,
        bytes: u32,
    },
    CloseMember {
        which: u8,
        code: u16,
    },
    CloseProject(u8),
    CloseUser(u8),
    Shutdown {
        window_ms: u16,
    },
}

#[derive(Debug)]
struct Model {
    project: u8,
    user: u8,
    closing: bool,
}

const PROJECTS: u8 = 6;
const USERS: u8 = 5;

fn project(p: u8) -> ProjectId {
    ProjectId::parse(&format!("p{}", p % PROJECTS)).expect("a valid project id")
}

fn user(u: u8) -> UserId {
    UserId::new(format!("u{}", u % USERS))
}

libfuzzer_sys::fuzz_target!(|case: Case| run(case));

fn run(case: Case) {
    let config = {
        let mut c = HubConfig::default();
        c.send_queue_frames = usize::from(case.send_queue_frames);
        c.send_queue_bytes = usize::from(case.send_queue_bytes);
        // Small enough for the fuzzer's projects to cross it.
        c.presence_max_members = usize::from(case.send_queue_frames % 8);
        c
    };
    let mut hub: Hub<u64> = Hub::new(config.clone());
    let mut model: BTreeMap<u64, Model> = BTreeMap::new();
    let mut next = 0u64;
    let (mut registrations, mut unregistrations) = (0usize, 0usize);
    let mut closed: HashSet<u64> = HashSet::new();
    let now = Instant::now();

    for op in case.ops {
        // Members the model expects the hub to close during this step.
        let mut expect_close: HashSet<u64> = HashSet::new();
        let mut drain_window: Option<Duration> = None;
        match op {
            Op::Register {
                project: p,
                user: u,
            } => {
                next += 1;
                let (p, u) = (p % PROJECTS, u % USERS);
                let joined_expected = !model.values().any(|m| m.project == p && m.user == u);
                let r = hub.register(ConnId(next), project(p), user(u), next);
                model.insert(
                    next,
                    Model {
                        project: p,
                        user: u,
                        closing: false,
                    },
                );
                registrations += 1;
                assert_eq!(r.joined, joined_expected, "join flag");
                assert_eq!(
                    r.members,
                    model.values().filter(|m| m.project == p).count(),
                    "members after register"
                );
                assert_eq!(
                    r.announce_join,
                    r.joined && r.members <= config.presence_max_members,
                    "join announced by the presence rule"
                );
            }
            Op::Unregister(which) => {
                if let Some(conn) = pick(&model, which) {
                    let m = model.remove(&conn).expect("picked from the model");
                    let gone = hub.unregister(ConnId(conn)).expect("a registered member");
                    assert_eq!(gone.value, conn);
                    assert_eq!(gone.project, project(m.project));
                    assert_eq!(gone.user, user(m.user));
                    let still = model
                        .values()
                        .any(|o| o.project == m.project && o.user == m.user);
                    assert_eq!(gone.left, !still, "leave flag");
                    let members = model.values().filter(|o| o.project == m.project).count();
                    assert_eq!(gone.members, members, "members after unregister");
                    assert_eq!(
                        gone.announce_leave,
                        gone.left && members < config.presence_max_members,
                        "leave announced by the presence rule"
                    );
                    unregistrations += 1;
                    assert!(hub.unregister(ConnId(conn)).is_none(), "unregistered twice");
                    assert!(hub.member(ConnId(conn)).is_none());
                }
            }
            Op::UnregisterUnknown(n) => {
                let conn = u64::from(n) + 1;
                if !model.contains_key(&conn) {
                    assert!(hub.unregister(ConnId(conn)).is_none());
                }
            }
            Op::Publish(p) => {
                let p = p % PROJECTS;
                let got: Vec<u64> = hub
                    .recipients(&project(p))
                    .map(|(c, v)| {
                        assert_eq!(c.0, *v, "value of {c}");
                        c.0
                    })
                    .collect();
                let unique: HashSet<u64> = got.iter().copied().collect();
                assert_eq!(unique.len(), got.len(), "a recipient twice: {got:?}");
                let want: HashSet<u64> = model
                    .iter()
                    .filter(|(_, m)| m.project == p && !m.closing)
                    .map(|(c, _)| *c)
                    .collect();
                assert_eq!(unique, want, "recipients of p{p}");
            }
            Op::Depth {
                which,
                frames,
                bytes,
            } => {
                if let Some(conn) = pick(&model, which) {
                    let depth = QueueDepth {
                        frames: usize::from(frames),
                        bytes: bytes as usize,
                    };
                    hub.handle_queue_depth(ConnId(conn), depth);
                    if config.is_over(depth) {
                        close_in_model(&mut model, conn, &mut expect_close);
                    }
                }
            }
            Op::CloseMember { which, code } => {
                if let Some(conn) = pick(&model, which) {
                    let code = CloseCode::new(3000 + code % 2000);
                    let was_closing = model[&conn].closing;
                    let started = hub.close_member(ConnId(conn), Close::new(code, "kick"));
                    assert_eq!(started, !was_closing, "close_member's answer");
                    close_in_model(&mut model, conn, &mut expect_close);
                }
            }
            Op::CloseProject(p) => {
                let p = p % PROJECTS;
                hub.close_project(
                    &project(p),
                    &Close::new(CloseCode::NORMAL, "project closed"),
                );
                let conns: Vec<u64> = model
                    .iter()
                    .filter(|(_, m)| m.project == p)
                    .map(|(c, _)| *c)
                    .collect();
                for conn in conns {
                    close_in_model(&mut model, conn, &mut expect_close);
                }
            }
            Op::CloseUser(u) => {
                let u = u % USERS;
                hub.close_user(&user(u), &Close::new(CloseCode::ACCESS_REVOKED, "revoked"));
                let conns: Vec<u64> = model
                    .iter()
                    .filter(|(_, m)| m.user == u)
                    .map(|(c, _)| *c)
                    .collect();
                for conn in conns {
                    close_in_model(&mut model, conn, &mut expect_close);
                }
            }
            Op::Shutdown { window_ms } => {
                let window = Duration::from_millis(u64::from(window_ms));
                hub.handle_shutdown(now, window);
                drain_window = Some(window);
            }
        }

        let mut drained: HashSet<u64> = HashSet::new();
        while let Some(action) = hub.poll_action() {
            match action {
                Action::Close { conn, close } => {
                    assert!(close.code().is_sendable(), "{close:?}");
                    assert!(close.reason().len() <= Close::MAX_REASON_BYTES);
                    assert!(
                        expect_close.remove(&conn.0),
                        "closed {conn} which the model did not close in this step"
                    );
                    assert!(closed.insert(conn.0), "{conn} closed twice");
                }
                Action::Drain { conn, at } => {
                    let window = drain_window.expect("a drain without a shutdown");
                    assert!(at >= now && at <= now + window, "drain outside the window");
                    let m = model.get(&conn.0).expect("drained an unknown member");
                    assert!(!m.closing, "drained a member being closed");
                    assert!(
                        drained.insert(conn.0),
                        "{conn} drained twice in one shutdown"
                    );
                }
            }
        }
        assert!(
            expect_close.is_empty(),
            "closes not decided: {expect_close:?}"
        );
        if drain_window.is_some() {
            let open: HashSet<u64> = model
                .iter()
                .filter(|(_, m)| !m.closing)
                .map(|(c, _)| *c)
                .collect();
            assert_eq!(drained, open, "shutdown drains every open member");
        }

        // Counts against the model.
        assert_eq!(hub.len(), registrations - unregistrations);
        assert_eq!(hub.len(), model.len());
        assert_eq!(hub.is_empty(), model.is_empty());
        let mut sizes: HashMap<u8, usize> = HashMap::new();
        for m in model.values() {
            *sizes.entry(m.project).or_default() += 1;
        }
        assert_eq!(hub.project_count(), sizes.len());
        let mut got_sizes: Vec<usize> = hub.project_sizes().collect();
        let mut want_sizes: Vec<usize> = sizes.values().copied().collect();
        got_sizes.sort_unstable();
        want_sizes.sort_unstable();
        assert_eq!(got_sizes, want_sizes);
        for p in 0..PROJECTS {
            let mut want: HashMap<UserId, u32> = HashMap::new();
            for m in model.values().filter(|m| m.project == p) {
                *want.entry(user(m.user)).or_default() += 1;
            }
            let got: HashMap<UserId, u32> = hub
                .presence(&project(p))
                .map(|(u, n)| (u.clone(), n))
                .collect();
            assert_eq!(got, want, "presence of p{p}");
            assert_eq!(
                hub.members(&project(p)).count(),
                sizes.get(&p).copied().unwrap_or(0)
            );
        }
    }
}

/// The `which`-th member of the model, cycling.
fn pick(model: &BTreeMap<u64, Model>, which: u8) -> Option<u64> {
    if model.is_empty() {
        return None;
    }
    model.keys().nth(usize::from(which) % model.len()).copied()
}

/// The hub must decide a close for `conn` in this step unless it already did.
fn close_in_model(model: &mut BTreeMap<u64, Model>, conn: u64, expect: &mut HashSet<u64>) {
    let m = model.get_mut(&conn).expect("a registered member");
    if !m.closing {
        m.closing = true;
        expect.insert(conn);
    }
}
