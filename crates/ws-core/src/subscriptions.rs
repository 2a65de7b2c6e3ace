//! The project subscriptions of one protocol v2 connection (SPEC §10): many projects over
//! one socket, each recovered from the broker while the connection's live frames already
//! flow, with no gap and no duplicate.
//!
//! v1 registers a connection in the hub, then reads its recovery, then writes the replay
//! before any live frame. In v2 the pumps already run when a `subscribe` arrives, so the
//! live frames of a project can reach the outbox before its recovery is read. A
//! [`Subscriptions`] holds them back until the recovery is in, then merges them with it by
//! offset:
//!
//! ```text
//!   subscribe p ─► handle_subscribe(p, m) ─► Ok(ticket): register member m for p in the
//!                                            hub, then read the broker; Err: answer
//!                                            `error` (SubscribeError::code)
//!
//!                 handle_recovered(ticket, {top, missed})
//!   (none) ──► Recovering ───────────────────────────────────► Live { watermark }
//!    ▲  ▲       │ handle_frame: Held, in order                   │ handle_frame:
//!    │  │       │ (over max_held_*: Overflow, close 4008)         │  offset ≤ watermark: Drop
//!    │  │       │                                                 │  otherwise: Deliver
//!    │  └───────┘ handle_recovery_failed(ticket), unsubscribe     │
//!    └────────────────────────────────────────────────────────────┘ handle_unsubscribe, remove
//!
//!   handle_recovered queues: Recovered { p } (write `subscribed`), then the missed frames,
//!   then the held frames above max(top, last missed), in order.
//! ```
//!
//! Registering before reading is what makes it exact: every message published after the
//! registration is in the outbox, and every one published before it has an offset ≤ `top`
//! (the newest offset when the broker was read), so it is either in `missed` or was already
//! seen by the client. The held frames at or below the watermark are those overlaps. Frames
//! without an offset (presence, ephemeral messages) are never duplicates: held ones follow
//! the replay, live ones pass. Nothing of a project is delivered before its `Recovered`
//! marker, and nothing once it is unsubscribed, even frames already in the outbox.
//!
//! A `subscribe` to a project the connection already subscribed to (or is recovering) is
//! refused with [`SubscribeError::AlreadySubscribed`] (`already_subscribed`), not treated as
//! a new recovery: a second replay would repeat messages already delivered, and the client
//! could not tell which `subscribed` its messages follow. To recover again, unsubscribe
//! first. A [`Ticket`] names one subscription's lifetime: a recovery read for a lifetime
//! that has since been unsubscribed is ignored, never applied to a later re-subscription
//! (which registered after that read and would miss what was published in between).
//!
//! Each subscription has a hub member id of its own (`m`, a fresh [`ConnId`] from the
//! transport's counter), which tags its frames in the outbox: a frame is routed by it, so a
//! frame queued for an earlier subscription to the same project is never taken for a later
//! one's, and a stale [`Ticket`] is one whose member is gone. The table is sorted by it
//! (a binary search on the path of every frame, no hashing); the requests that name a
//! project (subscribe, unsubscribe, a refresh's revocation) scan it, at most
//! `limits.max_subscriptions` entries.
//!
//! An idle (live) subscription costs one map entry of 40 bytes: the member id, the project
//! id (shared with the hub) and a 16-byte state holding the watermark, whatever `F` is;
//! the held frames are boxed and exist only while recovering.
//!
//! # Driving it
//!
//! Make every call from the task that writes the socket (or under one lock), so that the
//! writes follow the calls:
//!
//! 1. `subscribe`: [`Subscriptions::handle_subscribe`] with a fresh member id; on
//!    `Ok(ticket)` register that member in the hub for the project FIRST, THEN read the
//!    recovery from the broker.
//! 2. The read is in: [`Subscriptions::handle_recovered`], then drain
//!    [`Subscriptions::poll_output`] until `None`, writing in order: [`Output::Recovered`]
//!    is the `subscribed` frame, each [`Output::Frame`] the frame. A stale ticket queues
//!    nothing (and nothing is written). The read failed:
//!    [`Subscriptions::handle_recovery_failed`]; if it returns `true`, unregister the
//!    project from the hub and answer `error`.
//! 3. Every frame taken from the outbox goes through [`Subscriptions::handle_frame`] with
//!    the member id it was queued for: write
//!    it on [`Verdict::Deliver`] only; [`Verdict::Overflow`] closes the connection (4008).
//!    `handle_frame` queues no output; the outputs must have been drained before it.
//! 4. `unsubscribe`: [`Subscriptions::handle_unsubscribe`], unregister the member it returns
//!    from the hub, answer `unsubscribed`. A token refresh that revokes a project does the
//!    same with [`Subscriptions::remove`] (checking every project of
//!    [`Subscriptions::iter`]).
//! 5. The connection ends: unregister every member of [`Subscriptions::iter`].
//!
//! ```
//! use ws_core::{ConnId, ProjectId};
//! use ws_core::subscriptions::{Output, RecoveredRange, Subscriptions, Verdict};
//!
//! let mut subs = Subscriptions::new(Default::default());
//! let (p, member) = (ProjectId::parse("p").unwrap(), ConnId(41));
//! let ticket = subs.handle_subscribe(p.clone(), member).unwrap();
//! // Registered in the hub; message 5 is published before the broker is read: held.
//! assert_eq!(subs.handle_frame(member, Some(5), "m5", 2), Verdict::Held);
//! // The client last saw 3; the broker's newest offset was 5.
//! let range = RecoveredRange { top: 5, missed: vec![(4, "m4"), (5, "m5")] };
//! subs.handle_recovered(ticket, range);
//! assert_eq!(subs.poll_output(), Some(Output::Recovered { project: p.clone() }));
//! assert_eq!(subs.poll_output(), Some(Output::Frame("m4")));
//! assert_eq!(subs.poll_output(), Some(Output::Frame("m5")));
//! assert_eq!(subs.poll_output(), None); // the held 5 was a duplicate of the replay
//! assert_eq!(subs.handle_frame(member, Some(6), "m6", 2), Verdict::Deliver("m6"));
//! assert_eq!(subs.handle_unsubscribe(&p), Ok(member)); // unregister it from the hub
//! assert_eq!(subs.handle_frame(member, Some(7), "m7", 2), Verdict::Drop);
//! ```

