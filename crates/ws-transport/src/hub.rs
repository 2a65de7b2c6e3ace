//! The hub shared by every connection: `ws-core` hubs in shards, each behind its own lock.
//!
//! A project always maps to the same shard, so one project's publishes are ordered by
//! that shard's lock while other projects progress in parallel on other cores. Frames are
//! serialised once by the caller and shared by every recipient (`Utf8Bytes` is a
//! reference-counted buffer), never re-encoded per client.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use tungstenite::Utf8Bytes;
use ws_core::cluster_presence::{ClusterPresence, ClusterPresenceConfig, Local};
use ws_core::envelope::v2::with_project;
use ws_core::hub::{Action, QueueDepth, Registered, Unregistered};
use ws_core::ids::ConnIdMap;
use ws_core::webhook::EventName;
use ws_core::{
    Admission, AdmissionConfig, Close, ConnId, Hub, HubConfig, ProjectId, Session, UserId,
};

use crate::connection::presence_frame;
use crate::membership::MembershipSink;
use crate::metrics::{Gauges, Metrics};
use crate::outbox::{Outbox, Outgoing};
use crate::tungstenite;

/// What the hub keeps per member: the handle to its send queue and what operators see.
///
/// A member is a v1 connection (its id is the member's), or one subscription of a v2
/// connection (a member id of its own, drawn from the same counter, so the hub's
/// per-member decisions apply to subscriptions unchanged).
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The connection's send queue (which also says when it opened and from where).
    pub(crate) outbox: Arc<Outbox>,
    /// The connection the member belongs to: its own id for v1 (and an event stream).
    pub(crate) conn: ConnId,
}

impl Member {
    /// Whether the member registered as `key` is a v2 subscription (its frames name their
    /// project): only a subscription has a member id other than its connection's. Derived,
    /// not stored: a flag would round the hub's entry per member up by 8 bytes.
    pub(crate) fn is_subscription(&self, key: ConnId) -> bool {
        self.conn != key
    }
}

/// A v2 connection, known to the hub by itself: its subscriptions come and go, and it must
/// still be drained, listed and closed with none.
#[derive(Debug)]
struct SessionEntry {
    user: UserId,
    outbox: Arc<Outbox>,
}

/// One live connection, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection id.
    pub conn: ConnId,
    /// Its user.
    pub user: UserId,
    /// How long it has been open.
    pub age: Duration,
    /// Frames and bytes waiting in its send queue.
    pub queue: QueueDepth,
    /// The peer's address, when known.
    pub remote: Option<SocketAddr>,
}

/// The hub of a server: cheap to clone, shared by every connection and API handler.
///
/// ```
/// use ws_transport::SharedHub;
/// use ws_core::{HubConfig, AdmissionConfig, ProjectId};
///
/// let hub = SharedHub::new(HubConfig::default(), AdmissionConfig::default(), 8);
/// let p = ProjectId::parse("p").unwrap();
/// assert_eq!(hub.deliver(&p, Some(1), r#"{"type":"message"}"#.into(), None), 0); // nobody there yet
/// ```
#[derive(Debug, Clone)]
pub struct SharedHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<Hub<Member>>]>,
    hasher: RandomState,
    hub_config: HubConfig,
    admission: Mutex<Admission>,
    /// The open v2 connections.
    sessions: Mutex<ConnIdMap<SessionEntry>>,
    /// Gauges kept up to date as connections come and go, so a `/metrics` scrape reads
    /// atomics and takes no lock the connections need.
    gauges: LiveGauges,
    next_conn: AtomicU64,
    draining: AtomicBool,
    metrics: Metrics,
    /// Where this node's membership changes go, when this node decides them alone (the
    /// memory broker; see `membership.rs`).
    membership: OnceLock<Arc<dyn MembershipSink>>,
    /// Presence across nodes (the Redis broker): which join/leave frames this node sends.
    /// Locked after a shard lock, never before one.
    cluster: OnceLock<Mutex<ClusterPresence>>,
}

/// Why a connection was not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registration refused: {0}")]
pub struct Refused(pub Close);

