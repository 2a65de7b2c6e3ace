//! The Lua scripts. Redis runs a script atomically, so a publish takes its offset, joins
//! the history and goes out on the channel as one step: every subscriber sees one project's
//! messages in offset order, whichever node published them.
//!
//! Keys a script touches are all of one project (they share its `{project}` hash tag), or
//! all of the deployment's budget (they share the `{*}` hash tag, which no project has),
//! and every one of them is given in `KEYS`: none is built inside Lua, so a Redis Cluster
//! routes each script to the one node holding its slot. The only other name a script uses
//! is the publish script's channel (`ARGV`), which has its project's hash tag too.
//! Scripts are sent with EVALSHA and loaded again on `NOSCRIPT` (after a Redis restart).

use redis::Script;

/// `KEYS`: meta, history, keys, key order. `ARGV`: epoch for a new stream, frame head, frame
/// tail, channel, history size, history TTL (ms), meta TTL (ms), history max bytes,
/// idempotency key (empty: none), origin (empty, or `@<node>:<conn>`: the connection of the
/// publishing node that must not receive it). Returns `{offset, the history's bytes, Redis
/// ms, duplicate}`: the node reports the middle two to the deployment's budget (separate
/// keys, which this script must not touch: in a Redis Cluster they live in another slot).
///
/// The history's bytes (the entries' lengths) are kept in meta's `bytes`; a history whose
/// key expired weighs nothing. The oldest entries go while the list is over `size` or over
/// `max_bytes` (but the newest stays), so what is kept is always one contiguous range.
///
/// Exact publishing: `keys` is a hash key → first offset, `key order` a sorted set of the
/// same keys by the Redis ms they were recorded. A key older than the TTL or beyond the
/// newest `size` is forgotten (the memory broker's `ws_core::dedupe::DedupeWindow`, in
/// Lua). A remembered key answers its first offset with `duplicate = 1` and publishes
/// nothing; checking and recording in the same script as the append is what makes two
/// nodes racing one key publish it once. A new epoch forgets every key with the history.
pub(crate) const PUBLISH: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0, 'bytes', 0)
end
local size = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ms = string.format('%d', now)
local key = ARGV[9]
if key ~= '' then
  local oldest = '(' .. string.format('%d', now - tonumber(ARGV[6]))
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', oldest)
  for i = 1, #old do
    redis.call('HDEL', KEYS[3], old[i])
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', oldest) end
  local first = redis.call('HGET', KEYS[3], key)
  if first then
    return {tonumber(first), 0, now, 1}
  end
end
local offset = string.format('%d', redis.call('HINCRBY', KEYS[1], 'top', 1))
local frame = ARGV[2] .. offset .. ARGV[3]
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
if redis.call('EXISTS', KEYS[2]) == 0 then bytes = 0 end
if size > 0 then
  local entry = offset .. ' ' .. ms .. ' ' .. frame
  local len = redis.call('RPUSH', KEYS[2], entry)
  bytes = bytes + #entry
  local max = tonumber(ARGV[8])
  while len > size or (bytes > max and len > 1) do
    local old = redis.call('LPOP', KEYS[2])
    bytes = bytes - #old
    len = len - 1
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
  if key ~= '' then
    redis.call('HSET', KEYS[3], key, offset)
    redis.call('ZADD', KEYS[4], now, key)
    local over = redis.call('ZCARD', KEYS[4]) - size
    if over > 0 then
      local popped = redis.call('ZPOPMIN', KEYS[4], over)
      for i = 1, #popped, 2 do
        redis.call('HDEL', KEYS[3], popped[i])
      end
    end
    redis.call('PEXPIRE', KEYS[3], ARGV[6])
    redis.call('PEXPIRE', KEYS[4], ARGV[6])
  end
end
if bytes < 0 then bytes = 0 end
redis.call('HSET', KEYS[1], 'bytes', bytes)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[4], epoch .. ' ' .. offset .. ARGV[10] .. ' ' .. frame)
return {tonumber(offset), bytes, now, 0}
";

/// The deployment's budget: `KEYS`: streams (sorted set project → ms of its last publish),
/// bytes (hash project → its history's bytes), total (the sum). `ARGV`: project, bytes, ms,
/// project, bytes, ms… (values reported by publishes or trims). A report older than what
/// is recorded is ignored, so reports from several nodes arriving out of order converge;
/// values are absolute, so a lost report is healed by the next. Returns the total.
const ACCOUNT: &str = r"
for i = 1, #ARGV, 3 do
  local project, bytes, ms = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local score = redis.call('ZSCORE', KEYS[1], project)
  if not score or ms >= tonumber(score) then
    local old = tonumber(redis.call('HGET', KEYS[2], project) or '0')
    redis.call('HSET', KEYS[2], project, bytes)
    redis.call('INCRBY', KEYS[3], bytes - old)
    redis.call('ZADD', KEYS[1], ms, project)
  end
end
return tonumber(redis.call('GET', KEYS[3]) or '0')
";

