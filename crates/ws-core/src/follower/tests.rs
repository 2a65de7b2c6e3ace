use std::collections::{HashMap, HashSet, VecDeque};

use proptest::prelude::*;

use super::*;

fn follower(epoch: &str, last: u64) -> Follower {
    Follower::new(Some(epoch.to_owned()), last)
}

#[test]
fn delivers_in_order_and_drops_duplicates() {
    let mut f = follower("e", 3);
    assert_eq!(f.handle_message("e", 2), Verdict::Duplicate);
    assert_eq!(f.handle_message("e", 3), Verdict::Duplicate);
    assert_eq!(f.handle_message("e", 4), Verdict::Deliver);
    assert_eq!(f.handle_message("e", 4), Verdict::Duplicate);
    assert_eq!(f.handle_message("e", 5), Verdict::Deliver);
    assert_eq!((f.epoch(), f.last()), (Some("e"), 5));
}

#[test]
fn a_gap_is_filled_from_the_history() {
    let mut f = follower("e", 3);
    assert_eq!(f.handle_message("e", 7), Verdict::Gap { from: 4, to: 6 });
    // Nothing is recorded until the history is read after 3.
    assert_eq!(f.last(), 3);
    // Retained: 2..=8 (8 was published after 7, before the read).
    assert_eq!(f.handle_fill("e", 8, 2), Fill::Replay);
    let delivered: Vec<u64> = (4..=8).filter(|&m| f.admit(m)).collect();
    assert_eq!(delivered, [4, 5, 6, 7, 8]);
    // The held live message and the later live copy of 8 were delivered from the history.
    assert!(!f.admit(7));
    assert_eq!(f.handle_message("e", 8), Verdict::Duplicate);
    assert_eq!(f.handle_message("e", 9), Verdict::Deliver);
}

#[test]
fn a_gap_the_history_no_longer_holds_is_lost() {
    let mut f = follower("e", 3);
    assert_eq!(f.handle_message("e", 9), Verdict::Gap { from: 4, to: 8 });
    // Retained: 6..=9; 4 and 5 are gone.
    assert_eq!(f.handle_fill("e", 9, 6), Fill::Lost(LostReason::OutOfRange));
    // The stream continues after its top; the held message is not delivered.
    assert_eq!(f.last(), 9);
    assert!(!f.admit(9));
    assert_eq!(f.handle_message("e", 10), Verdict::Deliver);
}

#[test]
fn a_new_epoch_is_a_loss_and_restarts_the_stream() {
    let mut f = follower("e1", 40);
    assert_eq!(
        f.handle_message("e2", 3),
        Verdict::Lost(LostReason::EpochChanged)
    );
    assert_eq!((f.epoch(), f.last()), (Some("e2"), 2));
    assert!(f.admit(3));
    assert_eq!(f.handle_message("e2", 4), Verdict::Deliver);
    // An offset 0 (no real message has it) is not delivered.
    assert_eq!(
        f.handle_message("e3", 0),
        Verdict::Lost(LostReason::EpochChanged)
    );
    assert!(!f.admit(0));
}

#[test]
fn a_fill_of_another_epoch_is_a_loss() {
    let mut f = follower("e1", 5);
    assert_eq!(
        f.handle_fill("e2", 2, 1),
        Fill::Lost(LostReason::EpochChanged)
    );
    assert_eq!((f.epoch(), f.last()), (Some("e2"), 2));
    assert_eq!(f.handle_message("e2", 3), Verdict::Deliver);
}

#[test]
fn a_fill_behind_what_was_delivered_is_a_loss() {
    let mut f = follower("e", 10);
    assert_eq!(
        f.handle_fill("e", 3, 1),
        Fill::Lost(LostReason::FromTheFuture)
    );
    assert_eq!(f.last(), 3);
}

#[test]
fn a_fill_with_nothing_missed_replays_nothing() {
    let mut f = follower("e", 5);
    assert_eq!(f.handle_fill("e", 5, 6), Fill::Replay);
    assert_eq!(f.last(), 5);
}

