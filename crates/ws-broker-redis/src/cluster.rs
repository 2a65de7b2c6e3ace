//! Membership changes decided for the whole cluster: who is present in a project on any
//! node, the webhook events (`project_occupied`, `project_vacated`, `user_joined`,
//! `user_left`) each decided once for the cluster, and the presence frames other nodes'
//! users cause here.
//!
//! ```text
//!  presence task, when this node's members of p changed (or its refresh is due):
//!    CHANGE(p, node, users) ── one script, atomic: drop the nodes whose announcement
//!        │                     expired (a crash), replace this node's, sum per user
//!        │                     → the transitions: occupied/vacated, joined/left
//!        ├─► the caller alone got them: MembershipSink::emit (the webhook sender), so
//!        │   each leaves once for the cluster, whichever node saw it
//!        └─► {*}:cluster-projects[p] = the earliest announcement expiry in p
//!  every tick:
//!    projects of the index whose earliest expiry passed → CHANGE(p, reap) by any node:
//!        a crashed node's users leave within presence_ttl (plus a tick), even where no
//!        live node has members
//!    REMOTE(p, node, version) for each project with members here, one pipeline: the
//!        other nodes' users (the cluster's totals minus this node's), unless unchanged
//!        → SharedHub::handle_remote_presence → ws_core::cluster_presence → frames
//! ```
//!
//! Keys (Redis Cluster ready: a script touches one project's keys, all declared in KEYS
//! and sharing its `{p}` hash tag; the index is the deployment's, `{*}`, touched apart):
//! - `<prefix>:{p}:cluster-nodes`: a sorted set node → when its announcement expires (ms);
//! - `<prefix>:{p}:cluster-members`: a hash node → its users as a JSON object user → count;
//! - `<prefix>:{p}:cluster-users`: a hash user → connections in the cluster;
//! - `<prefix>:{p}:cluster-version`: bumped by every change of the totals;
//! - `<prefix>:{*}:cluster-projects`: a sorted set project → its earliest expiry (ms).
//!
//! These sit beside the announcements `presence.rs` writes for the presence list, which
//! stay as they are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use redis::Script;
use tracing::{debug, warn};
use ws_core::webhook::EventName;
use ws_core::{ProjectId, UserId};
use ws_transport::MembershipSink;
use ws_transport::broker::BrokerError;

use crate::inner::{Inner, millis, unix_millis};

/// `KEYS`: nodes, members, users, version (one project's). `ARGV`: node, presence TTL
/// (ms), keys' TTL (ms), `set` or `reap`, then user, connections, user, connections… (for
/// `set`: this node's members; none withdraws them).
///
/// Nodes whose announcement expired are dropped first (their users subtracted), then this
/// node's announcement is replaced; the per-user sum changes by the net difference, so a
/// node's own expiry and its new announcement in one call cost no leave/join. Returns
/// `{occupied before, occupied after, earliest expiry left (0: none), Redis ms, joined
/// users, left users}`.
const CHANGE: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local before = redis.call('HLEN', KEYS[3]) > 0
local delta = {}
local function take(entry, sign)
  if not entry then return end
  for user, n in pairs(cjson.decode(entry)) do
    delta[user] = (delta[user] or 0) + sign * tonumber(n)
  end
end
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  take(redis.call('HGET', KEYS[2], node), -1)
  redis.call('HDEL', KEYS[2], node)
  redis.call('ZREM', KEYS[1], node)
end
if ARGV[4] == 'set' then
  take(redis.call('HGET', KEYS[2], ARGV[1]), -1)
  if #ARGV > 4 then
    local mine = {}
    for i = 5, #ARGV, 2 do
      local n = tonumber(ARGV[i + 1])
      mine[ARGV[i]] = n
      delta[ARGV[i]] = (delta[ARGV[i]] or 0) + n
    end
    redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(mine))
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  else
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('ZREM', KEYS[1], ARGV[1])
  end
