use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::client::tests::origin;

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).unwrap()
}

/// Publishes `(at seconds, key)` in order through a window of `capacity` keys and `ttl`
/// seconds, as the broker does: check, and record new publishes at the next offset (from 1).
/// Each step expects the duplicate's offset, or `None` for a new publish.
fn check(capacity: usize, ttl: u64, steps: &[(u64, &str, Option<u64>)]) {
    let start = origin();
    let mut window = DedupeWindow::new(capacity, Duration::from_secs(ttl));
    let mut offset = 0;
    for (i, &(at, k, want)) in steps.iter().enumerate() {
        let now = start + Duration::from_secs(at);
        let got = window.check(now, &key(k));
        assert_eq!(got, want, "step {i}: {k:?} at {at}s");
        if got.is_none() {
            offset += 1;
            window.record(now, key(k), offset);
        }
        assert!(window.len() <= capacity, "step {i}");
    }
}

#[test]
fn a_repeat_answers_the_first_offset() {
    check(
        10,
        60,
        &[
            (0, "a", None),
            (0, "a", Some(1)),
            (1, "b", None),
            (2, "a", Some(1)),
            (3, "b", Some(2)),
            (3, "c", None),
            (4, "c", Some(3)),
        ],
    );
}

#[test]
fn keys_are_forgotten_after_the_ttl() {
    check(
        10,
        60,
        &[
            (0, "a", None),
            (30, "b", None),
            (60, "a", Some(1)), // exactly ttl old: still remembered, as history keeps it
            (61, "a", None),    // older than ttl: a new message
            (61, "b", Some(2)),
            (90, "b", Some(2)),
            (91, "b", None),
            (91, "a", Some(3)),
            (121, "a", Some(3)),
            (122, "b", Some(4)),
        ],
    );
}

#[test]
fn the_oldest_keys_go_first_over_capacity() {
    check(
        2,
        60,
        &[
            (0, "a", None),
            (0, "b", None),
            (0, "a", Some(1)), // a check does not refresh a key
            (0, "c", None),    // a goes
            (0, "a", None),    // so a is new (offset 4), and b goes
            (0, "b", None),    // c goes
            (0, "a", Some(4)),
            (0, "b", Some(5)),
            (0, "c", None),
        ],
    );
}

#[test]
fn a_capacity_of_zero_remembers_nothing() {
    check(0, 60, &[(0, "a", None), (0, "a", None)]);
    let mut window = DedupeWindow::new(0, Duration::from_secs(60));
    window.record(origin(), key("a"), 1);
    assert!(window.is_empty());
    assert_eq!(window.bytes(), 0);
}

#[test]
fn recording_a_remembered_key_keeps_its_offset_and_age() {
    let start = origin();
    let mut window = DedupeWindow::new(10, Duration::from_secs(60));
    window.record(start, key("a"), 1);
    window.record(start + Duration::from_secs(50), key("a"), 2);
    assert_eq!(window.len(), 1);
    assert_eq!(
        window.check(start + Duration::from_secs(60), &key("a")),
        Some(1)
    );
    assert_eq!(
        window.check(start + Duration::from_secs(61), &key("a")),
        None
    );
}

#[test]
fn expire_frees_an_idle_window() {
    let start = origin();
    let mut window = DedupeWindow::new(10, Duration::from_secs(60));
    for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
        window.record(start + Duration::from_secs(i as u64 * 10), key(k), i as u64);
    }
    assert_eq!((window.len(), window.capacity()), (3, 10));
    assert_eq!(window.ttl(), Duration::from_secs(60));
    window.expire(start + Duration::from_secs(75));
    assert_eq!(window.len(), 1);
    window.expire(start + Duration::from_secs(81));
    assert!(window.is_empty());
    assert_eq!(window.bytes(), 0);
}

#[test]
fn bytes_count_key_text_and_a_fixed_overhead() {
    let now = origin();
    let mut window = DedupeWindow::new(2, Duration::from_secs(60));
    assert_eq!(window.bytes(), 0);
    window.record(now, key("abc"), 1);
    let one = window.bytes();
    assert_eq!(one, 3 + ENTRY_OVERHEAD);
    window.record(now, key(&"x".repeat(128)), 2);
    assert_eq!(window.bytes(), one + 128 + ENTRY_OVERHEAD);
    window.record(now, key("z"), 3); // abc goes
    assert_eq!(window.bytes(), 128 + 1 + 2 * ENTRY_OVERHEAD);
}

#[test]
fn keys_are_1_to_128_bytes() {
    let cases: [(&str, Result<(), InvalidKey>); 6] = [
        ("a", Ok(())),
        (&"x".repeat(128), Ok(())),
        (&"é".repeat(64), Ok(())), // 128 bytes
        ("", Err(InvalidKey::Length(0))),
        (&"x".repeat(129), Err(InvalidKey::Length(129))),
        (&"é".repeat(65), Err(InvalidKey::Length(130))),
    ];
    for (s, want) in cases {
        let got = IdempotencyKey::parse(s);
        assert_eq!(got.as_ref().map(|_| ()), want.as_ref().map(|_| ()), "{s}");
        if let Ok(k) = got {
            assert_eq!((k.as_str(), k.to_string()), (s, s.to_owned()));
            assert_eq!(format!("{k:?}"), format!("{s:?}"));
        }
    }
    assert_eq!(
        InvalidKey::Length(129).to_string(),
        "an idempotency key must be 1 to 128 bytes long, got 129: send a shorter key"
    );
}

proptest! {
    /// Whatever the publishes and the waits between them, the window answers a duplicate
    /// exactly when a model says so: every record kept in a plain list, a key remembered when
    /// it is among the last `capacity` records and no older than `ttl`. It never holds more
    /// than `capacity` keys, and its byte count matches what it holds.
    #[test]
    fn the_window_matches_a_model(
        capacity in 0usize..6,
        ttl in 1u64..20,
        steps in prop::collection::vec((0u64..8, 0usize..8), 0..120),
    ) {
        let keys: Vec<IdempotencyKey> = ["a", "b", "c", "d", "e", "ff", "ggg", "hhhh"].into_iter().map(key).collect();
        let ttl = Duration::from_secs(ttl);
        let mut window = DedupeWindow::new(capacity, ttl);
        let mut records: Vec<(Instant, usize, u64)> = Vec::new();
        let mut now = origin();
        for (wait, k) in steps {
            now += Duration::from_secs(wait);
            let model = records
                .iter()
                .rev()
                .take(capacity)
                .filter(|(at, _, _)| now.duration_since(*at) <= ttl)
                .find(|(_, rk, _)| *rk == k)
                .map(|(_, _, offset)| *offset);
            let got = window.check(now, &keys[k]);
            prop_assert_eq!(got, model);
            if got.is_none() {
                let offset = records.len() as u64 + 1;
                window.record(now, keys[k].clone(), offset);
                if capacity > 0 {
                    records.push((now, k, offset));
                }
            }
            prop_assert!(window.len() <= capacity);
            let held: usize = window.order.iter().map(|(_, k)| k.as_str().len()).sum();
            prop_assert_eq!(window.offsets.len(), window.len());
            prop_assert_eq!(window.bytes(), held + window.len() * ENTRY_OVERHEAD);
        }
    }
}
