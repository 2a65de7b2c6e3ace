use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn origin() -> Instant {
    crate::client::tests::origin()
}

fn usage(key: u32, bytes: u64, age_secs: u64, has_members: bool) -> Usage<u32> {
    Usage {
        key,
        bytes,
        // Older streams appended earlier: `age_secs` before a fixed "now".
        last_append: origin() + Duration::from_secs(1000 - age_secs),
        has_members,
    }
}

#[test]
fn within_the_budget_nothing_is_cut() {
    let budget = Budget::new(1000);
    assert!(!budget.is_over(1000));
    assert!(budget.plan(1000, vec![usage(1, 1000, 9, false)]).is_empty());
}

#[test]
fn the_oldest_idle_streams_go_first_down_to_seven_eighths() {
    let budget = Budget::new(800);
    assert_eq!(budget.target(), 700);
    let streams = vec![
        usage(1, 100, 10, false),
        usage(2, 100, 30, false),
        usage(3, 100, 20, false),
        usage(4, 600, 40, true),
    ];
    // 900 - 700 = 200 to free: the two oldest idle streams, 2 then 3; the member's stream,
    // older still, stays whole.
    assert_eq!(budget.plan(900, streams), [(2, Cut::Free), (3, Cut::Free)]);
}

#[test]
fn streams_with_members_are_trimmed_only_when_idle_ones_are_not_enough() {
    let budget = Budget::new(800);
    let streams = vec![
        usage(1, 100, 5, false),
        usage(2, 500, 10, true),
        usage(3, 400, 50, true),
        usage(4, 0, 99, false),
    ];
    // 1000 - 700 = 300: stream 1 (100) is freed, then 200 come from the oldest member's
    // stream; the empty stream is not worth a cut.
    assert_eq!(
        budget.plan(1000, streams),
        [(1, Cut::Free), (3, Cut::Trim { bytes: 200 })]
    );
}

#[test]
fn a_stale_snapshot_cuts_everything_it_has() {
    let budget = Budget::new(100);
    let streams = vec![usage(1, 10, 1, false), usage(2, 10, 2, true)];
    assert_eq!(
        budget.plan(1000, streams),
        [(1, Cut::Free), (2, Cut::Trim { bytes: 10 })]
    );
}

fn arb_streams() -> impl Strategy<Value = Vec<Usage<u32>>> {
    prop::collection::vec((0u64..500, 0u64..100, any::<bool>()), 0..40).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (bytes, age, members))| usage(i as u32, bytes, age, members))
            .collect()
    })
}

proptest! {
    /// Applied to the snapshot it was made from, a plan brings the total within the budget
    /// (to the target), never frees a stream with members, trims a member's stream only
    /// once every idle stream is freed, frees idle streams oldest first, and never cuts a
    /// stream twice or more than it holds.
    #[test]
    fn a_plan_brings_the_total_within_the_budget(
        streams in arb_streams(),
        max in 1u64..5000,
    ) {
        let budget = Budget::new(max);
        let total: u64 = streams.iter().map(|s| s.bytes).sum();
        let cuts = budget.plan(total, streams.clone());
        if total <= max {
            prop_assert!(cuts.is_empty());
            return Ok(());
        }
        let mut left = total;
        let mut seen = std::collections::HashSet::new();
        for (key, cut) in &cuts {
            prop_assert!(seen.insert(*key), "stream {} cut twice", key);
            let s = &streams[*key as usize];
            match cut {
                Cut::Free => {
                    prop_assert!(!s.has_members, "freed stream {} has members", key);
                    left -= s.bytes;
                }
                Cut::Trim { bytes } => {
                    prop_assert!(s.has_members);
                    prop_assert!(*bytes > 0 && *bytes <= s.bytes);
                    left -= bytes;
                }
            }
        }
        prop_assert!(left <= budget.target(), "left {} over target {}", left, budget.target());
        let freed = |s: &Usage<u32>| cuts.iter().any(|(k, c)| *k == s.key && *c == Cut::Free);
        let idle: Vec<_> = streams.iter().filter(|s| !s.has_members && s.bytes > 0).collect();
        if cuts.iter().any(|(_, c)| matches!(c, Cut::Trim { .. })) {
            prop_assert!(idle.iter().all(|s| freed(s)), "a member's stream trimmed before an idle one was freed");
        }
        for a in idle.iter().filter(|s| freed(s)) {
            for b in idle.iter().filter(|s| !freed(s)) {
                prop_assert!(a.last_append <= b.last_append, "{} freed before older {}", a.key, b.key);
            }
        }
        // Nothing more than needed: without its last cut the plan would not reach the target.
        if let Some((key, cut)) = cuts.last() {
            let last = match cut { Cut::Free => streams[*key as usize].bytes, Cut::Trim { bytes } => *bytes };
            prop_assert!(left + last > budget.target());
        }
    }
}
