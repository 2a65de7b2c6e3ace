//! Presence across nodes: which `join`/`leave` frames one node sends its members when a
//! project's users are spread over several nodes (the Redis broker).
//!
//! Each node knows its own members exactly (the hub) and the other nodes' users from
//! snapshots it reads now and then (`remote`). Per project with members here, a
//! [`ClusterPresence`] keeps `told`: the users this node's members were told are present.
//! A user is present in the cluster when they have a connection here or on another node.
//!
//! ```text
//!   local first connection ──► handle_local(Joined) ──► announce now, unless already told
//!   local last connection ───► handle_local(Left)   ──► announce now, unless still on
//!                                                       another node (then a later diff)
//!   snapshot of other nodes ─► handle_remote(now, p, users)
//!                                    │ at most one diff per project per `interval`
//!                                    ▼
//!   poll_diff(now) ──► Diff { joined, left } ──► join/leave frames to the local members
//! ```
//!
//! - Local changes are announced at once, as on one node: a user who connects here is
//!   seen at once by the members here; the other nodes learn it from their next snapshot.
//! - Remote changes are coalesced: a user who comes and goes within the interval makes no
//!   frame at all, and a flood of joins elsewhere costs each node one diff a second.
//! - The first snapshot after a project gets its first member here only primes `told`
//!   (that member asks for the presence list; replaying everyone as joins would be noise).
//! - `presence.events` and `max_members_for_events` (namespace overrides included) apply to
//!   the project's members in the whole cluster: this node's plus the others' connections.
//!
//! Nothing here reads a clock: `now` comes with every call.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::ids::{ProjectId, UserId};

/// Whether a project's members get presence frames: `presence.events` and
/// `presence.max_members_for_events` after the project's namespace overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsPolicy {
    /// Join/leave frames at all.
    pub events: bool,
    /// Above this many connections in the cluster, none.
    pub max_members: usize,
}

impl EventsPolicy {
    fn allows(self, members: usize) -> bool {
        self.events && members <= self.max_members
    }
}

/// A local change of a user's presence in a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// The user's first connection to the project on this node.
    Joined,
    /// The user's last connection to the project on this node is gone.
    Left,
}

/// What this node's members of `project` must be told about other nodes' users.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Diff {
    /// The project.
    pub project: ProjectId,
    /// Users now present, sorted.
    pub joined: Vec<UserId>,
    /// Users now gone, sorted.
    pub left: Vec<UserId>,
    /// Connections on the other nodes, at the snapshot.
    remote_members: usize,
}

impl Diff {
    /// Whether the frames go out: the policy, for the cluster's connections (`local_members`
    /// are this node's). Over the limit, the frames stop as they do on one node; members
    /// rely on the presence list.
    pub fn announces(&self, policy: EventsPolicy, local_members: usize) -> bool {
        policy.allows(local_members + self.remote_members)
    }
}

/// Coalescing of remote changes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterPresenceConfig {
    /// At most one diff per project per interval (1 s).
    pub interval: Duration,
}

impl Default for ClusterPresenceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Default)]
struct View {
    /// Users with a connection here.
    local: HashSet<UserId>,
    /// Other nodes' users and their connections; `None` until the first snapshot.
    remote: Option<HashMap<UserId, u32>>,
    remote_members: usize,
    /// What this node's members were told.
    told: HashSet<UserId>,
    last_diff: Option<Instant>,
    /// A snapshot came in since the last diff.
    dirty: bool,
}

impl View {
    fn on_remote(&self, user: &UserId) -> bool {
        self.remote
            .as_ref()
            .is_some_and(|r| r.get(user).is_some_and(|n| *n > 0))
    }

    fn due(&self, now: Instant, interval: Duration) -> Option<Instant> {
        self.dirty
            .then(|| self.last_diff.map_or(now, |t| t + interval))
    }
}

/// The cluster's presence as one node tells it. See the [module docs](self).
#[derive(Debug, Default)]
pub struct ClusterPresence {
    config: ClusterPresenceConfig,
    projects: HashMap<ProjectId, View>,
}

