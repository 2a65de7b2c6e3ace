use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn origin() -> Instant {
    crate::client::tests::origin()
}

fn stream(size: usize, ttl_secs: u64) -> History<u64> {
    stream_of_bytes(size, ttl_secs, usize::MAX)
}

fn stream_of_bytes(size: usize, ttl_secs: u64, max_bytes: usize) -> History<u64> {
    History::new(
        "e".into(),
        HistoryConfig {
            size,
            ttl: Duration::from_secs(ttl_secs),
            max_bytes,
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
        assert_eq!(s.append(now, i, 1), i);
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
        s.append(now, i, 1);
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
    s.append(now, 1, 1);
    s.append(now + Duration::from_secs(5), 2, 1);
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
    assert_eq!(s.append(now, 1, 1), 1);
    assert_eq!(s.append(now, 2, 1), 2);
    assert!(s.is_empty());
    assert_eq!(
        s.recover(now, 1, "e"),
        Recovery::Lost(LostReason::OutOfRange)
    );
}

#[test]
fn the_oldest_messages_go_when_the_bytes_exceed_max_bytes() {
    let now = origin();
    let mut s = stream_of_bytes(100, 60, 100);
    for i in 1..=4 {
        s.append(now, i, 25);
    }
    assert_eq!(s.bytes(), 100, "exactly max_bytes is within it");
    s.append(now, 5, 25); // 125 > 100: message 1 goes
    assert_eq!(s.bytes(), 100);
    let (kept, complete) = s.since(now, 0);
    assert_eq!((offsets(&kept), complete), (vec![2, 3, 4, 5], false));
    // Recovery stays exact: 1 was dropped for bytes, so since = 0 is out of range.
    assert_eq!(
        s.recover(now, 0, "e"),
        Recovery::Lost(LostReason::OutOfRange)
    );
    assert!(
        matches!(s.recover(now, 1, "e"), Recovery::Recovered { missed } if offsets(&missed) == [2, 3, 4, 5])
    );
}

#[test]
fn a_message_larger_than_max_bytes_is_kept_while_it_is_the_newest() {
    let now = origin();
    let mut s = stream_of_bytes(100, 60, 100);
    s.append(now, 1, 40);
    s.append(now, 2, 250);
    assert_eq!((offsets(&s.since(now, 0).0), s.bytes()), (vec![2], 250));
    assert!(
        matches!(s.recover(now, 1, "e"), Recovery::Recovered { missed } if offsets(&missed) == [2])
    );
    s.append(now, 3, 10);
    assert_eq!((offsets(&s.since(now, 0).0), s.bytes()), (vec![3], 10));
}

#[test]
fn expiry_and_trim_give_the_bytes_back() {
    let now = origin();
    let mut s = stream_of_bytes(100, 10, 1000);
    s.append(now, 1, 100);
    s.append(now + Duration::from_secs(5), 2, 50);
    s.append(now + Duration::from_secs(6), 3, 20);
    assert_eq!(s.last_append(), Some(now + Duration::from_secs(6)));
    s.expire(now + Duration::from_secs(11));
    assert_eq!(s.bytes(), 70);
    assert_eq!(s.trim(1), 50, "whole messages: at least what was asked");
    assert_eq!(s.trim(1000), 20);
    assert_eq!((s.bytes(), s.last_append(), s.top()), (0, None, 3));
    assert_eq!(s.trim(1), 0);
}

proptest! {
    /// Whatever the sizes, the retained bytes never exceed `max_bytes` unless the newest
    /// message alone is larger; the byte count is the sum of the retained messages; the
    /// retained offsets are one contiguous range ending at the newest; and a `since` is
    /// recovered exactly when every message after it is retained.
    #[test]
    fn retained_bytes_stay_within_max_bytes(
        max_bytes in 1usize..2000,
        size in 1usize..50,
        sizes in prop::collection::vec(0usize..600, 1..200),
        since_frac in 0.0f64..1.0,
    ) {
        let now = origin();
        let mut s = stream_of_bytes(size, 600, max_bytes);
        for (i, bytes) in sizes.iter().enumerate() {
            s.append(now, i as u64 + 1, *bytes);
            let (kept, _) = s.since(now, 0);
            let sum: usize = kept.iter().map(|m| m.bytes).sum();
            prop_assert_eq!(sum, s.bytes());
            prop_assert!(s.bytes() <= max_bytes || kept.len() == 1, "{} bytes in {} messages", s.bytes(), kept.len());
            prop_assert!(kept.len() <= size);
            prop_assert!(kept.windows(2).all(|w| w[1].offset == w[0].offset + 1));
            prop_assert_eq!(kept.last().map(|m| m.offset), Some(s.top()));
        }
        let top = s.top();
        let since = (top as f64 * since_frac) as u64;
        let (kept, _) = s.since(now, 0);
        let first = kept[0].offset;
        match s.recover(now, since, "e") {
            Recovery::Recovered { missed } => {
                prop_assert!(since + 1 >= first);
                prop_assert_eq!(offsets(&missed), (since + 1..=top).collect::<Vec<_>>());
            }
            Recovery::Lost(reason) => {
                prop_assert_eq!(reason, LostReason::OutOfRange);
                prop_assert!(since + 1 < first);
            }
        }
    }


    /// Offsets are strictly increasing by one and never reused, whatever the size and ttl.
    #[test]
    fn offsets_strictly_increase(size in 0usize..20, gaps in prop::collection::vec(0u64..5, 1..100)) {
        let mut now = origin();
        let mut s = stream(size, 3);
        let mut last = 0;
        for gap in gaps {
            now += Duration::from_secs(gap);
            let offset = s.append(now, 0, 1);
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
            s.append(now, offset, 1);
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

/// Walks `stream` forwards in pages of `limit`, as a client does: `since` = the last offset
/// of the previous page, until a page says it is complete.
fn walk(stream: &mut History<u64>, now: Instant, limit: u32) -> (Vec<u64>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut since = 0;
    loop {
        let query = HistoryQuery {
            since,
            limit: Some(limit),
            reverse: false,
        };
        let (page, complete) = stream.page(now, query);
        pages += 1;
        assert!(page.len() <= limit as usize);
        seen.extend(offsets(&page));
        if complete {
            return (seen, pages);
        }
        since = page.last().map_or(since, |m| m.offset);
        assert!(pages < 10_000, "the walk does not end");
    }
}

#[test]
fn pages_walk_2500_messages_in_pages_of_1000_without_a_gap_or_a_repeat() {
    let now = origin();
    let mut s = stream(5000, 600);
    for i in 0..2500 {
        s.append(now, i, 1);
    }
    let (seen, pages) = walk(&mut s, now, 1000);
    assert_eq!(seen, (1..=2500).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    let newest = HistoryQuery {
        since: 0,
        limit: Some(3),
        reverse: true,
    };
    let (page, complete) = s.page(now, newest);
    assert_eq!((offsets(&page), complete), (vec![2500, 2499, 2498], false));
    let (page, complete) = s.page(
        now,
        HistoryQuery {
            since: 2497,
            ..newest
        },
    );
    assert_eq!((offsets(&page), complete), (vec![2500, 2499, 2498], true));
    // Without a limit: the v1 answer, everything after `since`.
    let (page, complete) = s.page(now, HistoryQuery::since(2400));
    assert_eq!((page.len(), complete), (100, true));
}

#[test]
fn a_page_of_a_stream_that_dropped_messages_after_since_is_incomplete() {
    let now = origin();
    let mut s = stream(3, 600);
    for i in 0..5 {
        s.append(now, i, 1);
    }
    let query = HistoryQuery {
        since: 0,
        limit: Some(10),
        reverse: false,
    };
    let (page, complete) = s.page(now, query);
    assert_eq!((offsets(&page), complete), (vec![3, 4, 5], false));
    let (page, complete) = s.page(now, HistoryQuery { since: 2, ..query });
    assert_eq!((offsets(&page), complete), (vec![3, 4, 5], true));
}

proptest! {
    /// Whatever the stream, the page size and the direction, a page is a run of whole
    /// messages from the requested end, and a forward walk sees every retained message
    /// once, in order.
    #[test]
    fn pages_are_runs_from_the_requested_end(
        n in 0u64..300,
        size in 1usize..200,
        limit in 1u32..50,
        since in 0u64..320,
        reverse: bool,
    ) {
        let now = origin();
        let mut s = stream(size, 600);
        for i in 0..n {
            s.append(now, i, 1);
        }
        let (after, all) = s.since(now, since);
        let after = offsets(&after);
        let (page, complete) = s.page(now, HistoryQuery { since, limit: Some(limit), reverse });
        let page = offsets(&page);
        let mut want = after.clone();
        if reverse {
            want.reverse();
        }
        want.truncate(limit as usize);
        prop_assert_eq!(&page, &want);
        prop_assert_eq!(complete, all && after.len() <= limit as usize);
        let first = n.saturating_sub(size as u64) + 1;
        let (seen, _) = walk(&mut s, now, limit);
        prop_assert_eq!(seen, (first..=n).collect::<Vec<_>>());
    }
}
