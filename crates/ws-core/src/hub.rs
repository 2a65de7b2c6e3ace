//! The project hub: which connections belong to which project, who receives a publish,
//! and which member must go (slow consumers, kicks, shutdown).
//!
//! A `Hub` is one shard. The transport runs several, each behind its own lock and keyed
//! by project, so projects progress in parallel; connection limits that span shards live
//! in [`Admission`](crate::Admission).
//!
//! Each member carries a value `T` of the caller's choosing (the transport keeps the
//! handle of the connection's send queue there), so a publish walks one contiguous list
//! and needs no second lookup per recipient.
//!
//! # Driving it
//!
//! Calls that decide something about members ([`Hub::handle_queue_depth`],
//! [`Hub::close_member`], [`Hub::close_project`], [`Hub::handle_shutdown`]) queue
//! [`Action`]s: drain [`Hub::poll_action`] after each and apply them to the member's
//! connection.
//!
//! ```
//! use std::time::Instant;
//! use ws_core::hub::{Hub, HubConfig, QueueDepth, Action};
//! use ws_core::{ConnId, ProjectId, UserId, CloseCode};
//!
//! let mut hub = Hub::new(HubConfig::default());
//! let p = ProjectId::parse("p").unwrap();
//! hub.register(ConnId(1), p.clone(), UserId::new("alice"), "queue of c1");
//! hub.register(ConnId(2), p.clone(), UserId::new("bob"), "queue of c2");
//! assert_eq!(hub.recipients(&p).count(), 2);
//!
//! // c2's queue overflowed: it is closed with 4008 and receives nothing more.
//! hub.handle_queue_depth(ConnId(2), QueueDepth { frames: 5000, bytes: 0 });
//! let Some(Action::Close { conn, close }) = hub.poll_action() else { panic!() };
//! assert_eq!((conn, close.code()), (ConnId(2), CloseCode::SLOW_CONSUMER));
//! assert_eq!(hub.recipients(&p).map(|(c, _)| c).collect::<Vec<_>>(), [ConnId(1)]);
//! ```

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::close_code::Close;
use crate::cluster_presence::EventsPolicy;
use crate::ids::{ConnId, ConnIdMap, ProjectId, UserId};
use crate::namespace::{NamespacePolicy, Namespaces, namespace_of};

/// Limits a hub enforces on its members.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// A member whose send queue holds more frames than this is a slow consumer.
    pub send_queue_frames: usize,
    /// A member whose send queue holds more bytes than this is a slow consumer.
    pub send_queue_bytes: usize,
    /// Whether members get `join`/`leave` presence frames.
    pub presence_events: bool,
    /// Above this many connections a project gets no `join`/`leave` frames: N members
    /// joining would cost N² frames. The presence list stays available.
    pub presence_max_members: usize,
    /// `[namespaces.<name>]` overrides of the two presence settings above, for the projects
    /// of a namespace that has a table (SPEC §12). Projects of other namespaces, or of none,
    /// use the fields above.
    pub namespaces: Namespaces,
}

impl HubConfig {
    /// Whether a send queue this deep makes its member a slow consumer.
    pub fn is_over(&self, depth: QueueDepth) -> bool {
        depth.frames > self.send_queue_frames || depth.bytes > self.send_queue_bytes
    }

    /// Whether a user's first connection joining, or last one leaving, is announced to the
    /// project, which had `members` connections counting that one. One rule for both
    /// directions (a join when the project then has at most the limit, a leave when it had
    /// at most the limit before): with `presence_max_members = 2`, the second member's join
    /// is announced and so is its leave while nobody else came, the third member's neither.
    /// Across the threshold the frames stop, so members of a large project must rely on
    /// the presence list (`sync`), which is always exact.
    fn announces(&self, project: &ProjectId, members: usize) -> bool {
        let policy = self.events_policy(project);
        policy.events && members <= policy.max_members
    }

