//! The property test: a node, its project streams and one connection's outbox, driven
//! through any interleaving of publishes, subscribes, broker reads, recoveries and writes.

use std::collections::{HashSet, VecDeque};

use proptest::prelude::*;

use super::{config, project};
use crate::ids::{ConnId, ProjectId};
use crate::subscriptions::*;

const PROJECTS: usize = 2;

/// A frame of the simulation: its project and offset (`None`: an ephemeral frame).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    project: usize,
    offset: Option<u64>,
}

/// Where a recovery read starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// `since: top - back` (clamped at 0).
    Since(u64),
    /// `last: k`.
    Last(u64),
    /// No position, or a lost recovery: nothing is replayed.
    Latest,
}

/// What happens next on the node.
#[derive(Debug, Clone)]
enum Op {
    /// A message is published to the project; it reaches the outbox if the connection is
    /// registered for it.
    Publish(usize),
    /// An ephemeral (or presence) frame of the project, without offset.
    Ephemeral(usize),
    /// The client subscribes: `handle_subscribe`, then the connection is registered.
    Subscribe(usize),
    /// The broker is read for the project's pending subscription.
    Read(usize, Start),
    /// A read is handed to `handle_recovered` (`pick` among those not applied yet).
    Apply(usize),
    /// A read failed instead: `handle_recovery_failed`.
    Fail(usize),
    /// The writer takes up to this many frames from the outbox.
    Emit(usize),
    /// The client unsubscribes: `handle_unsubscribe`, then the connection is unregistered.
    Unsubscribe(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PROJECTS;
    let start = prop_oneof![
        (0u64..6).prop_map(Start::Since),
        (0u64..6).prop_map(Start::Last),
        Just(Start::Latest),
    ];
    prop_oneof![
        5 => p.clone().prop_map(Op::Publish),
        1 => p.clone().prop_map(Op::Ephemeral),
        2 => p.clone().prop_map(Op::Subscribe),
        2 => (p.clone(), start).prop_map(|(p, s)| Op::Read(p, s)),
        2 => (0usize..4).prop_map(Op::Apply),
        1 => (0usize..4).prop_map(Op::Fail),
        3 => (1usize..5).prop_map(Op::Emit),
        1 => p.prop_map(Op::Unsubscribe),
    ]
}

/// What the client received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// `subscribed` with the read's top and the offsets replayed.
    Subscribed {
        project: usize,
        top: u64,
        missed: Vec<u64>,
    },
    Frame(Frame),
    Unsubscribed(usize),
}

/// What the model expects of a project on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Model {
    None,
    Recovering(Ticket),
    Live,
}

/// One node and one connection, driven as the transport drives them.
struct Sim {
    subs: Subscriptions<Frame>,
    ids: Vec<ProjectId>,
    /// Each project's newest offset.
    tops: [u64; PROJECTS],
    /// The member the hub queues the project's frames for, if registered.
    registered: [Option<ConnId>; PROJECTS],
    /// The connection's send queue, all projects together, each frame with its member.
    outbox: VecDeque<(ConnId, Frame)>,
    /// The transport's member id counter.
    next_member: u64,
    /// Subscriptions whose broker read has not started.
    unread: [Option<Ticket>; PROJECTS],
    /// Reads done and not handed over yet.
    reads: Vec<(Ticket, RecoveredRange<Frame>)>,
    model: [Model; PROJECTS],
    client: Vec<Seen>,
    /// A held buffer overflowed: the connection was closed (4008).
    closed: bool,
}