use std::collections::VecDeque;

use crate::history::Watermark;
use crate::ids::{ConnId, ProjectId};

/// Limits of one connection's subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionsConfig {
    /// Subscriptions per connection (`limits.max_subscriptions`, default 128); over it a
    /// subscribe is refused with `too_many_subscriptions`.
    pub max_subscriptions: usize,
    /// Live frames held for one subscription while its recovery is read (default 1024,
    /// the send queue's frames); over it the connection is a slow consumer (4008).
    pub max_held_frames: usize,
    /// Bytes of live frames held for one subscription while its recovery is read (default
    /// 4 MiB, the send queue's bytes); over it the connection is a slow consumer (4008).
    pub max_held_bytes: usize,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        Self {
            max_subscriptions: 128,
            max_held_frames: 1024,
            max_held_bytes: 4 * 1024 * 1024,
        }
    }
}

/// One subscription's lifetime, from [`Subscriptions::handle_subscribe`]: hand it back with
/// its recovery ([`Subscriptions::handle_recovered`]) or its failure
/// ([`Subscriptions::handle_recovery_failed`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[must_use]
pub struct Ticket {
    project: ProjectId,
    member: ConnId,
}

impl Ticket {
    /// The project subscribed to: register the member in the hub for it, then read its
    /// recovery.
    pub fn project(&self) -> &ProjectId {
        &self.project
    }

    /// The subscription's hub member id, as given to [`Subscriptions::handle_subscribe`].
    pub fn member(&self) -> ConnId {
        self.member
    }
}

/// What the broker read for a subscription, after the connection was registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredRange<F> {
    /// The stream's newest offset when it was read (`offset` of the `subscribed` frame).
    pub top: u64,
    /// The messages the client missed, oldest first, each with its offset (all ≤ `top`);
    /// empty when nothing is replayed (no `since`, or the recovery was lost).
    pub missed: Vec<(u64, F)>,
}

/// What to do with a live frame, from [`Subscriptions::handle_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Verdict<F> {
    /// Write it now.
    Deliver(F),
    /// Kept until the subscription's recovery is in; it comes out of
    /// [`Subscriptions::poll_output`] then, if it is not a duplicate.
    Held,
    /// Not for the client: its project is not subscribed (any more), or the frame is at or
    /// below what was already delivered (a duplicate of the replay, or older than the
    /// client's position).
    Drop,
    /// Holding it would exceed `max_held_frames` or `max_held_bytes`: the frame is not
    /// held and the subscription can no longer be exact. Close the connection as a slow
    /// consumer (4008).
    Overflow,
}

/// What [`Subscriptions::handle_recovered`] asks the caller to write, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Output<F> {
    /// The recovery of `project` is in: write its `subscribed` frame now, before the frames
    /// that follow.
    Recovered {
        /// The project now live.
        project: ProjectId,
    },
    /// A frame of the project last [`Output::Recovered`]: write it.
    Frame(F),
}

/// Why a subscribe is refused; answered with an `error` frame carrying
/// [`SubscribeError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The connection has `max` subscriptions already.
    #[error("at most {max} subscriptions per connection")]
    TooMany {
        /// `max_subscriptions`.
        max: usize,
    },
    /// The project is subscribed already (or being recovered): unsubscribe first.
    #[error("already subscribed to this project")]
    AlreadySubscribed,
}

