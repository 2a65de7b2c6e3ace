//! The Lua scripts. Redis runs a script atomically, so a publish takes its offset, joins
//! the history and goes out on the channel as one step: every subscriber sees one project's
//! messages in offset order, whichever node published them.
//!
//! Keys a script touches are all of one project (they share its `{project}` hash tag).
//! Scripts are sent with EVALSHA and loaded again on `NOSCRIPT` (after a Redis restart).

use redis::Script;

/// `KEYS`: meta, history. `ARGV`: epoch for a new stream, frame head, frame tail, channel,
/// history size, history TTL (ms), meta TTL (ms). Returns the offset.
const PUBLISH: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
local offset = string.format('%d', redis.call('HINCRBY', KEYS[1], 'top', 1))
local frame = ARGV[2] .. offset .. ARGV[3]
local size = tonumber(ARGV[5])
if size > 0 then
  local t = redis.call('TIME')
  local ms = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
  redis.call('RPUSH', KEYS[2], offset .. ' ' .. ms .. ' ' .. frame)
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[4], epoch .. ' ' .. offset .. ' ' .. frame)
return tonumber(offset)
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

/// `KEYS`: the project's presence set. `ARGV`: the prefix of node hashes (`<set key>:`),
/// this node's id. Returns user, connections, … of every other node (a user on two nodes
/// appears twice).
const PRESENCE: &str = r"
local out = {}
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if node ~= ARGV[2] then
    local h = redis.call('HGETALL', ARGV[1] .. node)
    for i = 1, #h do
      out[#out + 1] = h[i]
    end
  end
end
return out
";

/// The scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) read: Script,
    pub(crate) announce: Script,
    pub(crate) presence: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            publish: Script::new(PUBLISH),
            read: Script::new(READ),
            announce: Script::new(ANNOUNCE),
            presence: Script::new(PRESENCE),
        }
    }
}