end
local joined, left = {}, {}
local changed = false
for user, d in pairs(delta) do
  if d ~= 0 then
    changed = true
    local was = tonumber(redis.call('HGET', KEYS[3], user) or '0')
    local is = was + d
    if is <= 0 then
      redis.call('HDEL', KEYS[3], user)
      if was > 0 then left[#left + 1] = user end
    else
      redis.call('HSET', KEYS[3], user, is)
      if was <= 0 then joined[#joined + 1] = user end
    end
  end
end
if changed then redis.call('INCR', KEYS[4]) end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
local after = redis.call('HLEN', KEYS[3]) > 0
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
table.sort(joined)
table.sort(left)
return {before and 1 or 0, after and 1 or 0, tonumber(first[2] or '0'), now, joined, left}
";

/// `KEYS`: version, users, members (one project's). `ARGV`: node, the version last read
/// (empty: none). Returns `{version}` when unchanged, else `{version, user, connections,
/// …}`: every user's connections on the other nodes (the totals minus this node's own).
const REMOTE: &str = r"
local v = redis.call('GET', KEYS[1]) or '0'
if v == ARGV[2] then return {v} end
local own = cjson.decode(redis.call('HGET', KEYS[3], ARGV[1]) or '{}')
local out = {v}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local n = tonumber(all[i + 1]) - (tonumber(own[all[i]]) or 0)
  if n > 0 then
    out[#out + 1] = all[i]
    out[#out + 1] = tostring(n)
  end
end
return out
";

/// `KEYS`: the index. `ARGV`: project, Redis ms of the CHANGE that found it vacant.
/// Removes the project unless a node announced it since (its score is then later).
const UNINDEX: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
";

/// Projects one tick reaps at most (the rest wait for the next tick).
const REAP_BATCH: isize = 100;

/// What the cluster part of the broker keeps.
#[derive(Debug)]
pub(crate) struct Cluster {
    change: Script,
    remote: Script,
    unindex: Script,
    /// Where the decided events go (the webhook sender), when there is one.
    sink: OnceLock<Arc<dyn MembershipSink>>,
    /// The version of each project's totals last read, so an unchanged project costs one
    /// GET inside the pipeline and no transfer.
    versions: Mutex<HashMap<ProjectId, String>>,
}

impl Cluster {
    pub(crate) fn new() -> Self {
        Self {
            change: Script::new(CHANGE),
            remote: Script::new(REMOTE),
            unindex: Script::new(UNINDEX),
            sink: OnceLock::new(),
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// Reports the cluster's membership changes to `sink` from now on. Once.
    pub(crate) fn report_to(&self, sink: Arc<dyn MembershipSink>) {
        let _ = self.sink.set(sink);
    }
}

/// What a CHANGE decided.
#[derive(Debug)]
struct Change {
    occupied_before: bool,
    occupied_after: bool,
    /// The earliest announcement expiry left in the project (Redis ms), 0 when none.
    earliest: u64,
    /// Redis ms when it ran.
    now: u64,
    joined: Vec<String>,
    left: Vec<String>,
}

fn key(inner: &Inner, project: &ProjectId, what: &str) -> String {
    format!(
        "{}:{{{}}}:cluster-{what}",
        inner.config.key_prefix,
        project.as_str()
    )
}

fn index_key(inner: &Inner) -> String {
    format!("{}:{{*}}:cluster-projects", inner.config.key_prefix)
}

/// This node's members of `project` are now `users` (none: withdrawn).
pub(crate) async fn announce(
    inner: &Inner,
    project: &ProjectId,
    users: &[(UserId, u32)],
) -> Result<(), BrokerError> {
    run_change(inner, project, Some(users)).await
}

/// Drops the expired announcements of the projects whose earliest expiry passed, wherever
/// they are, then reads the other nodes' users of this node's projects and sends the
/// presence diffs due.
pub(crate) async fn tick(inner: &Inner) {
    if let Err(e) = reap(inner).await {
        debug!(error = %e, "cluster presence reap failed; trying again next tick");
    }
    if let Err(e) = read_remote(inner).await {
        debug!(error = %e, "cluster presence read failed; trying again next tick");
    }
    inner.hub.deliver_presence_diffs(Instant::now());
}

async fn reap(inner: &Inner) -> Result<(), BrokerError> {
    let index = index_key(inner);
    let index = &index;
    let now = unix_millis();
    let due: Vec<String> = inner
        .call(true, |mut c| async move {
            redis::cmd("ZRANGEBYSCORE")
                .arg(index)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(REAP_BATCH)
                .query_async(&mut c)
                .await
        })
        .await?;
    for project in due {
        let Ok(project) = ProjectId::parse(&project) else {
            // Not ours to read: drop it so it does not come back every tick.
            let _ = remove_from_index(inner, &project, u64::MAX).await;
            continue;
        };
        run_change(inner, &project, None).await?;
    }
    Ok(())
}

/// Runs CHANGE on `project` (`users`: this node's announcement; `None`: reap only), hands
/// the transitions to the sink and keeps the index up to date.
async fn run_change(
    inner: &Inner,
    project: &ProjectId,
    users: Option<&[(UserId, u32)]>,
) -> Result<(), BrokerError> {
    let cluster = &inner.cluster;
    let mut invocation = cluster.change.prepare_invoke();
    invocation
        .key(key(inner, project, "nodes"))
        .key(key(inner, project, "members"))
        .key(key(inner, project, "users"))
        .key(key(inner, project, "version"))
        .arg(&inner.node)
        .arg(millis(inner.config.presence_ttl))
        .arg(millis(inner.meta_ttl))
        .arg(if users.is_some() { "set" } else { "reap" });
    for (user, connections) in users.unwrap_or_default() {
        invocation.arg(user.as_str()).arg(*connections);
    }
    let invocation = &invocation;
    let (before, after, earliest, now, joined, left): (u8, u8, u64, u64, Vec<String>, Vec<String>) =
        inner
            .call(false, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
    let change = Change {
        occupied_before: before == 1,
        occupied_after: after == 1,
        earliest,
        now,
        joined,
        left,
    };
    emit(inner, project, &change);
    // The index: a crashed node's projects must be found by whoever is alive.
    if change.earliest > 0 {
        let index = index_key(inner);
        let (index, member) = (&index, project.as_str());
        let earliest = change.earliest;
        inner
            .call(true, |mut c| async move {
                redis::cmd("ZADD")
                    .arg(index)
                    .arg("GT")
                    .arg(earliest)
                    .arg(member)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
    } else {
        remove_from_index(inner, project.as_str(), change.now).await?;
    }
    Ok(())
}

async fn remove_from_index(inner: &Inner, project: &str, now: u64) -> Result<(), BrokerError> {
    let mut invocation = inner.cluster.unindex.prepare_invoke();
    invocation.key(index_key(inner)).arg(project).arg(now);
    let invocation = &invocation;
    inner
        .call(true, |mut c| async move {
            invocation.invoke_async::<()>(&mut c).await
        })
        .await
}

/// The events of `change`, in the order they happened: the project filled, then its users
/// came; its users went, then it emptied.
fn emit(inner: &Inner, project: &ProjectId, change: &Change) {
    if project.is_personal() {
        return;
    }
    let Some(sink) = inner.cluster.sink.get() else {
        return;
    };
    if !change.occupied_before && change.occupied_after {
        sink.emit(project, EventName::ProjectOccupied, None);
    }
    for user in &change.left {
        sink.emit(
            project,
            EventName::UserLeft,
            Some(&UserId::new(user.as_str())),
        );
    }
    for user in &change.joined {
        sink.emit(
            project,
            EventName::UserJoined,
            Some(&UserId::new(user.as_str())),
        );
    }
    if change.occupied_before && !change.occupied_after {
        sink.emit(project, EventName::ProjectVacated, None);
    }
}

/// A connection to `project` is being recovered: when it is the project's first member
/// here, the other nodes' users are read now, before its welcome, so that whoever was
/// there before it is not announced as joining, and whoever comes after is.
pub(crate) async fn prime(inner: &Inner, project: &ProjectId) {
    let unprimed: Vec<(ProjectId, bool)> = inner
        .hub
        .cluster_projects()
        .into_iter()
        .filter(|(p, primed)| p == project && !primed)
        .collect();
    if unprimed.is_empty() {
        return;
    }
    if let Err(e) = read(inner, unprimed).await {
        debug!(error = %e, "cluster presence read failed; the next tick reads it");
    }
}

/// Reads the other nodes' users of every project with members here (one round trip) and
/// hands the changed ones to the hub.
async fn read_remote(inner: &Inner) -> Result<(), BrokerError> {
    let projects = inner.hub.cluster_projects();
    {
        // Forget the versions of projects that have no member here any more; a project
        // not primed yet needs a whole snapshot, whatever version was read.
        let mut versions = inner
            .cluster
            .versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        versions.retain(|p, _| projects.iter().any(|(q, primed)| q == p && *primed));
    }
    read(inner, projects).await
}

/// Reads `projects` (with whether each is primed) in one pipeline.
async fn read(inner: &Inner, projects: Vec<(ProjectId, bool)>) -> Result<(), BrokerError> {
    let cluster = &inner.cluster;
    {
        // Forget the versions of projects that have no member here any more.
        let mut versions = cluster
            .versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A project not primed yet needs a whole snapshot, whatever version was read.
        versions.retain(|p, _| projects.iter().any(|(q, primed)| q == p && *primed));
    }
    if projects.is_empty() {
        return Ok(());
    }
    let mut pipeline = redis::pipe();
    pipeline.load_script(&cluster.remote).ignore();
    {
        let versions = cluster
            .versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (project, primed) in &projects {
            let known = if *primed {
                versions.get(project).map_or("", String::as_str)
            } else {
                ""
            };
            pipeline.invoke_script(
                cluster
                    .remote
                    .key(key(inner, project, "version"))
                    .key(key(inner, project, "users"))
                    .key(key(inner, project, "members"))
                    .arg(&inner.node)
                    .arg(known),
            );
        }
    }
    let pipeline = &pipeline;
    let answers: Vec<Vec<String>> = inner
        .call(
            true,
            |mut c| async move { pipeline.query_async(&mut c).await },
        )
        .await?;
    let now = Instant::now();
    let mut versions = cluster
        .versions
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for ((project, primed), answer) in projects.iter().zip(answers) {
        let mut fields = answer.into_iter();
        let Some(version) = fields.next() else {
            continue;
        };
        let rest: Vec<String> = fields.collect();
        if *primed && versions.get(project) == Some(&version) {
            continue;
        }
        let mut users = Vec::with_capacity(rest.len() / 2);
        for pair in rest.chunks_exact(2) {
            match pair[1].parse::<u32>() {
                Ok(n) => users.push((UserId::new(pair[0].as_str()), n)),
                Err(_) => warn!(project = %project, "unreadable cluster presence entry in redis"),
            }
        }
        versions.insert(project.clone(), version);
        inner.hub.handle_remote_presence(now, project, users);
    }
    Ok(())
}