    /// The presence-event settings of `project`: its namespace's overrides, or the fields
    /// above. Across nodes, [`ClusterPresence`](crate::cluster_presence::ClusterPresence)
    /// applies them to the cluster's members.
    pub fn events_policy(&self, project: &ProjectId) -> EventsPolicy {
        match namespace_of(project).and_then(|n| self.namespaces.get(n)) {
            Some(policy) => EventsPolicy {
                events: policy.presence_events,
                max_members: policy.max_members_for_events,
            },
            None => EventsPolicy {
                events: self.presence_events,
                max_members: self.presence_max_members,
            },
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            send_queue_frames: 1024,
            send_queue_bytes: 4 * 1024 * 1024,
            presence_events: true,
            presence_max_members: 1000,
            namespaces: Namespaces::defaults_only(NamespacePolicy::default()),
        }
    }
}

/// How much a member's send queue holds right now, as its owner measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Frames waiting to be written.
    pub frames: usize,
    /// Bytes waiting to be written.
    pub bytes: usize,
}

/// Something the hub decided about a member.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Close the member's connection with this frame. It receives no more publishes.
    Close {
        /// The member.
        conn: ConnId,
        /// The close frame to send.
        close: Close,
    },
    /// Close the member's connection with 1001 at `at` (shutdown, spread over the drain window).
    Drain {
        /// The member.
        conn: ConnId,
        /// When to send the close frame.
        at: Instant,
    },
}

/// What a registration changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// Members of the project after it.
    pub members: usize,
    /// Whether this is the user's first connection to the project (a presence join).
    pub joined: bool,
    /// Whether to send the project's other members a `join` for it (the user joined, and
    /// the project is within the presence limits).
    pub announce_join: bool,
}

/// What an unregistration changed.
#[derive(Debug)]
pub struct Unregistered<T> {
    /// The member's value, given back.
    pub value: T,
    /// Its project.
    pub project: ProjectId,
    /// Its user.
    pub user: UserId,
    /// Whether this was the user's last connection to the project (a presence leave).
    pub left: bool,
    /// Members the project has left after it.
    pub members: usize,
    /// Whether to send the remaining members a `leave` (the user left, and the project was
    /// within the presence limits with this connection in it).
    pub announce_leave: bool,
}

#[derive(Debug)]
struct Member<T> {
    conn: ConnId,
    user: UserId,
    /// Set once the hub decided to close it: it receives nothing more.
    closing: bool,
    value: T,
}

#[derive(Debug)]
struct Project<T> {
    /// The id, kept once for the project's members (and its key in `Hub::slots`).
    id: ProjectId,
    /// Contiguous so a publish walks memory in order.
    members: Vec<Member<T>>,
    /// Connections per user, for presence.
    users: HashMap<UserId, u32>,
}

/// Where a member sits: its project's slot and its index in that project's list.
///
/// Two `u32`s rather than the project's id: 8 bytes per member instead of 24 in the
/// index (the largest structure of a node with many subscriptions), and a member is found
/// without hashing its project's id.
#[derive(Debug, Clone, Copy)]
struct Place {
    slot: u32,
    at: u32,
}

/// One shard of the hub. See the [module docs](self).
#[derive(Debug)]
pub struct Hub<T> {
    config: HubConfig,
    /// Each project with members, by id: its slot in `projects`.
    slots: HashMap<ProjectId, u32>,
    /// The projects with members; a `None` is a free slot, listed in `free`.
    projects: Vec<Option<Project<T>>>,
    free: Vec<u32>,
    /// Where each member sits.
    index: ConnIdMap<Place>,
    actions: VecDeque<Action>,
}

impl<T> Hub<T> {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Self {
        Self {
            config,
            slots: HashMap::new(),
            projects: Vec::new(),
            free: Vec::new(),
            index: ConnIdMap::default(),
            actions: VecDeque::new(),
        }
    }

