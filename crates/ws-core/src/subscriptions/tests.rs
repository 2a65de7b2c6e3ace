use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// A member id never used before, as the transport's counter hands them out.
fn fresh() -> ConnId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The member id of `p`'s subscription now, or one that is no subscription's: the tag of a
/// frame the hub queues for `p` from now on.
fn member<F>(subs: &Subscriptions<F>, p: &ProjectId) -> ConnId {
    subs.iter()
        .find(|(_, q)| *q == p)
        .map_or(ConnId(0), |(member, _)| member)
}

fn project(name: &str) -> ProjectId {
    ProjectId::parse(name).unwrap()
}

fn config(
    max_subscriptions: usize,
    max_held_frames: usize,
    max_held_bytes: usize,
) -> SubscriptionsConfig {
    SubscriptionsConfig {
        max_subscriptions,
        max_held_frames,
        max_held_bytes,
    }
}

/// A message frame of the unit tests: `m<offset>`.
fn m(offset: u64) -> (Option<u64>, String) {
    (Some(offset), format!("m{offset}"))
}

/// A frame without offset (presence, ephemeral).
fn e(name: &str) -> (Option<u64>, String) {
    (None, name.to_owned())
}

/// Everything queued, as text: `subscribed` for the marker, then the frames.
fn drain(subs: &mut Subscriptions<String>) -> Vec<String> {
    std::iter::from_fn(|| subs.poll_output())
        .map(|o| match o {
            Output::Recovered { project } => format!("subscribed {project}"),
            Output::Frame(f) => f,
        })
        .collect()
}

fn range(top: u64, missed: &[u64]) -> RecoveredRange<String> {
    RecoveredRange {
        top,
        missed: missed.iter().map(|&o| (o, format!("m{o}"))).collect(),
    }
}

#[test]
fn subscribes_up_to_the_limit_and_once_per_project() {
    let mut subs = Subscriptions::<String>::new(config(2, 8, 1024));
    let a = subs.handle_subscribe(project("a"), fresh()).unwrap();
    assert_eq!(a.project(), &project("a"));
    // Recovering or live, a project is subscribed once.
    assert_eq!(
        subs.handle_subscribe(project("a"), fresh()),
        Err(SubscribeError::AlreadySubscribed)
    );
    subs.handle_recovered(a, range(0, &[]));
    let _ = drain(&mut subs);
    assert_eq!(
        subs.handle_subscribe(project("a"), fresh()),
        Err(SubscribeError::AlreadySubscribed)
    );
    let _b = subs.handle_subscribe(project("b"), fresh()).unwrap();
    assert_eq!(
        subs.handle_subscribe(project("c"), fresh()),
        Err(SubscribeError::TooMany { max: 2 })
    );
    // Already subscribed wins over too many: it says more.
    assert_eq!(
        subs.handle_subscribe(project("b"), fresh()),
        Err(SubscribeError::AlreadySubscribed)
    );
    // An unsubscribe frees a place.
    subs.handle_unsubscribe(&project("a")).unwrap();
    assert!(subs.handle_subscribe(project("c"), fresh()).is_ok());
}

#[test]
fn refusals_carry_the_protocol_codes() {
    let cases = [
        (
            SubscribeError::TooMany { max: 128 },
            "too_many_subscriptions",
        ),
        (SubscribeError::AlreadySubscribed, "already_subscribed"),
    ];
    for (error, code) in cases {
        assert_eq!(error.code(), code, "{error}");
    }
    assert_eq!(
        SubscribeError::TooMany { max: 128 }.to_string(),
        "at most 128 subscriptions per connection"
    );
}