#[test]
fn an_unknown_epoch_is_learnt() {
    // From the first message.
    let mut f = Follower::new(None, 0);
    assert_eq!(f.handle_message("e", 1), Verdict::Deliver);
    assert_eq!(f.epoch(), Some("e"));
    // From a member's seed, which never replaces a known epoch.
    let mut f = Follower::new(None, 0);
    f.handle_seed("e");
    f.handle_seed("other");
    assert_eq!(f.epoch(), Some("e"));
    assert_eq!(
        f.handle_message("e2", 1),
        Verdict::Lost(LostReason::EpochChanged)
    );
    // From a fill, which recovers against the stream's own epoch.
    let mut f = Follower::new(None, 0);
    assert_eq!(f.handle_fill("e", 2, 1), Fill::Replay);
    assert_eq!(f.epoch(), Some("e"));
}

// ===== the property test =====

/// What happens next, to Redis, to the channel or to the node.
#[derive(Debug, Clone)]
enum Step {
    /// A node publishes: the next offset of the current epoch, retained and put on the channel.
    Publish,
    /// The channel delivers one message in flight (`pick` among them: reordered); with
    /// `again`, a copy stays in flight (duplicated).
    Deliver { pick: usize, again: bool },
    /// The channel loses one message in flight.
    Drop { pick: usize },
    /// Redis loses its data: a new epoch from offset 1. The pub/sub connection goes with
    /// it, and what was in flight with the connection.
    LoseData,
    /// The pub/sub connection drops; the node reconnects and fills from the history.
    Reconnect,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::Publish),
        6 => (any::<usize>(), prop::bool::weighted(0.2))
            .prop_map(|(pick, again)| Step::Deliver { pick, again }),
        2 => any::<usize>().prop_map(|pick| Step::Drop { pick }),
        1 => Just(Step::LoseData),
        1 => Just(Step::Reconnect),
    ]
}

/// Redis: the project's stream (epoch, top, retained offsets) and the channel.
#[derive(Debug)]
struct Redis {
    epoch: String,
    epochs: u32,
    top: u64,
    retained: VecDeque<u64>,
    size: usize,
    in_flight: Vec<(String, u64)>,
    /// Every epoch's newest offset.
    published: HashMap<String, u64>,
}

impl Redis {
    fn new(size: usize) -> Self {
        Self {
            epoch: "e0".to_owned(),
            epochs: 0,
            top: 0,
            retained: VecDeque::new(),
            size,
            in_flight: Vec::new(),
            published: HashMap::new(),
        }
    }

    fn publish(&mut self) {
        self.top += 1;
        self.retained.push_back(self.top);
        if self.retained.len() > self.size {
            self.retained.pop_front();
        }
        self.in_flight.push((self.epoch.clone(), self.top));
        self.published.insert(self.epoch.clone(), self.top);
    }

    fn lose_data(&mut self) {
        self.epochs += 1;
        self.epoch = format!("e{}", self.epochs);
        self.top = 0;
        self.retained.clear();
        self.in_flight.clear();
    }

    fn first(&self) -> u64 {
        self.retained.front().copied().unwrap_or(self.top + 1)
    }
}

/// What the node did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Delivered(String, u64),
    /// The project's members were closed (1013).
    Lost,
}

/// The node: the follower driven as `ws-broker-redis`'s subscriber drives it.
struct Node {
    follower: Follower,
    out: Vec<Out>,
}

impl Node {
    fn on_message(&mut self, redis: &Redis, epoch: &str, offset: u64) {
        match self.follower.handle_message(epoch, offset) {
            Verdict::Deliver => self.out.push(Out::Delivered(epoch.to_owned(), offset)),
            Verdict::Duplicate => {}
            Verdict::Gap { from, to } => {
                assert_eq!((from, to), (self.follower.last() + 1, offset - 1));
                self.fill(redis);
                if self.follower.admit(offset) {
                    self.out.push(Out::Delivered(epoch.to_owned(), offset));
                }
            }
            Verdict::Lost(_) => {
                self.out.push(Out::Lost);
                if self.follower.admit(offset) {
                    self.out.push(Out::Delivered(epoch.to_owned(), offset));
                }
            }
        }
    }