impl SubscribeError {
    /// The `code` of the `error` frame.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooMany { .. } => "too_many_subscriptions",
            Self::AlreadySubscribed => "already_subscribed",
        }
    }
}

/// The project of an unsubscribe is not subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not subscribed to this project")]
pub struct NotSubscribed;

/// One subscription: 16 bytes whatever `F` is. The held frames live behind a box that only
/// exists while recovering, from the first frame held (most recoveries hold none: no
/// allocation for them).
#[derive(Debug)]
enum Sub<F> {
    Recovering(Option<Box<Recovering<F>>>),
    Live(Watermark),
}

#[derive(Debug)]
struct Recovering<F> {
    /// Live frames that arrived meanwhile, in order, with their offsets.
    held: VecDeque<(Option<u64>, F)>,
    /// What `held` weighs, as the caller said.
    bytes: usize,
}

/// A subscription and its project, under its member id.
#[derive(Debug)]
struct Entry<F> {
    project: ProjectId,
    sub: Sub<F>,
}

/// The subscriptions of one connection by member id: a vector sorted by it, grown one
/// entry at a time. A hash map of 20 entries takes 32 buckets and a control byte each
/// (1.3 KiB); this takes the 800 bytes of the entries, and finds one by binary search in
/// the ≤ `max_subscriptions` entries as fast as a hash would. The transport's counter hands
/// out increasing ids, so an insertion lands at the end.
#[derive(Debug)]
struct Table<F>(Vec<(ConnId, Entry<F>)>);

impl<F> Table<F> {
    fn position(&self, member: ConnId) -> Result<usize, usize> {
        self.0.binary_search_by_key(&member, |(m, _)| *m)
    }

    fn get(&self, member: ConnId) -> Option<&Entry<F>> {
        self.position(member).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, member: ConnId) -> Option<&mut Entry<F>> {
        self.position(member).ok().map(|i| &mut self.0[i].1)
    }

    fn insert(&mut self, member: ConnId, entry: Entry<F>) {
        let Err(at) = self.position(member) else {
            debug_assert!(false, "{member} used twice");
            return;
        };
        // Exactly what is needed: an idle connection keeps its table for good.
        self.0.reserve_exact(1);
        self.0.insert(at, (member, entry));
    }

    fn remove(&mut self, member: ConnId) -> Option<Entry<F>> {
        let at = self.position(member).ok()?;
        Some(self.0.remove(at).1)
    }

    fn iter(&self) -> impl Iterator<Item = (ConnId, &Entry<F>)> + '_ {
        self.0.iter().map(|(m, e)| (*m, e))
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The subscriptions of one connection. See the [module docs](self).
#[derive(Debug)]
pub struct Subscriptions<F> {
    config: SubscriptionsConfig,
    subs: Table<F>,
    outputs: VecDeque<Output<F>>,
}

impl<F> Subscriptions<F> {
    /// A connection with no subscription.
    pub fn new(config: SubscriptionsConfig) -> Self {
        Self {
            config,
            subs: Table(Vec::new()),
            outputs: VecDeque::new(),
        }
    }

    // === getters ===

    /// The limits.
    pub fn config(&self) -> &SubscriptionsConfig {
        &self.config
    }

    /// How many projects are subscribed, recovering or live.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether no project is subscribed.
    pub fn is_empty(&self) -> bool {
        self.subs.len() == 0
    }

    /// Whether `project` is subscribed, recovering or live.
    pub fn is_subscribed(&self, project: &ProjectId) -> bool {
        self.find(project).is_some()
    }

    /// Whether `project`'s recovery is in and its frames are delivered.
    pub fn is_live(&self, project: &ProjectId) -> bool {
        self.find(project)
            .and_then(|member| self.subs.get(member))
            .is_some_and(|entry| matches!(entry.sub, Sub::Live(_)))
    }