    /// Adds `conn` to `project`.
    ///
    /// # Panics
    /// In debug builds, if `conn` is already registered: connection ids are unique.
    pub fn register(
        &mut self,
        conn: ConnId,
        project: ProjectId,
        user: UserId,
        value: T,
    ) -> Registered {
        debug_assert!(!self.index.contains_key(&conn), "{conn} registered twice");
        // One hash of the project's id: an existing project keeps its own copy of the id
        // (the caller's is dropped), so an id is allocated once per project, not per member.
        let slot = match self.slots.entry(project) {
            Entry::Occupied(entry) => *entry.get(),
            Entry::Vacant(entry) => {
                let project = Project {
                    id: entry.key().clone(),
                    members: Vec::new(),
                    users: HashMap::new(),
                };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.projects[slot as usize] = Some(project);
                        slot
                    }
                    None => {
                        self.projects.push(Some(project));
                        u32::try_from(self.projects.len() - 1).expect("under 2^32 projects")
                    }
                };
                *entry.insert(slot)
            }
        };
        let entry = self.projects[slot as usize]
            .as_mut()
            .expect("a slot named by `slots` holds its project");
        let count = entry.users.entry(user.clone()).or_insert(0);
        *count += 1;
        let joined = *count == 1;
        entry.members.push(Member {
            conn,
            user,
            closing: false,
            value,
        });
        let members = entry.members.len();
        let at = u32::try_from(members - 1).expect("under 2^32 members");
        let announce_join = joined && self.config.announces(&entry.id, members);
        self.index.insert(conn, Place { slot, at });
        Registered {
            members,
            joined,
            announce_join,
        }
    }

    /// The id this shard keeps for `project` while it has members: equal to `project`, and
    /// shared (cloning it allocates nothing). A caller that holds a project id for as long
    /// as a membership lasts keeps this one, so a project's id is allocated once, not once
    /// per member.
    pub fn canonical(&self, project: &ProjectId) -> Option<&ProjectId> {
        self.slots.get_key_value(project).map(|(id, _)| id)
    }

    /// Removes `conn`; `None` if it was not registered.
    pub fn unregister(&mut self, conn: ConnId) -> Option<Unregistered<T>> {
        let Place { slot, at } = self.index.remove(&conn)?;
        let project = self.projects.get_mut(slot as usize)?.as_mut()?;
        let member = project.members.swap_remove(at as usize);
        debug_assert_eq!(member.conn, conn);
        if let Some(place) = project
            .members
            .get(at as usize)
            .and_then(|moved| self.index.get_mut(&moved.conn))
        {
            place.at = at;
        }
        let left = match project.users.get_mut(&member.user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => {
                project.users.remove(&member.user);
                true
            }
        };
        let members = project.members.len();
        let project_id = if members == 0 {
            let emptied = self.projects[slot as usize]
                .take()
                .expect("the slot was just read");
            self.slots.remove(&emptied.id);
            self.free.push(slot);
            emptied.id
        } else {
            project.id.clone()
        };
        let announce_leave = left && self.config.announces(&project_id, members + 1);
        Some(Unregistered {
            value: member.value,
            project: project_id,
            user: member.user,
            left,
            members,
            announce_leave,
        })
    }

    /// The project registered under `project`'s id, if it has members.
    fn project(&self, project: &ProjectId) -> Option<&Project<T>> {
        let slot = *self.slots.get(project)?;
        self.projects[slot as usize].as_ref()
    }

    /// Every project with members.
    fn live(&self) -> impl Iterator<Item = &Project<T>> + '_ {
        self.projects.iter().flatten()
    }

    /// The member at `place`.
    fn at_mut(&mut self, place: Place) -> Option<&mut Member<T>> {
        self.projects
            .get_mut(place.slot as usize)?
            .as_mut()?
            .members
            .get_mut(place.at as usize)
    }

    /// The members that receive a publish to `project` now, with their values.
    /// Members being closed are left out.
    pub fn recipients(&self, project: &ProjectId) -> impl Iterator<Item = (ConnId, &T)> + '_ {
        self.project(project)
            .into_iter()
            .flat_map(|p| p.members.iter())
            .filter(|m| !m.closing)
            .map(|m| (m.conn, &m.value))
    }

    /// The value of a registered member.
    pub fn member(&self, conn: ConnId) -> Option<&T> {
        let place = self.index.get(&conn)?;
        self.projects
            .get(place.slot as usize)?
            .as_ref()?
            .members
            .get(place.at as usize)
            .map(|m| &m.value)
    }

    /// Every member of `project` with its user, closing or not.
    pub fn members(&self, project: &ProjectId) -> impl Iterator<Item = (ConnId, &UserId, &T)> + '_ {
        self.project(project)
            .into_iter()
            .flat_map(|p| p.members.iter())
            .map(|m| (m.conn, &m.user, &m.value))
    }

    /// The users present in `project`, with their connection counts.
    pub fn presence(&self, project: &ProjectId) -> impl Iterator<Item = (&UserId, u32)> + '_ {
        self.project(project)
            .into_iter()
            .flat_map(|p| p.users.iter())
            .map(|(u, n)| (u, *n))
    }

    /// Registered members in all projects of this shard.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the shard has no member.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The member count of each project of this shard.
    pub fn project_sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.live().map(|p| p.members.len())
    }

    /// Every project of this shard with its member count, in no order.
    pub fn projects(&self) -> impl Iterator<Item = (&ProjectId, usize)> + '_ {
        self.live().map(|p| (&p.id, p.members.len()))
    }

    /// Projects with at least one member.
    pub fn project_count(&self) -> usize {
        self.slots.len()
    }

    /// The owner of `conn`'s send queue measured it after an enqueue. Over either limit
    /// the member is a slow consumer: it is closed with 4008 and receives nothing more.
    /// Returns whether this call judged it (false: within the limits, unknown, or already
    /// closing), so a verdict is counted once.
    pub fn handle_queue_depth(&mut self, conn: ConnId, depth: QueueDepth) -> bool {
        self.config.is_over(depth) && self.close_member(conn, Close::slow_consumer())
    }

    /// Closes one member with `close`, once: later calls for it do nothing. Returns whether
    /// this call started the close (false: unknown, or already closing).
    pub fn close_member(&mut self, conn: ConnId, close: Close) -> bool {
        let Some(member) = self
            .index
            .get(&conn)
            .copied()
            .and_then(|at| self.at_mut(at))
        else {
            return false;
        };
        if member.closing {
            return false;
        }
        member.closing = true;
        self.actions.push_back(Action::Close { conn, close });
        true
    }

    /// Closes every member of `project` with `close` (1000 "project closed", say).
    pub fn close_project(&mut self, project: &ProjectId, close: &Close) {
        let conns: Vec<ConnId> = self.recipients(project).map(|(c, _)| c).collect();
        for conn in conns {
            self.close_member(conn, close.clone());
        }
    }

    /// Closes every member of `user` (in every project of this shard) with `close`.
    pub fn close_user(&mut self, user: &UserId, close: &Close) {
        let conns: Vec<ConnId> = self
            .live()
            .flat_map(|p| p.members.iter())
            .filter(|m| !m.closing && &m.user == user)
            .map(|m| m.conn)
            .collect();
        for conn in conns {
            self.close_member(conn, close.clone());
        }
    }

    /// The server is shutting down: every member is drained with 1001, the closes spread
    /// evenly over `window` from `now` so clients do not all reconnect at the same instant.
    pub fn handle_shutdown(&mut self, now: Instant, window: Duration) {
        let mut conns: Vec<ConnId> = self
            .live()
            .flat_map(|p| p.members.iter())
            .filter(|m| !m.closing)
            .map(|m| m.conn)
            .collect();
        // A stable order makes the schedule reproducible; ids are random enough across projects.
        conns.sort_unstable();
        let n = conns.len().max(1) as u32;
        for (i, conn) in conns.into_iter().enumerate() {
            let at = now + window * i as u32 / n;
            self.actions.push_back(Action::Drain { conn, at });
        }
    }

    /// The next decision to apply.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests;