    /// Reads the history after `last` and hands it to the follower.
    fn fill(&mut self, redis: &Redis) {
        let since = self.follower.last();
        let after: Vec<u64> = redis
            .retained
            .iter()
            .copied()
            .filter(|&m| m > since)
            .collect();
        match self
            .follower
            .handle_fill(&redis.epoch, redis.top, redis.first())
        {
            Fill::Replay => {
                for m in after {
                    if self.follower.admit(m) {
                        self.out.push(Out::Delivered(redis.epoch.clone(), m));
                    }
                }
            }
            Fill::Lost(_) => self.out.push(Out::Lost),
        }
    }
}

proptest! {
    /// For any interleaving of publishes, deliveries that are reordered, duplicated or lost,
    /// data losses and reconnects: everything the node delivers was published, nothing is
    /// delivered twice, and between two reported losses the node delivers one epoch's
    /// offsets one after the other with none missing (the first run from where the node
    /// subscribed); once it has filled from the history at the end, it has delivered up to
    /// the stream's newest offset. So a message is only ever missed with a loss reported.
    #[test]
    fn the_follower_delivers_each_offset_once_in_order_or_reports_a_loss(
        size in 1usize..6,
        before in 0u64..8,
        unknown in any::<bool>(),
        steps in prop::collection::vec(step(), 0..120),
    ) {
        let mut redis = Redis::new(size);
        // A node that subscribes before the stream exists reads no epoch and top 0.
        let before = if unknown { 0 } else { before };
        for _ in 0..before {
            redis.publish();
        }
        redis.in_flight.clear();
        let start = (redis.epoch.clone(), redis.top);
        let mut node = Node {
            follower: Follower::new((!unknown).then(|| redis.epoch.clone()), redis.top),
            out: Vec::new(),
        };
        if unknown {
            // The member whose connection subscribed reads the stream (creating it) and
            // seeds its epoch.
            node.follower.handle_seed(&redis.epoch);
        }
        for step in steps {
            match step {
                Step::Publish => redis.publish(),
                Step::Deliver { pick, again } => {
                    if redis.in_flight.is_empty() {
                        continue;
                    }
                    let i = pick % redis.in_flight.len();
                    let (epoch, offset) = if again {
                        redis.in_flight[i].clone()
                    } else {
                        redis.in_flight.remove(i)
                    };
                    node.on_message(&redis, &epoch, offset);
                }
                Step::Drop { pick } => {
                    if !redis.in_flight.is_empty() {
                        let i = pick % redis.in_flight.len();
                        redis.in_flight.remove(i);
                    }
                }
                Step::LoseData => redis.lose_data(),
                Step::Reconnect => {
                    redis.in_flight.clear();
                    node.fill(&redis);
                }
            }
        }
        node.fill(&redis);

        let mut seen = HashSet::new();
        for out in &node.out {
            if let Out::Delivered(epoch, offset) = out {
                let top = redis.published.get(epoch).copied().unwrap_or(0);
                prop_assert!(*offset >= 1 && *offset <= top, "{epoch}:{offset} never published");
                prop_assert!(seen.insert((epoch.clone(), *offset)), "{epoch}:{offset} twice");
            }
        }
        let runs: Vec<&[Out]> = node.out.split(|o| *o == Out::Lost).collect();
        for (i, run) in runs.iter().enumerate() {
            let delivered: Vec<(&str, u64)> = run
                .iter()
                .filter_map(|o| match o {
                    Out::Delivered(e, m) => Some((e.as_str(), *m)),
                    Out::Lost => None,
                })
                .collect();
            if i == 0 && let Some(&(epoch, offset)) = delivered.first() {
                prop_assert_eq!((epoch, offset), (start.0.as_str(), start.1 + 1));
            }
            for w in delivered.windows(2) {
                prop_assert_eq!(w[1], (w[0].0, w[0].1 + 1), "missed without a loss: {:?}", node.out);
            }
            if i == runs.len() - 1 && let Some(&last) = delivered.last() {
                prop_assert_eq!(last, (redis.epoch.as_str(), redis.top));
            }
        }
        prop_assert_eq!(node.follower.epoch(), Some(redis.epoch.as_str()));
        prop_assert_eq!(node.follower.last(), redis.top);
    }
}