impl ClusterPresence {
    /// No project yet.
    pub fn new(config: ClusterPresenceConfig) -> Self {
        Self {
            config,
            projects: HashMap::new(),
        }
    }

    /// `user`'s presence in `project` changed on this node, which now has `local_members`
    /// connections there. Returns whether to send this node's members a `join`/`leave`
    /// now (never to the user's own connections).
    pub fn handle_local(
        &mut self,
        project: &ProjectId,
        user: &UserId,
        change: Local,
        local_members: usize,
        policy: EventsPolicy,
    ) -> bool {
        match change {
            Local::Joined => {
                let view = self.projects.entry(project.clone()).or_default();
                view.local.insert(user.clone());
                let members = local_members + view.remote_members;
                view.told.insert(user.clone()) && policy.allows(members)
            }
            Local::Left => {
                let Some(view) = self.projects.get_mut(project) else {
                    return false;
                };
                view.local.remove(user);
                // Counted with the connection that left, as on one node.
                let members = local_members + 1 + view.remote_members;
                let announce = !view.on_remote(user) && view.told.remove(user);
                if view.local.is_empty() {
                    // Nobody here to tell anything.
                    self.projects.remove(project);
                }
                announce && policy.allows(members)
            }
        }
    }

    /// The other nodes' users of `project` (and their connections), as read now. Ignored
    /// for a project without members here.
    pub fn handle_remote(
        &mut self,
        now: Instant,
        project: &ProjectId,
        users: impl IntoIterator<Item = (UserId, u32)>,
    ) {
        let Some(view) = self.projects.get_mut(project) else {
            return;
        };
        let remote: HashMap<UserId, u32> = users.into_iter().filter(|(_, n)| *n > 0).collect();
        view.remote_members = remote.values().map(|n| *n as usize).sum();
        if view.remote.is_none() {
            view.told.extend(remote.keys().cloned());
            view.last_diff = Some(now);
        } else {
            view.dirty = true;
        }
        view.remote = Some(remote);
    }

    /// The next diff due now, if any: one per project per interval at most.
    pub fn poll_diff(&mut self, now: Instant) -> Option<Diff> {
        let interval = self.config.interval;
        loop {
            let (project, view) = self
                .projects
                .iter_mut()
                .find(|(_, v)| v.due(now, interval).is_some_and(|at| at <= now))?;
            view.dirty = false;
            let remote = view.remote.as_ref();
            let present =
                |u: &UserId| view.local.contains(u) || remote.is_some_and(|r| r.contains_key(u));
            let mut left: Vec<UserId> = view.told.iter().filter(|u| !present(u)).cloned().collect();
            let mut joined: Vec<UserId> = remote
                .into_iter()
                .flat_map(HashMap::keys)
                .filter(|u| !view.told.contains(*u))
                .cloned()
                .collect();
            if joined.is_empty() && left.is_empty() {
                continue;
            }
            view.last_diff = Some(now);
            for u in &left {
                view.told.remove(u);
            }
            view.told.extend(joined.iter().cloned());
            joined.sort_unstable();
            left.sort_unstable();
            return Some(Diff {
                project: project.clone(),
                joined,
                left,
                remote_members: view.remote_members,
            });
        }
    }

    /// When a diff may next be due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let interval = self.config.interval;
        self.projects
            .values()
            .filter(|v| v.dirty)
            .filter_map(|v| v.last_diff.map(|t| t + interval))
            .min()
    }

    /// Whether `project` has members here and got its first snapshot: until then the
    /// next snapshot must be a whole one, even if the other nodes did not change.
    pub fn is_primed(&self, project: &ProjectId) -> bool {
        self.projects
            .get(project)
            .is_some_and(|v| v.remote.is_some())
    }

    /// The projects with members here: those whose snapshots are wanted.
    pub fn projects(&self) -> impl Iterator<Item = &ProjectId> + '_ {
        self.projects.keys()
    }
}

#[cfg(test)]
mod tests;