impl Sim {
    fn new(config: SubscriptionsConfig) -> Self {
        Self {
            subs: Subscriptions::new(config),
            ids: (0..PROJECTS).map(|p| project(&format!("p{p}"))).collect(),
            tops: [0; PROJECTS],
            registered: [None; PROJECTS],
            outbox: VecDeque::new(),
            next_member: 1,
            unread: [None, None],
            reads: Vec::new(),
            model: [Model::None, Model::None],
            client: Vec::new(),
            closed: false,
        }
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Publish(p) => {
                self.tops[p] += 1;
                if let Some(member) = self.registered[p] {
                    let frame = Frame {
                        project: p,
                        offset: Some(self.tops[p]),
                    };
                    self.outbox.push_back((member, frame));
                }
            }
            Op::Ephemeral(p) => {
                if let Some(member) = self.registered[p] {
                    let frame = Frame {
                        project: p,
                        offset: None,
                    };
                    self.outbox.push_back((member, frame));
                }
            }
            Op::Subscribe(p) => {
                let count = self.model.iter().filter(|m| **m != Model::None).count();
                let member = ConnId(self.next_member);
                self.next_member += 1;
                match self.subs.handle_subscribe(self.ids[p].clone(), member) {
                    Ok(ticket) => {
                        prop_assert_eq!(&self.model[p], &Model::None);
                        prop_assert_eq!(ticket.member(), member);
                        self.registered[p] = Some(member);
                        self.unread[p] = Some(ticket.clone());
                        self.model[p] = Model::Recovering(ticket);
                    }
                    Err(SubscribeError::AlreadySubscribed) => {
                        prop_assert_ne!(&self.model[p], &Model::None)
                    }
                    Err(SubscribeError::TooMany { max }) => prop_assert_eq!(count, max),
                }
            }
            Op::Read(p, start) => {
                if let Some(ticket) = self.unread[p].take() {
                    let top = self.tops[p];
                    let first = match start {
                        Start::Since(back) => top.saturating_sub(back) + 1,
                        Start::Last(k) => top.saturating_sub(k) + 1,
                        Start::Latest => top + 1,
                    };
                    let missed = (first..=top)
                        .map(|o| {
                            (
                                o,
                                Frame {
                                    project: p,
                                    offset: Some(o),
                                },
                            )
                        })
                        .collect();
                    self.reads.push((ticket, RecoveredRange { top, missed }));
                }
            }
            Op::Apply(pick) => {
                if !self.reads.is_empty() {
                    let (ticket, range) = self.reads.remove(pick % self.reads.len());
                    self.apply(ticket, range)?;
                }
            }
            Op::Fail(pick) => {
                if !self.reads.is_empty() {
                    let (ticket, _) = self.reads.remove(pick % self.reads.len());
                    let p = self.index(ticket.project());
                    let current = self.model[p] == Model::Recovering(ticket.clone());
                    prop_assert_eq!(self.subs.handle_recovery_failed(ticket), current);
                    if current {
                        self.registered[p] = None;
                        self.model[p] = Model::None;
                    }
                }
            }
            Op::Emit(n) => {
                for _ in 0..n {
                    let Some((member, frame)) = self.outbox.pop_front() else {
                        break;
                    };
                    let p = frame.project;
                    match self
                        .subs
                        .handle_frame(member, frame.offset, frame.clone(), 10)
                    {
                        Verdict::Deliver(f) => {
                            prop_assert_eq!(&f, &frame);
                            self.client.push(Seen::Frame(f));
                        }
                        Verdict::Held => {
                            prop_assert!(matches!(self.model[p], Model::Recovering(_)))
                        }
                        Verdict::Drop => {}
                        Verdict::Overflow => {
                            self.closed = true;
                            break;
                        }
                    }
                }
            }
            Op::Unsubscribe(p) => {
                let result = self.subs.handle_unsubscribe(&self.ids[p]);
                prop_assert_eq!(result.is_ok(), self.model[p] != Model::None);
                if result.is_ok() {
                    prop_assert_eq!(result.ok(), self.registered[p]);
                    self.registered[p] = None;
                    self.model[p] = Model::None;
                    self.client.push(Seen::Unsubscribed(p));
                }
            }
        }
        for p in 0..PROJECTS {
            prop_assert_eq!(
                self.subs.is_subscribed(&self.ids[p]),
                self.model[p] != Model::None
            );
            prop_assert_eq!(
                self.subs.is_live(&self.ids[p]),
                self.model[p] == Model::Live
            );
        }
        let listed: HashSet<&ProjectId> = self.subs.iter().map(|(_, p)| p).collect();
        prop_assert_eq!(listed.len(), self.subs.len());
        Ok(())
    }

    fn index(&self, id: &ProjectId) -> usize {
        self.ids.iter().position(|p| p == id).unwrap()
    }

    /// `handle_recovered`, then everything it queued is written.
    fn apply(&mut self, ticket: Ticket, range: RecoveredRange<Frame>) -> Result<(), TestCaseError> {
        let p = self.index(ticket.project());
        let current = self.model[p] == Model::Recovering(ticket.clone());
        let (top, missed) = (range.top, range.missed.iter().map(|(o, _)| *o).collect());
        self.subs.handle_recovered(ticket, range);
        let outputs: Vec<_> = std::iter::from_fn(|| self.subs.poll_output()).collect();
        if !current {
            prop_assert!(outputs.is_empty(), "a stale read went live: {:?}", outputs);
            return Ok(());
        }
        self.model[p] = Model::Live;
        let mut outputs = outputs.into_iter();
        prop_assert_eq!(
            outputs.next(),
            Some(Output::Recovered {
                project: self.ids[p].clone()
            })
        );
        self.client.push(Seen::Subscribed {
            project: p,
            top,
            missed,
        });
        for output in outputs {
            let Output::Frame(frame) = output else {
                return Err(TestCaseError::fail(format!("{output:?} after the marker")));
            };
            prop_assert_eq!(frame.project, p);
            self.client.push(Seen::Frame(frame));
        }
        Ok(())
    }

    /// No more ops: every pending subscription is read and recovered, and the outbox is
    /// emptied.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        for p in 0..PROJECTS {
            self.step(Op::Read(p, Start::Latest))?;
        }
        while !self.reads.is_empty() && !self.closed {
            self.step(Op::Apply(0))?;
        }
        while !self.outbox.is_empty() && !self.closed {
            self.step(Op::Emit(1))?;
        }
        Ok(())
    }

    /// Per project and subscription lifetime: nothing before `subscribed` or after
    /// `unsubscribed`; the messages are the replay then every offset after `top`, each
    /// once, in order; all of them up to the project's newest offset if the lifetime is
    /// still on at the end.
    fn check(&self) -> Result<(), TestCaseError> {
        for p in 0..PROJECTS {
            let mut lifetime: Option<(u64, Vec<u64>, Vec<u64>)> = None;
            for seen in &self.client {
                match seen {
                    Seen::Subscribed {
                        project,
                        top,
                        missed,
                    } if *project == p => {
                        prop_assert!(lifetime.is_none(), "subscribed twice: {:?}", self.client);
                        lifetime = Some((*top, missed.clone(), Vec::new()));
                    }
                    Seen::Frame(f) if f.project == p => {
                        let Some((_, _, delivered)) = &mut lifetime else {
                            return Err(TestCaseError::fail(format!(
                                "{f:?} outside a subscription: {:?}",
                                self.client
                            )));
                        };
                        delivered.extend(f.offset);
                    }
                    Seen::Unsubscribed(project) if *project == p => {
                        if let Some((top, missed, delivered)) = lifetime.take() {
                            check_lifetime(top, &missed, &delivered, None)?;
                        }
                    }
                    _ => {}
                }
            }
            if let Some((top, missed, delivered)) = lifetime {
                let end = (!self.closed).then_some(self.tops[p]);
                check_lifetime(top, &missed, &delivered, end)?;
            }
        }
        Ok(())
    }
}