/// Forgets streams in the budget: `KEYS` as [`ACCOUNT`]. `ARGV`: history TTL (ms), then
/// project, ms, project, ms… of freed streams (forgotten unless published to after `ms`).
/// Streams whose last publish is older than the TTL are forgotten too: their history key
/// expired with it. Returns the total.
const FORGET: &str = r"
local function forget(project)
  local old = tonumber(redis.call('HGET', KEYS[2], project) or '0')
  redis.call('HDEL', KEYS[2], project)
  redis.call('ZREM', KEYS[1], project)
  redis.call('DECRBY', KEYS[3], old)
end
for i = 2, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[i + 1]) then forget(ARGV[i]) end
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
for _, project in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, 1000)) do
  forget(project)
end
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
if total < 0 then
  redis.call('SET', KEYS[3], 0)
  total = 0
end
return total
";

/// Frees or trims one project for the budget: `KEYS`: meta, history, presence. `ARGV`: the
/// ms of the last publish the plan saw, bytes to drop (0: free the whole stream). Refuses
/// (returns -1) when a node announces members of the project or when it was published to
/// since; otherwise returns the history's bytes left (0 when freed). A freed stream's next
/// use creates a new epoch, so its clients get `recovered: false`.
const CUT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local drop = tonumber(ARGV[2])
if drop == 0 and redis.call('ZCOUNT', KEYS[3], now, '+inf') > 0 then return -1 end
local last = redis.call('LINDEX', KEYS[2], -1)
if last then
  local ms = tonumber(string.match(last, '^%d+ (%d+) '))
  if ms and ms > tonumber(ARGV[1]) and drop == 0 then return -1 end
end
if drop == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 0
end
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local dropped = 0
while dropped < drop do
  local old = redis.call('LPOP', KEYS[2])
  if not old then break end
  dropped = dropped + #old
end
bytes = bytes - dropped
if bytes < 0 or redis.call('EXISTS', KEYS[2]) == 0 then bytes = 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'bytes', bytes) end
return bytes
";

/// `KEYS`: meta, history. `ARGV`: epoch for a new stream, `since` (empty: no messages
/// wanted), meta TTL (ms). Returns `{epoch, top, seconds, microseconds, entries after since}`.
const READ: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
local len = redis.call('LLEN', KEYS[2])
local entries = {}
local since = tonumber(ARGV[2])
if since and since < top and len > 0 then
  local from = since + 1 - (top - len + 1)
  if from < 0 then from = 0 end
  entries = redis.call('LRANGE', KEYS[2], from, -1)
end
local t = redis.call('TIME')
return {epoch, top, t[1], t[2], entries}
";

/// `KEYS`: meta. `ARGV`: the epoch seen, a new epoch, meta TTL (ms). Replaces the stream's
/// epoch if it is still the one seen (a node found that Redis lost messages it delivered);
/// the history stays, under the new name. Returns the epoch now.
const FORK: &str = r"
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HGET', KEYS[1], 'epoch')
";

/// `KEYS`: the project's presence set, this node's presence hash, meta. `ARGV`: node id,
/// presence TTL (ms), meta TTL (ms), then user, connections, user, connections…
/// Replaces this node's announcement; with no users, withdraws it.
const ANNOUNCE: &str = r"
redis.call('DEL', KEYS[2])
local ttl = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if #ARGV > 3 then
  for i = 4, #ARGV, 1000 do
    redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return 1
";

/// `KEYS`: the presence hashes of the other nodes that announced members of the project
/// (read from its presence set first: a script must be given every key it touches). Returns
/// user, connections, … of all of them (a user on two nodes appears twice).
const PRESENCE: &str = r"
local out = {}
for _, key in ipairs(KEYS) do
  local h = redis.call('HGETALL', key)
  for i = 1, #h do
    out[#out + 1] = h[i]
  end
end
return out
";

/// The scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    /// [`PUBLISH`] as sent: on a cluster it publishes with `SPUBLISH`.
    pub(crate) publish_code: String,
    pub(crate) publish: Script,
    pub(crate) read: Script,
    pub(crate) announce: Script,
    pub(crate) presence: Script,
    pub(crate) account: Script,
    pub(crate) forget: Script,
    pub(crate) cut: Script,
    pub(crate) fork: Script,
}

impl Scripts {
    /// The scripts for one Redis, or (`cluster`) for a Redis Cluster, where the publish
    /// script's message goes out on the project's sharded channel: `SPUBLISH` reaches only
    /// the nodes of the project's shard, where `PUBLISH` would be copied to every node of
    /// the cluster. The channel has the project's hash tag, so it is in the slot of the
    /// keys the script is given.
    pub(crate) fn new(cluster: bool) -> Self {
        let publish_code = if cluster {
            PUBLISH.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',")
        } else {
            PUBLISH.to_owned()
        };
        Self {
            publish: Script::new(&publish_code),
            publish_code,
            read: Script::new(READ),
            announce: Script::new(ANNOUNCE),
            presence: Script::new(PRESENCE),
            account: Script::new(ACCOUNT),
            forget: Script::new(FORGET),
            cut: Script::new(CUT),
            fork: Script::new(FORK),
        }
    }
}