    /// Every subscription, recovering or live, with its member id, in no particular order:
    /// all of them are registered in the hub (unregister them when the connection ends;
    /// check their grants on a token refresh).
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &ProjectId)> + '_ {
        self.subs
            .iter()
            .map(|(member, entry)| (member, &entry.project))
    }

    /// The member id of `project`'s subscription: a scan of at most `max_subscriptions`
    /// entries, made for requests that name a project, never for a frame.
    fn find(&self, project: &ProjectId) -> Option<ConnId> {
        self.subs
            .iter()
            .find_map(|(member, entry)| (entry.project == *project).then_some(member))
    }

    // === inputs ===

    /// The client subscribes to `project`; the subscription's frames will be tagged with
    /// `member`, an id never used before (the transport's connection counter). On `Ok`,
    /// register `member` in the hub for `project`, then read its recovery and hand the
    /// ticket back with it.
    pub fn handle_subscribe(
        &mut self,
        project: ProjectId,
        member: ConnId,
    ) -> Result<Ticket, SubscribeError> {
        if self.find(&project).is_some() {
            return Err(SubscribeError::AlreadySubscribed);
        }
        if self.subs.len() >= self.config.max_subscriptions {
            return Err(SubscribeError::TooMany {
                max: self.config.max_subscriptions,
            });
        }
        self.subs.insert(
            member,
            Entry {
                project: project.clone(),
                sub: Sub::Recovering(None),
            },
        );
        Ok(Ticket { project, member })
    }

    /// A live frame queued for `member`, weighing `bytes`, at `offset` in its project's
    /// stream (`None`: presence and ephemeral frames, which are never duplicates). See
    /// [`Verdict`].
    pub fn handle_frame(
        &mut self,
        member: ConnId,
        offset: Option<u64>,
        frame: F,
        bytes: usize,
    ) -> Verdict<F> {
        debug_assert!(
            self.outputs.is_empty(),
            "drain poll_output before handle_frame"
        );
        match self.subs.get_mut(member).map(|entry| &mut entry.sub) {
            None => Verdict::Drop,
            Some(Sub::Live(watermark)) => match offset {
                Some(offset) if !watermark.admit(offset) => Verdict::Drop,
                _ => Verdict::Deliver(frame),
            },
            Some(Sub::Recovering(r)) => {
                let r = r.get_or_insert_with(|| {
                    Box::new(Recovering {
                        held: VecDeque::new(),
                        bytes: 0,
                    })
                });
                if r.held.len() >= self.config.max_held_frames
                    || r.bytes.saturating_add(bytes) > self.config.max_held_bytes
                {
                    Verdict::Overflow
                } else {
                    r.held.push_back((offset, frame));
                    r.bytes += bytes;
                    Verdict::Held
                }
            }
        }
    }

    /// The recovery of `ticket`'s subscription was read: queues [`Output::Recovered`], the
    /// missed frames, then the held frames above `max(top, last missed)`, and the
    /// subscription goes live with that watermark. Drain [`Subscriptions::poll_output`]
    /// next. A stale ticket (its subscription was unsubscribed meanwhile) queues nothing.
    pub fn handle_recovered(&mut self, ticket: Ticket, range: RecoveredRange<F>) {
        let Some(entry) = self.subs.get_mut(ticket.member) else {
            return;
        };
        let Sub::Recovering(recovering) = &mut entry.sub else {
            return;
        };
        let held = recovering.take().map(|r| r.held).unwrap_or_default();
        let RecoveredRange { top, missed } = range;
        let mut watermark = Watermark::new(top);
        self.outputs.push_back(Output::Recovered {
            project: ticket.project,
        });
        for (offset, frame) in missed {
            debug_assert!(offset <= top, "missed offset {offset} above top {top}");
            watermark.admit(offset);
            self.outputs.push_back(Output::Frame(frame));
        }
        for (offset, frame) in held {
            if offset.is_none_or(|offset| watermark.admit(offset)) {
                self.outputs.push_back(Output::Frame(frame));
            }
        }
        entry.sub = Sub::Live(watermark);
    }

    /// The recovery of `ticket`'s subscription could not be read: the subscription is
    /// removed with its held frames. Returns whether it was (`false`: a stale ticket); if
    /// so, unregister the member from the hub and answer `error`.
    #[must_use]
    pub fn handle_recovery_failed(&mut self, ticket: Ticket) -> bool {
        let current = matches!(
            self.subs.get(ticket.member),
            Some(Entry {
                sub: Sub::Recovering(_),
                ..
            })
        );
        if current {
            self.subs.remove(ticket.member);
        }
        current
    }

    /// The client unsubscribes from `project`: from now on every frame of it is dropped,
    /// including those already in the outbox. Returns the subscription's member id:
    /// unregister it from the hub and answer `unsubscribed`.
    pub fn handle_unsubscribe(&mut self, project: &ProjectId) -> Result<ConnId, NotSubscribed> {
        let member = self.find(project).ok_or(NotSubscribed)?;
        self.subs.remove(member);
        Ok(member)
    }

    /// Ends the subscription to `project` as [`Subscriptions::handle_unsubscribe`] does (a
    /// token refresh revoked it); returns its member id if it was subscribed.
    pub fn remove(&mut self, project: &ProjectId) -> Option<ConnId> {
        self.handle_unsubscribe(project).ok()
    }

    /// The hub ended `member`'s subscription on its own (an operator closed its project):
    /// it ends here too; returns its project, to answer `unsubscribed`, if it was one.
    pub fn handle_ended(&mut self, member: ConnId) -> Option<ProjectId> {
        self.subs.remove(member).map(|entry| entry.project)
    }

    // === outputs ===

    /// The next thing to write, after [`Subscriptions::handle_recovered`].
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output<F>> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod tests;