/// `delivered` is `missed` then `top + 1, top + 2, …` (up to `end` when given).
fn check_lifetime(
    top: u64,
    missed: &[u64],
    delivered: &[u64],
    end: Option<u64>,
) -> Result<(), TestCaseError> {
    prop_assert!(
        delivered.starts_with(missed),
        "replay {:?} not first in {:?}",
        missed,
        delivered
    );
    let live = &delivered[missed.len()..];
    let expected: Vec<u64> = (top + 1..).take(live.len()).collect();
    prop_assert_eq!(live, &expected[..], "after top {}", top);
    if let Some(end) = end {
        prop_assert_eq!(
            top + live.len() as u64,
            end,
            "missing the newest: {:?}",
            delivered
        );
    }
    Ok(())
}

proptest! {
    /// For any interleaving of publishes, ephemeral frames, subscribes, broker reads,
    /// recoveries applied (late, stale or failed), writes and unsubscribes over two projects:
    /// each subscription's lifetime shows the client its replay then every later message,
    /// once, in order, with no gap, and nothing of the project outside it.
    #[test]
    fn every_subscription_gets_its_replay_then_every_message_once(
        max_subscriptions in 1usize..=PROJECTS,
        max_held_frames in 1usize..24,
        max_held_bytes in 5usize..400,
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let mut sim = Sim::new(config(max_subscriptions, max_held_frames, max_held_bytes));
        for op in ops {
            sim.step(op)?;
            if sim.closed {
                break;
            }
        }
        sim.finish()?;
        sim.check()?;
    }
}