#[test]
fn frames_are_held_delivered_or_dropped_by_state() {
    /// `state`: "none", "recovering" or a live watermark; the verdict on one frame.
    fn check(state: &str, frame: (Option<u64>, String), expected: Verdict<String>) {
        let p = project("p");
        let mut subs = Subscriptions::new(config(4, 8, 1024));
        match state {
            "none" => {}
            "recovering" => drop(subs.handle_subscribe(p.clone(), fresh()).unwrap()),
            watermark => {
                let ticket = subs.handle_subscribe(p.clone(), fresh()).unwrap();
                subs.handle_recovered(ticket, range(watermark.parse().unwrap(), &[]));
                let _ = drain(&mut subs);
            }
        }
        let verdict = subs.handle_frame(member(&subs, &p), frame.0, frame.1.clone(), 2);
        assert_eq!(verdict, expected, "{state} {frame:?}");
        // Frames of other projects are never delivered.
        assert_eq!(
            subs.handle_frame(member(&subs, &project("q")), Some(9), "q9".into(), 2),
            Verdict::Drop
        );
    }
    check("none", m(1), Verdict::Drop);
    check("none", e("join"), Verdict::Drop);
    check("recovering", m(1), Verdict::Held);
    check("recovering", e("join"), Verdict::Held);
    check("5", m(4), Verdict::Drop);
    check("5", m(5), Verdict::Drop);
    check("5", m(6), Verdict::Deliver("m6".into()));
    check("5", m(9), Verdict::Deliver("m9".into()));
    check("5", e("join"), Verdict::Deliver("join".into()));
    check("0", m(1), Verdict::Deliver("m1".into()));
}

#[test]
fn live_frames_move_the_watermark() {
    let p = project("p");
    let mut subs = Subscriptions::new(config(4, 8, 1024));
    let ticket = subs.handle_subscribe(p.clone(), fresh()).unwrap();
    subs.handle_recovered(ticket, range(3, &[]));
    let _ = drain(&mut subs);
    let verdicts: Vec<_> = [4, 4, 5, 3, 6]
        .map(|o| subs.handle_frame(member(&subs, &p), Some(o), format!("m{o}"), 2))
        .into();
    assert_eq!(
        verdicts,
        [
            Verdict::Deliver("m4".into()),
            Verdict::Drop,
            Verdict::Deliver("m5".into()),
            Verdict::Drop,
            Verdict::Deliver("m6".into()),
        ]
    );
}

#[test]
fn the_recovery_is_the_marker_then_the_missed_then_the_held_above_it() {
    /// Subscribes, holds `held`, recovers with `top` and `missed`: what is written.
    fn check(held: &[(Option<u64>, String)], top: u64, missed: &[u64], expected: &[&str]) {
        let p = project("p");
        let mut subs = Subscriptions::new(config(4, 8, 1024));
        let ticket = subs.handle_subscribe(p.clone(), fresh()).unwrap();
        for (offset, frame) in held {
            assert_eq!(
                subs.handle_frame(member(&subs, &p), *offset, frame.clone(), 2),
                Verdict::Held
            );
        }
        assert!(subs.poll_output().is_none());
        subs.handle_recovered(ticket, range(top, missed));
        let mut written = vec!["subscribed p"];
        written.extend(expected);
        assert_eq!(drain(&mut subs), written, "{held:?} {top} {missed:?}");
        assert!(subs.is_live(&p));
    }
    // Nothing missed, nothing held (no `since`).
    check(&[], 7, &[], &[]);
    // The held frames published after the read follow the replay.
    check(&[m(6), m(7)], 5, &[4, 5], &["m4", "m5", "m6", "m7"]);
    // Those published between the registration and the read are in the replay already.
    check(
        &[m(4), m(5), m(6)],
        5,
        &[3, 4, 5],
        &["m3", "m4", "m5", "m6"],
    );
    // And those the client saw before it subscribed are dropped too (since 5, top 5).
    check(&[m(5), m(6)], 5, &[], &["m6"]);
    // Frames without offset are never duplicates; they keep their place among the held.
    check(
        &[e("join"), m(5), e("leave"), m(6)],
        5,
        &[5],
        &["m5", "join", "leave", "m6"],
    );
    // A lost recovery replays nothing; the client starts after top.
    check(&[m(8), m(9)], 8, &[], &["m9"]);
}

