//! The budget of retained history across all of a node's (or a deployment's) streams:
//! which streams to free, or trim, when their bytes together exceed `max_total_bytes`.
//!
//! `history.max_bytes` bounds one project; this bounds them all, because a token for
//! `projects: ["*"]` that may publish can create any number of projects.
//!
//! ```text
//!   total over max_total_bytes?  ── no ──► nothing
//!          │ yes: free down to the target (7/8 of the budget), in this order:
//!          ▼
//!   1. idle streams (no member), the longest since their last append first: freed whole
//!      (their next use creates a new epoch, so their clients get `recovered: false`)
//!   2. still over: streams with members, the longest since their last append first:
//!      their oldest messages are dropped (a `since` below the cut is `OutOfRange`)
//! ```
//!
//! - The caller owns the counter and the streams: it keeps the total in an atomic, takes a
//!   snapshot of the streams' [`Usage`] when the total crosses the budget, and applies the
//!   [`Cut`]s it gets back. Nothing here reads a clock: `last_append` is whatever instant
//!   the caller recorded.
//! - The target sits below the budget so that a node at its budget does not plan again on
//!   every publish: after a plan, an eighth of the budget must be appended before the next.
//! - Streams with members are trimmed only after every idle one is gone: a member's history
//!   is what it recovers from after a network blip; an idle stream's waits for nobody.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ws_core::retention::{Budget, Cut, Usage};
//!
//! let t = Instant::now();
//! let budget = Budget::new(800);
//! let usage = vec![
//!     Usage { key: "old-idle", bytes: 300, last_append: t, has_members: false },
//!     Usage { key: "new-idle", bytes: 300, last_append: t + Duration::from_secs(5), has_members: false },
//!     Usage { key: "busy", bytes: 300, last_append: t, has_members: true },
//! ];
//! // 900 > 800: free at least 200 to reach the target of 700; the oldest idle stream goes.
//! assert_eq!(budget.plan(900, usage), [("old-idle", Cut::Free)]);
//! ```

use std::time::Instant;

/// One stream as the caller sees it when it plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage<K> {
    /// Whatever names the stream for the caller (a project, a shard and a project…).
    pub key: K,
    /// What its retained messages weigh.
    pub bytes: u64,
    /// When its newest retained message was appended.
    pub last_append: Instant,
    /// Whether someone is connected to it (on this node, or anywhere for a shared broker).
    pub has_members: bool,
}

/// What to do to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Forget the stream: offsets, epoch and history. Only ever for a stream with no member.
    Free,
    /// Drop its oldest messages until at least `bytes` are gone.
    Trim {
        /// At least this much.
        bytes: u64,
    },
}

/// The total budget. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    max_total_bytes: u64,
}

impl Budget {
    /// A budget of `max_total_bytes` across all streams.
    pub fn new(max_total_bytes: u64) -> Self {
        Self { max_total_bytes }
    }

    /// The budget.
    pub fn max_total_bytes(&self) -> u64 {
        self.max_total_bytes
    }

    /// Whether a node holding `total` bytes must plan.
    pub fn is_over(&self, total: u64) -> bool {
        total > self.max_total_bytes
    }

    /// What a plan frees down to: 7/8 of the budget.
    pub fn target(&self) -> u64 {
        self.max_total_bytes - self.max_total_bytes / 8
    }

    /// The cuts that bring `total` down to the [target](Self::target), given the streams
    /// that hold it; nothing when `total` is within the budget. Idle streams are freed
    /// oldest first, then streams with members are trimmed oldest first. When `streams`
    /// hold less than `total` says (the caller's counter moved meanwhile), everything in
    /// them is cut, and the next plan sees the rest.
    pub fn plan<K>(&self, total: u64, mut streams: Vec<Usage<K>>) -> Vec<(K, Cut)> {
        if !self.is_over(total) {
            return Vec::new();
        }
        let mut need = total - self.target();
        streams.retain(|s| s.bytes > 0);
        // Idle first, then by age; the sort is stable, so equal ages keep the caller's order.
        streams.sort_by_key(|s| (s.has_members, s.last_append));
        let mut cuts = Vec::new();
        for stream in streams {
            if need == 0 {
                break;
            }
            if stream.has_members {
                let bytes = stream.bytes.min(need);
                need -= bytes;
                cuts.push((stream.key, Cut::Trim { bytes }));
            } else {
                need = need.saturating_sub(stream.bytes);
                cuts.push((stream.key, Cut::Free));
            }
        }
        cuts
    }
}

#[cfg(test)]
mod tests;