impl SharedHub {
    /// A hub with `shards` independent shards (at least one).
    pub fn new(hub: HubConfig, admission: AdmissionConfig, shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Mutex::new(Hub::new(hub.clone())))
            .collect();
        Self {
            inner: Arc::new(Inner {
                shards,
                hasher: RandomState::new(),
                hub_config: hub,
                admission: Mutex::new(Admission::new(admission)),
                sessions: Mutex::new(ConnIdMap::default()),
                gauges: LiveGauges::default(),
                next_conn: AtomicU64::new(1),
                draining: AtomicBool::new(false),
                metrics: Metrics::default(),
                membership: OnceLock::new(),
                cluster: OnceLock::new(),
            }),
        }
    }

    /// Queues a serialised frame for every open member of `project` but those of the
    /// connection `except`; returns how many got it. `offset` tags project messages, so a
    /// replay can be merged with live delivery. Members whose queue overflows are closed
    /// with 4008 here.
    ///
    /// `frame` is the v1 frame; v2 members get it with the project named
    /// ([`with_project`]), made once for all of them, and only when one is there.
    pub fn deliver(
        &self,
        project: &ProjectId,
        offset: Option<u64>,
        frame: Utf8Bytes,
        except: Option<ConnId>,
    ) -> usize {
        // Messages carry when they were accepted, for the fan-out latency histogram.
        let accepted = offset.map(|_| Instant::now());
        let mut shard = self.shard(project);
        let mut delivered = 0;
        let mut slow = Vec::new();
        let mut v2_frame: Option<Utf8Bytes> = None;
        for (key, member) in shard.recipients(project) {
            if Some(member.conn) == except {
                continue;
            }
            let frame = if member.is_subscription(key) {
                v2_frame
                    .get_or_insert_with(|| with_project(Session::wire_name(project), &frame).into())
                    .clone()
            } else {
                frame.clone()
            };
            let depth = member
                .outbox
                .push(Outgoing::message(offset, accepted, frame).to(key));
            delivered += 1;
            if self.inner.hub_config.is_over(depth) {
                slow.push((key, depth));
            }
        }
        for (conn, depth) in slow {
            self.inner.metrics.slow_consumer();
            shard.handle_queue_depth(conn, depth);
        }
        apply_actions(&mut shard);
        delivered
    }

    /// `conn`'s queue, in `project`, was found `depth` deep after a frame for it alone (an
    /// ack, an error, a presence answer) was pushed: over the limits it is a slow consumer
    /// like any other, closed with 4008. Every frame counts, whoever pushed it.
    pub(crate) fn judge(&self, conn: ConnId, project: &ProjectId, depth: QueueDepth) {
        if !self.inner.hub_config.is_over(depth) {
            return;
        }
        let mut shard = self.shard(project);
        if shard.handle_queue_depth(conn, depth) {
            self.inner.metrics.slow_consumer();
        }
        apply_actions(&mut shard);
    }

    /// Closes every member of `project` with `close`; returns how many. A v1 connection
    /// closes; a v2 connection only loses its subscription to `project` (it is told with
    /// `unsubscribed`, reason `closed`) and keeps its others.
    pub fn close_project(&self, project: &ProjectId, close: &Close) -> usize {
        let mut shard = self.shard(project);
        shard.close_project(project, close);
        let mut n = 0;
        while let Some(action) = shard.poll_action() {
            if let Action::Close { conn: key, close } = action
                && let Some(member) = shard.member(key)
            {
                if member.is_subscription(key) {
                    member.outbox.end_member(key);
                } else {
                    member.outbox.close(close);
                }
                n += 1;
            }
        }
        n
    }

    /// Closes every connection of `user` in every project with `close`; returns how many.
    pub fn close_user(&self, user: &UserId, close: &Close) -> usize {
        // Members first: v1 connections, and the subscriptions of v2 ones, which close
        // their whole connection; then the v2 connections themselves, counted here (a
        // connection's subscriptions in other shards would count it again).
        let mut n = 0;
        for shard in &self.inner.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.close_user(user, close);
            while let Some(action) = shard.poll_action() {
                if let Action::Close { conn, close } = action
                    && let Some(member) = shard.member(conn)
                {
                    member.outbox.close(close);
                    n += usize::from(!member.is_subscription(conn));
                }
            }
        }
        let sessions = self.sessions();
        for session in sessions.values().filter(|s| s.user == *user) {
            session.outbox.close(close.clone());
            n += 1;
        }
        n
    }

    /// Starts the shutdown: refuses new registrations and drains every member with 1001,
    /// spread over `window`.
    pub fn shutdown(&self, now: Instant, window: Duration) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.each_shard(|shard| shard.handle_shutdown(now, window));
        // v2 connections, spread over the window like the members (a subscription's own
        // drain may come first: the earliest wins).
        let sessions = self.sessions();
        let n = sessions.len().max(1) as u32;
        for (i, session) in sessions.values().enumerate() {
            session.outbox.drain(now + window * i as u32 / n);
        }
    }

    /// Whether [`SharedHub::shutdown`] was called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Open connections admitted now.
    pub fn connections(&self) -> usize {
        self.admission().connections()
    }

    /// Closes one connection with `close`; false when it is not open here.
    pub fn close_conn(&self, conn: ConnId, close: &Close) -> bool {
        if let Some(session) = self.sessions().get(&conn) {
            session.outbox.close(close.clone());
            return true;
        }
        let mut found = false;
        self.each_shard(|shard| found |= shard.close_member(conn, close.clone()));
        found
    }

    /// The live connections of `project`, oldest first.
    pub fn connections_of(&self, project: &ProjectId) -> Vec<ConnectionInfo> {
        let now = Instant::now();
        let shard = self.shard(project);
        let mut list: Vec<ConnectionInfo> = shard
            .members(project)
            .map(|(_, user, member)| ConnectionInfo {
                conn: member.conn,
                user: user.clone(),
                age: now.saturating_duration_since(member.outbox.opened_at),
                queue: member.outbox.depth(),
                remote: member.outbox.remote,
            })
            .collect();
        list.sort_by_key(|c| std::cmp::Reverse(c.age));
        list
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The metrics in the Prometheus text format, with the gauges as they stand now.
    ///
    /// Takes no shard or admission lock: a scrape every second must not hold up a
    /// publish or a handshake, however many projects there are.
    pub fn encode_metrics(&self, version: &'static str) -> String {
        let live = &self.inner.gauges;
        let gauges = Gauges {
            version,
            connections: live.connections.load(Ordering::Relaxed),
            projects_by_size: SIZE_BUCKETS
                .iter()
                .zip(&live.projects_by_size)
                .map(|((label, _), n)| (*label, n.load(Ordering::Relaxed)))
                .collect(),
        };
        self.inner.metrics.encode(&gauges)
    }

    /// Calls `visit` with every project that has a member on this node and its member
    /// count, one shard at a time (each shard's lock is held while its projects are
    /// visited, so `visit` must be quick: keep a bounded selection, never await).
    pub fn visit_projects(&self, mut visit: impl FnMut(&ProjectId, usize)) {
        for shard in &self.inner.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (project, members) in shard.projects() {
                visit(project, members);
            }
        }
    }

    /// Projects with a member on this node, from the gauges (no lock taken).
    pub fn project_count(&self) -> usize {
        self.inner
            .gauges
            .projects_by_size
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Connections to `project` on this node; the same measure decides join and leave
    /// frames (a join when the project has at most the limit, counting the joiner).
    pub fn member_count(&self, project: &ProjectId) -> usize {
        self.shard(project).members(project).count()
    }

    /// Whether `project` has a member on this node.
    pub fn has_members(&self, project: &ProjectId) -> bool {
        self.shard(project).members(project).next().is_some()
    }

    /// The users of `project` with their connection counts, sorted by user id.
    ///
    /// Under the shard lock it only copies the list (a reference count per user); sorting
    /// happens after the lock is released, so a presence request never holds up the
    /// project's fan-out for longer than the copy.
    pub fn presence(&self, project: &ProjectId) -> Vec<(UserId, u32)> {
        let mut users: Vec<_> = {
            let shard = self.shard(project);
            shard
                .presence(project)
                .map(|(u, n)| (u.clone(), n))
                .collect()
        };
        users.sort_unstable();
        users
    }

    /// Makes the hub report its members' changes to `sink`: right when this node alone
    /// decides them (the memory broker). Once; later calls change nothing.
    pub fn report_membership(&self, sink: Arc<dyn MembershipSink>) {
        let _ = self.inner.membership.set(sink);
    }

    /// Presence spans nodes (the Redis broker): from now on a user's first connection here
    /// is announced only when the cluster did not know them, their last one only when no
    /// other node has them, and the broker feeds [`SharedHub::handle_remote_presence`].
    pub fn enable_cluster_presence(&self) {
        let _ = self.inner.cluster.set(Mutex::new(ClusterPresence::new(
            ClusterPresenceConfig::default(),
        )));
    }

    /// The projects with members here whose other nodes' users the broker should read,
    /// each with whether it already got a snapshot (none unless
    /// [`SharedHub::enable_cluster_presence`]).
    pub fn cluster_projects(&self) -> Vec<(ProjectId, bool)> {
        self.cluster()
            .map(|c| c.projects().map(|p| (p.clone(), c.is_primed(p))).collect())
            .unwrap_or_default()
    }

    /// The other nodes' users of `project` (with their connections), as read now.
    pub fn handle_remote_presence(
        &self,
        now: Instant,
        project: &ProjectId,
        users: Vec<(UserId, u32)>,
    ) {
        if let Some(mut cluster) = self.cluster() {
            cluster.handle_remote(now, project, users);
        }
    }

    /// Sends the members here the join/leave frames of the cluster's changes due now (at
    /// most one diff per project per second); returns how many diffs went out.
    pub fn deliver_presence_diffs(&self, now: Instant) -> usize {
        // Taken out first: delivering takes shard locks, which come before this one.
        let diffs: Vec<_> = match self.cluster() {
            Some(mut cluster) => std::iter::from_fn(|| cluster.poll_diff(now)).collect(),
            None => return 0,
        };
        let mut sent = 0;
        for diff in diffs {
            let policy = self.inner.hub_config.events_policy(&diff.project);
            if !diff.announces(policy, self.member_count(&diff.project)) {
                continue;
            }
            for user in &diff.left {
                self.deliver(&diff.project, None, presence_frame("leave", user), None);
            }
            for user in &diff.joined {
                self.deliver(&diff.project, None, presence_frame("join", user), None);
            }
            sent += 1;
        }
        sent
    }

    fn cluster(&self) -> Option<MutexGuard<'_, ClusterPresence>> {
        self.inner
            .cluster
            .get()
            .map(|c| c.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A registration's consequences beyond the shard, under its lock (so a project's
    /// changes are seen in order): the cluster's verdict on the join frame, the events.
    fn registered(&self, project: &ProjectId, user: &UserId, registered: &mut Registered) {
        if project.is_personal() {
            return;
        }
        if registered.joined
            && let Some(mut cluster) = self.cluster()
        {
            let policy = self.inner.hub_config.events_policy(project);
            registered.announce_join =
                cluster.handle_local(project, user, Local::Joined, registered.members, policy);
        }
        if let Some(sink) = self.inner.membership.get() {
            if registered.members == 1 {
                sink.emit(project, EventName::ProjectOccupied, None);
            }
            if registered.joined {
                sink.emit(project, EventName::UserJoined, Some(user));
            }
        }
    }

    /// [`SharedHub::registered`] for an unregistration.
    fn unregistered(&self, project: &ProjectId, gone: &mut Unregistered<Member>) {
        if project.is_personal() {
            return;
        }
        if gone.left
            && let Some(mut cluster) = self.cluster()
        {
            let policy = self.inner.hub_config.events_policy(project);
            gone.announce_leave =
                cluster.handle_local(project, &gone.user, Local::Left, gone.members, policy);
        }
        if let Some(sink) = self.inner.membership.get() {
            if gone.left {
                sink.emit(project, EventName::UserLeft, Some(&gone.user));
            }
            if gone.members == 0 {
                sink.emit(project, EventName::ProjectVacated, None);
            }
        }
    }

    /// A fresh connection id.
    pub(crate) fn next_conn(&self) -> ConnId {
        ConnId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Admits and registers a connection, or says which close frame refuses it.
    pub(crate) fn register(
        &self,
        conn: ConnId,
        project: &ProjectId,
        user: &UserId,
        member: Member,
    ) -> Result<Registered, Refused> {
        if self.is_draining() {
            return Err(Refused(Close::shutting_down()));
        }
        self.admission().admit(user).map_err(Refused)?;
        let mut shard = self.shard(project);
        // Re-checked under the shard lock: a shutdown that started meanwhile has already
        // scheduled the shard's members and would miss this one.
        if self.is_draining() {
            drop(shard);
            self.admission().release(user);
            return Err(Refused(Close::shutting_down()));
        }
        let mut registered = shard.register(conn, project.clone(), user.clone(), member);
        self.registered(project, user, &mut registered);
        let gauges = &self.inner.gauges;
        gauges.connections.fetch_add(1, Ordering::Relaxed);
        gauges.resized(registered.members - 1, registered.members);
        Ok(registered)
    }

    /// Unregisters a connection that [`SharedHub::register`] accepted.
    pub(crate) fn unregister(
        &self,
        conn: ConnId,
        project: &ProjectId,
    ) -> Option<Unregistered<Member>> {
        let gone = {
            let mut shard = self.shard(project);
            let mut gone = shard.unregister(conn)?;
            self.unregistered(project, &mut gone);
            // Under the shard lock, so the bucket moves happen in the project's order.
            self.inner.gauges.resized(gone.members + 1, gone.members);
            gone
        };
        self.admission().release(&gone.user);
        self.inner
            .gauges
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        Some(gone)
    }

    /// Opens a v2 connection: admitted like any connection (it counts towards every
    /// connection limit), but a member of no project until it subscribes.
    pub(crate) fn open_session(
        &self,
        conn: ConnId,
        user: &UserId,
        outbox: Arc<Outbox>,
    ) -> Result<(), Refused> {
        if self.is_draining() {
            return Err(Refused(Close::shutting_down()));
        }
        self.admission().admit(user).map_err(Refused)?;
        let mut sessions = self.sessions();
        // Re-checked under the lock `shutdown` drains the sessions with.
        if self.is_draining() {
            drop(sessions);
            self.admission().release(user);
            return Err(Refused(Close::shutting_down()));
        }
        sessions.insert(
            conn,
            SessionEntry {
                user: user.clone(),
                outbox,
            },
        );
        self.inner
            .gauges
            .connections
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the books on a v2 connection [`SharedHub::open_session`] accepted (its
    /// subscriptions are unsubscribed first).
    pub(crate) fn close_session(&self, conn: ConnId) {
        let Some(session) = self.sessions().remove(&conn) else {
            return;
        };
        self.admission().release(&session.user);
        self.inner
            .gauges
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// Registers one subscription of a v2 connection as a member of `project`, under the
    /// member id `key`.
    pub(crate) fn subscribe(
        &self,
        key: ConnId,
        project: &ProjectId,
        user: &UserId,
        member: Member,
    ) -> Registered {
        let mut shard = self.shard(project);
        let mut registered = shard.register(key, project.clone(), user.clone(), member);
        self.registered(project, user, &mut registered);
        self.inner
            .gauges
            .resized(registered.members - 1, registered.members);
        registered
    }

    /// The shared id of `project` while it has members here ([`Hub::canonical`]).
    pub(crate) fn canonical(&self, project: &ProjectId) -> Option<ProjectId> {
        self.shard(project).canonical(project).cloned()
    }

    /// Removes the subscription [`SharedHub::subscribe`] registered as `key`.
    pub(crate) fn unsubscribe(
        &self,
        key: ConnId,
        project: &ProjectId,
    ) -> Option<Unregistered<Member>> {
        let mut shard = self.shard(project);
        let mut gone = shard.unregister(key)?;
        self.unregistered(project, &mut gone);
        self.inner.gauges.resized(gone.members + 1, gone.members);
        Some(gone)
    }

    /// Whether a send queue this deep makes its connection a slow consumer.
    pub(crate) fn is_over(&self, depth: QueueDepth) -> bool {
        self.inner.hub_config.is_over(depth)
    }

    fn sessions(&self) -> MutexGuard<'_, ConnIdMap<SessionEntry>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn shard(&self, project: &ProjectId) -> MutexGuard<'_, Hub<Member>> {
        let shards = &self.inner.shards;
        let i = (self.inner.hasher.hash_one(project) % shards.len() as u64) as usize;
        shards[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn each_shard(&self, mut f: impl FnMut(&mut Hub<Member>)) -> usize {
        let mut n = 0;
        for shard in &self.inner.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut shard);
            n += apply_actions(&mut shard);
        }
        n
    }

    fn admission(&self) -> MutexGuard<'_, Admission> {
        self.inner
            .admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The buckets of `wshub_projects` by member count: (label, largest size in it).
const SIZE_BUCKETS: [(&str, usize); 5] = [
    ("1", 1),
    ("2-10", 10),
    ("11-100", 100),
    ("101-1000", 1000),
    ("1001+", usize::MAX),
];

/// Gauges maintained on every register and unregister instead of measured per scrape.
#[derive(Debug, Default)]
struct LiveGauges {
    connections: AtomicUsize,
    /// Projects per [`SIZE_BUCKETS`] bucket.
    projects_by_size: [AtomicUsize; SIZE_BUCKETS.len()],
}

impl LiveGauges {
    /// A project went from `before` to `after` members on this node (0: absent).
    fn resized(&self, before: usize, after: usize) {
        // An absent project is in no bucket.
        let bucket = |size: usize| {
            (size > 0)
                .then(|| SIZE_BUCKETS.iter().position(|(_, max)| size <= *max))
                .flatten()
        };
        let (from, to) = (bucket(before), bucket(after));
        if from == to {
            return;
        }
        if let Some(i) = from {
            self.projects_by_size[i].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(i) = to {
            self.projects_by_size[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Hands the hub's decisions to the members' connections; returns how many connections
/// they reached (a v2 connection's subscriptions in one project count once).
fn apply_actions(shard: &mut Hub<Member>) -> usize {
    let mut reached = Vec::new();
    while let Some(action) = shard.poll_action() {
        let (key, apply): (ConnId, &dyn Fn(&Outbox)) = match &action {
            Action::Close { conn, close } => (*conn, &|outbox| outbox.close(close.clone())),
            Action::Drain { conn, at } => (*conn, &|outbox| outbox.drain(*at)),
        };
        if let Some(member) = shard.member(key) {
            apply(&member.outbox);
            reached.push(member.conn);
        }
    }
    reached.sort_unstable();
    reached.dedup();
    reached.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the hub keeps per member beside the core's entry: part of the ≤ 256 B per idle
    /// v2 subscription (`idle-subs`), so it stays two words.
    #[test]
    fn a_member_is_two_words() {
        assert_eq!(size_of::<Member>(), 16);
    }

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl MembershipSink for Recorder {
        fn emit(&self, project: &ProjectId, name: EventName, user: Option<&UserId>) {
            let user = user.map_or("-", UserId::as_str);
            self.0
                .lock()
                .unwrap()
                .push(format!("{name} {project} {user}"));
        }
    }

    fn member(conn: u64) -> Member {
        Member {
            outbox: Arc::new(Outbox::new(Instant::now(), None)),
            conn: ConnId(conn),
        }
    }

    #[test]
    fn one_node_reports_its_membership_changes() {
        let hub = SharedHub::new(HubConfig::default(), AdmissionConfig::default(), 2);
        let recorder = Arc::new(Recorder::default());
        hub.report_membership(recorder.clone());
        let p = ProjectId::parse("room").unwrap();
        let (alice, bob) = (UserId::new("alice"), UserId::new("bob"));
        hub.register(ConnId(1), &p, &alice, member(1)).unwrap();
        hub.register(ConnId(2), &p, &alice, member(2)).unwrap();
        hub.subscribe(ConnId(3), &p, &bob, member(3));
        hub.unregister(ConnId(1), &p).unwrap();
        hub.unsubscribe(ConnId(3), &p).unwrap();
        hub.unregister(ConnId(2), &p).unwrap();
        // The personal stream is no project.
        let personal = ProjectId::personal(&bob);
        hub.subscribe(ConnId(4), &personal, &bob, member(4));
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [
                "project_occupied room -",
                "user_joined room alice",
                "user_joined room bob",
                "user_left room bob",
                "user_left room alice",
                "project_vacated room -",
            ]
        );
    }

    #[test]
    fn across_nodes_a_user_known_elsewhere_is_not_announced_again() {
        let hub = SharedHub::new(HubConfig::default(), AdmissionConfig::default(), 1);
        hub.enable_cluster_presence();
        let p = ProjectId::parse("room").unwrap();
        let (alice, bob) = (UserId::new("alice"), UserId::new("bob"));
        assert!(
            hub.register(ConnId(1), &p, &alice, member(1))
                .unwrap()
                .announce_join
        );
        assert_eq!(hub.cluster_projects(), [(p.clone(), false)]);
        hub.handle_remote_presence(Instant::now(), &p, vec![(bob.clone(), 1)]);
        assert_eq!(hub.cluster_projects(), [(p.clone(), true)]);
        // Bob is on another node: his connection here is no join, his leave here no leave.
        assert!(
            !hub.register(ConnId(2), &p, &bob, member(2))
                .unwrap()
                .announce_join
        );
        assert!(!hub.unregister(ConnId(2), &p).unwrap().announce_leave);
        assert!(hub.unregister(ConnId(1), &p).unwrap().announce_leave);
        assert!(hub.cluster_projects().is_empty());
    }

    #[test]
    fn project_size_buckets_follow_registrations() {
        let gauges = LiveGauges::default();
        let counts = || {
            gauges
                .projects_by_size
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        for size in 0..12 {
            gauges.resized(size, size + 1);
        }
        assert_eq!(counts(), [0, 0, 1, 0, 0], "one project of 12 members");
        gauges.resized(0, 1);
        assert_eq!(counts(), [1, 0, 1, 0, 0]);
        for size in (0..12).rev() {
            gauges.resized(size + 1, size);
        }
        gauges.resized(1, 0);
        assert_eq!(counts(), [0; 5], "both gone");
    }
}
