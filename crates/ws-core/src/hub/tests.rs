use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::CloseCode;

fn project(s: &str) -> ProjectId {
    ProjectId::parse(s).unwrap()
}

fn recipients(hub: &Hub<u64>, p: &str) -> Vec<u64> {
    let mut v: Vec<u64> = hub
        .recipients(&project(p))
        .map(|(c, value)| {
            assert_eq!(c.0, *value, "value travels with its member");
            c.0
        })
        .collect();
    v.sort_unstable();
    v
}

fn actions(hub: &mut Hub<u64>) -> Vec<Action> {
    std::iter::from_fn(|| hub.poll_action()).collect()
}

fn hub_with(members: &[(u64, &str, &str)]) -> Hub<u64> {
    let mut hub = Hub::new(HubConfig {
        send_queue_frames: 10,
        send_queue_bytes: 1000,
        ..HubConfig::default()
    });
    for &(conn, p, user) in members {
        hub.register(ConnId(conn), project(p), UserId::new(user), conn);
    }
    hub
}

#[test]
fn publishes_reach_the_project_and_nobody_else() {
    let hub = hub_with(&[(1, "a", "u1"), (2, "a", "u2"), (3, "b", "u1")]);
    assert_eq!(recipients(&hub, "a"), [1, 2]);
    assert_eq!(recipients(&hub, "b"), [3]);
    assert_eq!(recipients(&hub, "c"), [] as [u64; 0]);
    assert_eq!((hub.len(), hub.project_count()), (3, 2));
}

#[test]
fn unregister_keeps_the_index_consistent() {
    let mut hub = hub_with(&[(1, "a", "u"), (2, "a", "u"), (3, "a", "v"), (4, "a", "w")]);
    let gone = hub.unregister(ConnId(1)).unwrap();
    assert_eq!((gone.value, gone.left), (1, false));
    // c4 moved into c1's slot; it must still be found by id.
    assert_eq!(hub.member(ConnId(4)), Some(&4));
    assert_eq!(recipients(&hub, "a"), [2, 3, 4]);
    assert!(hub.unregister(ConnId(1)).is_none());
    assert!(hub.unregister(ConnId(2)).unwrap().left);
    for c in [3, 4] {
        hub.unregister(ConnId(c));
    }
    assert!(hub.is_empty());
    assert_eq!(hub.project_count(), 0, "empty projects are freed");
}

#[test]
fn presence_counts_connections_per_user() {
    let mut hub = Hub::new(HubConfig::default());
    let p = project("p");
    let first = hub.register(ConnId(1), p.clone(), UserId::new("u"), ());
    let second = hub.register(ConnId(2), p.clone(), UserId::new("u"), ());
    assert!(first.joined && !second.joined);
    assert_eq!(second.members, 2);
    assert_eq!(
        hub.presence(&p).collect::<Vec<_>>(),
        [(&UserId::new("u"), 2)]
    );
    assert!(!hub.unregister(ConnId(1)).unwrap().left);
    assert!(hub.unregister(ConnId(2)).unwrap().left);
}

#[test]
fn slow_consumers_are_closed_once_with_4008() {
    let mut hub = hub_with(&[(1, "a", "u"), (2, "a", "v")]);
    hub.handle_queue_depth(
        ConnId(1),
        QueueDepth {
            frames: 10,
            bytes: 1000,
        },
    );
    assert!(actions(&mut hub).is_empty(), "at the limit is still fine");
    hub.handle_queue_depth(
        ConnId(1),
        QueueDepth {
            frames: 11,
            bytes: 0,
        },
    );
    hub.handle_queue_depth(
        ConnId(1),
        QueueDepth {
            frames: 12,
            bytes: 0,
        },
    );
    hub.handle_queue_depth(
        ConnId(2),
        QueueDepth {
            frames: 0,
            bytes: 1001,
        },
    );
    assert_eq!(
        actions(&mut hub),
        [
            Action::Close {
                conn: ConnId(1),
                close: Close::slow_consumer()
            },
            Action::Close {
                conn: ConnId(2),
                close: Close::slow_consumer()
            },
        ]
    );
    assert!(recipients(&hub, "a").is_empty());
    assert_eq!(hub.len(), 2, "still registered until the connection ends");
}