#[test]
fn holding_too_much_overflows() {
    /// Holds frames of `bytes` each until one overflows: how many were held.
    fn check(max_frames: usize, max_bytes: usize, bytes: usize, held: usize) {
        let p = project("p");
        let mut subs = Subscriptions::new(config(4, max_frames, max_bytes));
        let _ticket = subs.handle_subscribe(p.clone(), fresh()).unwrap();
        let mut n = 0;
        while subs.handle_frame(member(&subs, &p), Some(n + 1), format!("m{n}"), bytes)
            == Verdict::Held
        {
            n += 1;
            assert!(n < 100, "never overflows");
        }
        assert_eq!(
            n, held as u64,
            "{max_frames} frames, {max_bytes} bytes of {bytes}"
        );
    }
    check(3, 1024, 10, 3);
    check(100, 35, 10, 3);
    check(100, 30, 10, 3);
    check(100, 5, 10, 0);
    check(0, 1024, 10, 0);
    // Once live, nothing is held and nothing overflows.
    let p = project("p");
    let mut subs = Subscriptions::new(config(4, 0, 0));
    let ticket = subs.handle_subscribe(p.clone(), fresh()).unwrap();
    subs.handle_recovered(ticket, range(0, &[]));
    let _ = drain(&mut subs);
    assert_eq!(
        subs.handle_frame(member(&subs, &p), Some(1), "m1".into(), 10),
        Verdict::Deliver("m1".into())
    );
}

#[test]
fn a_failed_recovery_removes_the_subscription() {
    let p = project("p");
    let mut subs = Subscriptions::new(config(4, 8, 1024));
    let ticket = subs.handle_subscribe(p.clone(), fresh()).unwrap();
    assert_eq!(
        subs.handle_frame(member(&subs, &p), Some(1), "m1".into(), 2),
        Verdict::Held
    );
    assert!(subs.handle_recovery_failed(ticket.clone()));
    assert!(!subs.is_subscribed(&p));
    assert_eq!(subs.len(), 0);
    assert!(subs.poll_output().is_none(), "held frames are dropped");
    assert_eq!(
        subs.handle_frame(member(&subs, &p), Some(2), "m2".into(), 2),
        Verdict::Drop
    );
    // Reported twice, or for a live subscription: nothing to undo.
    assert!(!subs.handle_recovery_failed(ticket));
    let ticket = subs.handle_subscribe(p.clone(), fresh()).unwrap();
    subs.handle_recovered(ticket.clone(), range(2, &[]));
    let _ = drain(&mut subs);
    assert!(!subs.handle_recovery_failed(ticket));
    assert!(subs.is_live(&p));
}

#[test]
fn nothing_of_a_project_passes_once_unsubscribed() {
    let (p, q) = (project("p"), project("q"));
    let mut subs = Subscriptions::new(config(4, 8, 1024));
    assert_eq!(subs.handle_unsubscribe(&p), Err(NotSubscribed));
    let mut members = Vec::new();
    for project in [&p, &q] {
        let ticket = subs.handle_subscribe(project.clone(), fresh()).unwrap();
        members.push(ticket.member());
        subs.handle_recovered(ticket, range(0, &[]));
        let _ = drain(&mut subs);
    }
    let (p_member, q_member) = (members[0], members[1]);
    assert_eq!(subs.handle_unsubscribe(&p), Ok(p_member));
    assert_eq!(subs.handle_unsubscribe(&p), Err(NotSubscribed));
    // Frames of p still in the outbox, messages or not, are dropped; q is untouched.
    assert_eq!(
        subs.handle_frame(p_member, Some(1), "m1".into(), 2),
        Verdict::Drop
    );
    assert_eq!(
        subs.handle_frame(p_member, None, "join".into(), 2),
        Verdict::Drop
    );
    assert_eq!(
        subs.handle_frame(q_member, Some(1), "m1".into(), 2),
        Verdict::Deliver("m1".into())
    );
    // A token refresh revoking q does the same.
    assert_eq!(subs.remove(&q), Some(q_member));
    assert_eq!(subs.remove(&q), None);
    assert_eq!(
        subs.handle_frame(q_member, Some(2), "m2".into(), 2),
        Verdict::Drop
    );
    assert!(subs.is_empty());
}

