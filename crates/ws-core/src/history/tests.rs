use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn origin() -> Instant {
    crate::client::tests::origin()
}

fn stream(size: usize, ttl_secs: u64) -> History<u64> {
    History::new(
        "e".into(),
        HistoryConfig {
            size,
            ttl: Duration::from_secs(ttl_secs),
        },
    )
}

fn offsets(v: &[Stored<u64>]) -> Vec<u64> {
    v.iter().map(|m| m.offset).collect()
}

#[test]
fn recovery_replays_exactly_what_was_missed() {
    let now = origin();
    let mut s = stream(10, 60);
    for i in 1..=5 {
        assert_eq!(s.append(now, i), i);
    }
    let Recovery::Recovered { missed } = s.recover(now, 2, "e") else {
        panic!()
    };
    assert_eq!(offsets(&missed), [3, 4, 5]);
    assert_eq!(missed[0].payload, 3);
    let Recovery::Recovered { missed } = s.recover(now, 5, "e") else {
        panic!()
    };
    assert!(missed.is_empty());
    let Recovery::Recovered { missed } = s.recover(now, 0, "e") else {
        panic!()
    };
    assert_eq!(missed.len(), 5);
}

#[test]
fn recovery_fails_for_another_epoch_a_gap_or_the_future() {
    let now = origin();
    let mut s = stream(3, 60);
    for i in 1..=6 {
        s.append(now, i);
    }
    assert_eq!(
        s.recover(now, 4, "other"),
        Recovery::Lost(LostReason::EpochChanged)
    );
    assert_eq!(
        s.recover(now, 7, "e"),
        Recovery::Lost(LostReason::FromTheFuture)
    );
    // 4, 5, 6 are kept: since = 3 still works, since = 2 lost message 3.
    assert!(matches!(s.recover(now, 3, "e"), Recovery::Recovered { .. }));
    assert_eq!(
        s.recover(now, 2, "e"),
        Recovery::Lost(LostReason::OutOfRange)
    );
}

#[test]
fn messages_expire_after_the_ttl() {
    let now = origin();
    let mut s = stream(10, 10);
    s.append(now, 1);
    s.append(now + Duration::from_secs(5), 2);
    let later = now + Duration::from_secs(12);
    let (kept, complete) = s.since(later, 0);
    assert_eq!((offsets(&kept), complete), (vec![2], false));
    s.expire(now + Duration::from_secs(16));
    assert!(s.is_empty());
    assert_eq!(s.top(), 2, "offsets survive expiry");
    assert!(
        matches!(s.recover(now + Duration::from_secs(16), 2, "e"), Recovery::Recovered { missed } if missed.is_empty())
    );
}

#[test]
fn a_zero_size_history_still_counts() {
    let now = origin();
    let mut s = stream(0, 10);
    assert_eq!(s.append(now, 1), 1);
    assert_eq!(s.append(now, 2), 2);
    assert!(s.is_empty());
    assert_eq!(
        s.recover(now, 1, "e"),
        Recovery::Lost(LostReason::OutOfRange)
    );
}

proptest! {
    /// Offsets are strictly increasing by one and never reused, whatever the size and ttl.
    #[test]
    fn offsets_strictly_increase(size in 0usize..20, gaps in prop::collection::vec(0u64..5, 1..100)) {
        let mut now = origin();
        let mut s = stream(size, 3);
        let mut last = 0;
        for gap in gaps {
            now += Duration::from_secs(gap);
            let offset = s.append(now, 0);
            prop_assert_eq!(offset, last + 1);
            last = offset;
            let (kept, _) = s.since(now, 0);
            prop_assert!(kept.windows(2).all(|w| w[1].offset == w[0].offset + 1));
            prop_assert!(kept.last().is_none_or(|m| m.offset == last));
        }
    }

    /// A client that saw up to `since` and reconnects while publishes continue: it is
    /// registered at `registered`, the history is read at `read`, and the replay plus the
    /// de-duplicated live messages are exactly the offsets after `since`, once, in order.
    #[test]
    fn replay_plus_live_is_exactly_the_missed_range_and_the_new_ones(
        total in 1u64..200,
        since_frac in 0.0f64..1.0,
        reg_frac in 0.0f64..1.0,
        read_frac in 0.0f64..1.0,
    ) {
        let now = origin();
        let mut s = stream(1000, 600);
        let since = (total as f64 * since_frac) as u64;
        let registered = since + ((total - since) as f64 * reg_frac) as u64;
        let read = registered + ((total - registered) as f64 * read_frac) as u64;
        let mut live = Vec::new();
        let mut replay = Vec::new();
        for offset in 1..=total {
            s.append(now, offset);
            if offset > registered {
                live.push(offset); // queued for the client since it registered
            }
            if offset == read {
                let Recovery::Recovered { missed } = s.recover(now, since, "e") else { panic!() };
                replay = offsets(&missed);
            }
        }
        if read == 0 || read == since {
            let Recovery::Recovered { missed } = s.recover(now, since, "e") else { panic!() };
            if read == 0 { replay = offsets(&missed); } else { replay = (since + 1..=read).collect(); }
        }
        let mut mark = Watermark::new(since.max(replay.last().copied().unwrap_or(since)));
        let mut delivered = replay;
        delivered.extend(live.into_iter().filter(|o| mark.admit(*o)));
        prop_assert_eq!(delivered, (since + 1..=total).collect::<Vec<_>>());
    }
}