#[test]
fn closing_a_project_closes_its_members_only() {
    let mut hub = hub_with(&[(1, "a", "u"), (2, "a", "v"), (3, "b", "u")]);
    let close = Close::new(CloseCode::NORMAL, "project closed");
    hub.close_project(&project("a"), &close);
    let closed: Vec<_> = actions(&mut hub);
    assert_eq!(closed.len(), 2);
    assert!(
        closed
            .iter()
            .all(|a| matches!(a, Action::Close { close: c, .. } if c == &close))
    );
    assert_eq!(recipients(&hub, "b"), [3]);
}

#[test]
fn closing_a_user_reaches_all_their_projects() {
    let mut hub = hub_with(&[(1, "a", "u"), (2, "a", "v"), (3, "b", "u")]);
    hub.close_user(
        &UserId::new("u"),
        &Close::new(CloseCode::ACCESS_REVOKED, "access revoked"),
    );
    let conns: HashSet<_> = actions(&mut hub)
        .into_iter()
        .map(|a| match a {
            Action::Close { conn, .. } => conn.0,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(conns, HashSet::from([1, 3]));
}

#[test]
fn shutdown_spreads_closes_over_the_window() {
    let members: Vec<(u64, &str, &str)> = (0..10)
        .map(|i| (i, if i % 2 == 0 { "a" } else { "b" }, "u"))
        .collect();
    let mut hub = hub_with(&members);
    let now = crate::client::tests::origin();
    let window = Duration::from_secs(10);
    hub.handle_shutdown(now, window);
    let times: Vec<Instant> = actions(&mut hub)
        .into_iter()
        .map(|a| match a {
            Action::Drain { at, .. } => at,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(times.len(), 10);
    assert_eq!(times[0], now);
    assert!(times.iter().all(|t| *t >= now && *t < now + window));
    assert!(
        times
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_secs(1))
    );
}

#[derive(Debug, Clone)]
enum Op {
    Register { project: u8, user: u8 },
    Unregister(usize),
    Publish(u8),
    Depth { which: usize, frames: usize },
    CloseProject(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..4, 0u8..5).prop_map(|(project, user)| Op::Register { project, user }),
        2 => any::<usize>().prop_map(Op::Unregister),
        3 => (0u8..4).prop_map(Op::Publish),
        1 => (any::<usize>(), 0usize..20).prop_map(|(which, frames)| Op::Depth { which, frames }),
        1 => (0u8..4).prop_map(Op::CloseProject),
    ]
}

proptest! {
    /// Against a simple model: the member count is registrations minus unregistrations,
    /// a publish reaches each open member of the project exactly once, a closed member
    /// receives nothing, every close carries a code and is decided once per member, and
    /// presence counts match.
    #[test]
    fn hub_matches_its_model(ops in prop::collection::vec(op(), 0..150)) {
        let mut hub: Hub<u64> = Hub::new(HubConfig { send_queue_frames: 10, send_queue_bytes: usize::MAX, ..HubConfig::default() });
        // conn -> (project, user, closed)
        let mut model: HashMap<u64, (u8, u8, bool)> = HashMap::new();
        let mut next = 0u64;
        let (mut registrations, mut unregistrations) = (0usize, 0usize);
        let mut closes_per_conn: HashMap<u64, usize> = HashMap::new();
        for op in ops {
            match op {
                Op::Register { project: p, user } => {
                    next += 1;
                    hub.register(ConnId(next), project(&p.to_string()), UserId::new(user.to_string()), next);
                    model.insert(next, (p, user, false));
                    registrations += 1;
                }
                Op::Unregister(i) => {
                    let mut conns: Vec<u64> = model.keys().copied().collect();
                    conns.sort_unstable();
                    if let Some(&conn) = conns.get(i % conns.len().max(1)) {
                        let (p, user, _) = model.remove(&conn).unwrap();
                        let gone = hub.unregister(ConnId(conn)).unwrap();
                        prop_assert_eq!(gone.value, conn);
                        let still = model.values().any(|(q, u, _)| *q == p && *u == user);
                        prop_assert_eq!(gone.left, !still);
                        prop_assert_eq!(gone.members, model.values().filter(|(q, _, _)| *q == p).count());
                        unregistrations += 1;
                    }
                }
                Op::Publish(p) => {
                    let got: Vec<u64> = hub.recipients(&project(&p.to_string())).map(|(c, _)| c.0).collect();
                    let unique: HashSet<u64> = got.iter().copied().collect();
                    prop_assert_eq!(unique.len(), got.len(), "delivered twice");
                    let want: HashSet<u64> = model.iter().filter(|(_, (q, _, closed))| *q == p && !closed).map(|(c, _)| *c).collect();
                    prop_assert_eq!(unique, want);
                }
                Op::Depth { which, frames } => {
                    let mut conns: Vec<u64> = model.keys().copied().collect();
                    conns.sort_unstable();
                    if let Some(&conn) = conns.get(which % conns.len().max(1)) {
                        hub.handle_queue_depth(ConnId(conn), QueueDepth { frames, bytes: 0 });
                        if frames > 10 { model.get_mut(&conn).unwrap().2 = true; }
                    }
                }
                Op::CloseProject(p) => {
                    hub.close_project(&project(&p.to_string()), &Close::new(CloseCode::NORMAL, "project closed"));
                    for (q, _, closed) in model.values_mut() {
                        if *q == p { *closed = true; }
                    }
                }
            }
            while let Some(action) = hub.poll_action() {
                let Action::Close { conn, close } = action else { panic!("no drain here") };
                prop_assert!(close.code().is_sendable());
                prop_assert!(model.get(&conn.0).is_some_and(|m| m.2), "closed a member the model keeps open");
                *closes_per_conn.entry(conn.0).or_default() += 1;
            }
            prop_assert_eq!(hub.len(), registrations - unregistrations);
            prop_assert_eq!(hub.len(), model.len());
        }
        prop_assert!(closes_per_conn.values().all(|n| *n == 1), "a member was closed twice");
        for p in 0u8..4 {
            let mut got: Vec<(String, u32)> = hub.presence(&project(&p.to_string())).map(|(u, n)| (u.to_string(), n)).collect();
            got.sort();
            let mut want: HashMap<String, u32> = HashMap::new();
            for (q, u, _) in model.values() {
                if *q == p { *want.entry(u.to_string()).or_default() += 1; }
            }
            let mut want: Vec<(String, u32)> = want.into_iter().collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn a_verdict_is_reported_once() {
    let mut hub = hub_with(&[(1, "a", "u")]);
    let over = QueueDepth {
        frames: 11,
        bytes: 0,
    };
    assert!(!hub.handle_queue_depth(ConnId(1), QueueDepth::default()));
    assert!(hub.handle_queue_depth(ConnId(1), over), "judged");
    assert!(!hub.handle_queue_depth(ConnId(1), over), "already closing");
    assert!(!hub.handle_queue_depth(ConnId(9), over), "unknown");
    assert_eq!(actions(&mut hub).len(), 1);
}

#[test]
fn joins_and_leaves_are_announced_within_the_presence_limit_only() {
    let mut hub = Hub::new(HubConfig {
        presence_max_members: 2,
        ..HubConfig::default()
    });
    let p = project("p");
    let join = |hub: &mut Hub<u64>, conn: u64, user: &str| {
        hub.register(ConnId(conn), p.clone(), UserId::new(user), conn)
    };
    assert!(join(&mut hub, 1, "a").announce_join, "the first member");
    assert!(join(&mut hub, 2, "b").announce_join, "at the limit");
    assert!(!join(&mut hub, 3, "c").announce_join, "over the limit");
    assert!(
        !join(&mut hub, 4, "a").announce_join,
        "not the user's first connection"
    );
    assert!(
        !hub.unregister(ConnId(4)).unwrap().announce_leave,
        "not the user's last"
    );
    assert!(
        !hub.unregister(ConnId(3)).unwrap().announce_leave,
        "its join was not announced"
    );
    assert!(hub.unregister(ConnId(2)).unwrap().announce_leave);
    let mut quiet = Hub::new(HubConfig {
        presence_events: false,
        ..HubConfig::default()
    });
    let r = quiet.register(ConnId(1), p.clone(), UserId::new("a"), 1);
    assert!(r.joined && !r.announce_join, "events off");
    let u = quiet.unregister(ConnId(1)).unwrap();
    assert!(u.left && !u.announce_leave);
}

proptest! {
    /// Whatever the sequence of joins and leaves, a join or leave is announced exactly when
    /// it is the user's first or last connection and the project, counting that connection,
    /// is within the limit; with events off, never.
    #[test]
    fn joins_and_leaves_are_announced_by_one_rule(
        ops in proptest::collection::vec((any::<bool>(), 0u8..6), 1..300),
        max in 0usize..6,
        events in any::<bool>(),
    ) {
        let mut hub: Hub<u64> = Hub::new(HubConfig {
            presence_max_members: max,
            presence_events: events,
            ..HubConfig::default()
        });
        let p = project("p");
        let mut conns: Vec<(u64, u8)> = Vec::new();
        let mut next = 0;
        for (register, user) in ops {
            if register || conns.is_empty() {
                next += 1;
                let first = !conns.iter().any(|(_, u)| *u == user);
                conns.push((next, user));
                let r = hub.register(ConnId(next), p.clone(), UserId::new(user.to_string()), next);
                prop_assert_eq!(r.announce_join, events && first && conns.len() <= max);
            } else {
                let size = conns.len();
                let (conn, user) = conns.remove(usize::from(user) % conns.len());
                let last = !conns.iter().any(|(_, u)| *u == user);
                let u = hub.unregister(ConnId(conn)).unwrap();
                prop_assert_eq!(u.announce_leave, events && last && size <= max);
            }
        }
    }
}

#[test]
fn a_namespace_table_overrides_the_presence_settings_of_its_projects_only() {
    use crate::namespace::{NamespaceOverrides, NamespacePolicy, Namespaces};
    let quiet = NamespaceOverrides {
        presence_events: Some(false),
        ..NamespaceOverrides::default()
    };
    let small = NamespaceOverrides {
        max_members_for_events: Some(1),
        ..NamespaceOverrides::default()
    };
    let namespaces = Namespaces::new(
        NamespacePolicy::default(),
        [("quiet".to_owned(), quiet), ("small".to_owned(), small)],
    )
    .unwrap();
    let mut hub = Hub::new(HubConfig {
        namespaces,
        ..HubConfig::default()
    });
    let mut join = |conn: u64, p: &str, user: &str| {
        hub.register(ConnId(conn), project(p), UserId::new(user), conn)
            .announce_join
    };
    // (project, announced for the first member, for the second)
    for (i, (p, first, second)) in [
        ("quiet:a", false, false),
        ("small:a", true, false),
        ("other:a", true, true),
        ("plain", true, true),
    ]
    .into_iter()
    .enumerate()
    {
        let base = 10 * i as u64;
        assert_eq!(join(base + 1, p, "u1"), first, "{p}, first member");
        assert_eq!(join(base + 2, p, "u2"), second, "{p}, second member");
    }
}