#[test]
fn a_recovery_read_before_an_unsubscribe_is_ignored_after_it() {
    let p = project("p");
    let mut subs = Subscriptions::new(config(4, 8, 1024));
    let first = subs.handle_subscribe(p.clone(), fresh()).unwrap();
    // The read of the first lifetime saw top 3; the client unsubscribes, then subscribes
    // again while that read is still on its way. Messages 4 and 5 are published unseen.
    subs.handle_unsubscribe(&p).unwrap();
    // Recovering, unsubscribed: the read is ignored.
    subs.handle_recovered(first.clone(), range(3, &[]));
    assert!(subs.poll_output().is_none());
    let second = subs.handle_subscribe(p.clone(), fresh()).unwrap();
    assert_ne!(first, second);
    subs.handle_recovered(first.clone(), range(3, &[]));
    assert!(
        subs.poll_output().is_none(),
        "a stale read must not go live"
    );
    assert!(!subs.handle_recovery_failed(first.clone()));
    // A frame queued for the first lifetime, still in the outbox, is dropped: its member
    // is gone. The second lifetime's frames are held, then filtered.
    assert_eq!(
        subs.handle_frame(first.member(), Some(3), "m3".into(), 2),
        Verdict::Drop
    );
    assert_eq!(
        subs.handle_frame(second.member(), Some(5), "m5".into(), 2),
        Verdict::Held
    );
    assert_eq!(
        subs.handle_frame(second.member(), Some(6), "m6".into(), 2),
        Verdict::Held
    );
    subs.handle_recovered(second, range(5, &[4, 5]));
    assert_eq!(drain(&mut subs), ["subscribed p", "m4", "m5", "m6"]);
}

#[test]
fn lists_every_subscribed_project_recovering_or_live() {
    let mut subs = Subscriptions::<String>::new(config(8, 8, 1024));
    let a = subs.handle_subscribe(project("a"), fresh()).unwrap();
    let _b = subs.handle_subscribe(project("b"), fresh()).unwrap();
    subs.handle_recovered(a, range(0, &[]));
    let _ = drain(&mut subs);
    let mut listed: Vec<&str> = subs.iter().map(|(_, p)| p.as_str()).collect();
    listed.sort_unstable();
    assert_eq!(listed, ["a", "b"]);
    assert_eq!(subs.len(), 2);
    assert!(subs.is_live(&project("a")) && !subs.is_live(&project("b")));
    assert!(subs.is_subscribed(&project("b")) && !subs.is_subscribed(&project("c")));
}

/// The target is ≤ 256 B per idle subscription, the hub's side included. Here an idle
/// (live) subscription is one map entry: its member id, a shared project id and a 16-byte
/// state, whatever the frame type, since the held frames are boxed and only while
/// recovering. The map adds a control byte per bucket at a load of at most 7/8.
#[test]
fn an_idle_subscription_stays_small() {
    use std::mem::size_of;
    assert_eq!(size_of::<Sub<bytes::Bytes>>(), 16);
    assert_eq!(size_of::<Sub<[u8; 4096]>>(), 16);
    assert!(size_of::<(ConnId, Entry<bytes::Bytes>)>() <= 40);
}

#[test]
fn the_default_limits_are_the_send_queues() {
    let config = SubscriptionsConfig::default();
    assert_eq!(
        (
            config.max_subscriptions,
            config.max_held_frames,
            config.max_held_bytes
        ),
        (128, 1024, 4 << 20)
    );
}

mod simulation;
