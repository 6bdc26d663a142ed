//! The Lua scripts Redis runs atomically. Times are microseconds of Redis's
//! own `TIME`; numbers handed back to Redis are formatted with `%.0f`, since
//! Lua's default formatting keeps only 14 digits and a time has 16.

/// Reserves a pacing slot. `KEYS[1]`: the key's floor (a send time learnt
/// from a 429, a string); `KEYS[2]`: the key's senders, a sorted set of
/// processes by their last reservation; `KEYS[3..]`: a sorted set of
/// reserved send times per window pair (the general limits, then each
/// matched route). `ARGV`: margin, limit (the longest wait the caller
/// accepts), a unique member, the earliest slot (a wait from now: the
/// process's share of the windows while it comes back from a fallback,
/// else 0), the process, how long a sender counts (the longest window),
/// then per sorted set `burst_max, burst_period, sustain_max,
/// sustain_period`. Returns `{1, wait, senders}` when reserved,
/// `{0, wait, senders}` when the wait is over the limit (no slot taken);
/// `senders` counts the processes that reserved for the key within the
/// longest window, this one included.
pub(super) const PACE_RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local margin = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local span = tonumber(ARGV[6])
redis.call('ZADD', KEYS[2], string.format('%.0f', now), ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now - span))
redis.call('PEXPIRE', KEYS[2], string.format('%.0f', math.floor(span / 1000) + 1000))
local senders = redis.call('ZCARD', KEYS[2])
local slot = now + tonumber(ARGV[4])
local floor = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if floor > slot then slot = floor end
for i = 3, #KEYS do
  local a = 7 + (i - 3) * 4
  local newest = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  if newest[2] then slot = math.max(slot, tonumber(newest[2])) end
  for w = 0, 1 do
    local max = tonumber(ARGV[a + w * 2])
    local period = tonumber(ARGV[a + 1 + w * 2])
    local nth = redis.call('ZRANGE', KEYS[i], -max, -max, 'WITHSCORES')
    if nth[2] then slot = math.max(slot, tonumber(nth[2]) + period + margin) end
  end
end
local wait = slot - now
if wait > limit then return {0, wait, senders} end
for i = 3, #KEYS do
  local a = 7 + (i - 3) * 4
  local depth = math.max(tonumber(ARGV[a]), tonumber(ARGV[a + 2]))
  local longest = math.max(tonumber(ARGV[a + 1]), tonumber(ARGV[a + 3]))
  redis.call('ZADD', KEYS[i], string.format('%.0f', slot), ARGV[3])
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(depth + 1))
  redis.call('PEXPIREAT', KEYS[i], string.format('%.0f', math.floor((slot + longest + margin) / 1000) + 1000))
end
return {1, wait, senders}
";

/// Raises a pacing key's floor to `now + ARGV[1]`. `KEYS[1]`: the floor.
pub(super) const PACE_LEARN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local after = tonumber(ARGV[1])
local floor = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if now + after > floor then
  redis.call('SET', KEYS[1], string.format('%.0f', now + after), 'PX', string.format('%.0f', math.floor(after / 1000) + 1000))
end
return 1
";

/// Asks what a request may do about a cooldown. `KEYS[1]`: the cooldown,
/// a hash of `until`, `probe` (the lease holder's token), `lease` (its
/// end), `release` (the next released slot) and `gen` (closings).
/// `ARGV`: token, ticket (a generation, or empty), lease length, release
/// spacing, limit. Returns `{kind, wait, gen}`: 0 go, 1 go as the probe,
/// 2 wait `wait` then ask again, 3 go at `wait` with ticket `gen`, 4 wait
/// for the probe (whose lease ends in `wait`).
pub(super) const COOLDOWN_ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local h = redis.call('HMGET', KEYS[1], 'until', 'probe', 'lease', 'release', 'gen')
if not h[1] then return {0, 0, 0} end
local untl = tonumber(h[1])
local gen = tonumber(h[5] or '0') or 0
if ARGV[2] ~= '' and tonumber(ARGV[2]) == gen and now >= untl then return {0, 0, gen} end
if now < untl then return {2, untl - now, gen} end
if h[4] then
  local nxt = tonumber(h[4])
  if nxt <= now then
    redis.call('DEL', KEYS[1])
    return {0, 0, 0}
  end
  if nxt - now > tonumber(ARGV[5]) then return {2, nxt - now, gen} end
  local after = nxt + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'release', string.format('%.0f', after))
  redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', math.floor(after / 1000) + 60000))
  return {3, nxt - now, gen}
end
if h[2] and tonumber(h[3]) > now then return {4, tonumber(h[3]) - now, gen} end
redis.call('HSET', KEYS[1], 'probe', ARGV[1], 'lease', string.format('%.0f', now + tonumber(ARGV[3])))
return {1, 0, gen}
";

/// Closes a cooldown until at least `now + ARGV[1]`, voiding any release
/// and ticket, then announces it on the channel `ARGV[2]` as
/// `"<micros left> <ARGV[3]>"` (the cooldown's name), in the same atomic
/// step: a process that hears it finds the cooldown in place. `KEYS[1]`:
/// the cooldown. Kept a minute after it ends. Plain `PUBLISH`, which a
/// cluster passes to every node: cooldowns are rare, and a subscriber on
/// any one node hears them all.
pub(super) const COOLDOWN_CLOSE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1])
local old = tonumber(redis.call('HGET', KEYS[1], 'until') or '0') or 0
if old > untl then untl = old end
redis.call('HSET', KEYS[1], 'until', string.format('%.0f', untl))
redis.call('HDEL', KEYS[1], 'release')
redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', math.floor(untl / 1000) + 60000))
redis.call('PUBLISH', ARGV[2], string.format('%.0f', untl - now) .. ' ' .. ARGV[3])
return 1
";

/// Ends the probe of token `ARGV[1]`, if it still holds the lease; with
/// `ARGV[3] == '1'` (it got through) and no closing since generation
/// `ARGV[2]`, starts the release `ARGV[4]` from now. `KEYS[1]`: the
/// cooldown.
pub(super) const COOLDOWN_PROBED: &str = r"
if redis.call('HGET', KEYS[1], 'probe') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'probe', 'lease')
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') or 0
if ARGV[3] == '1' and gen == tonumber(ARGV[2]) then
  local t = redis.call('TIME')
  local first = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'release', string.format('%.0f', first))
  redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', math.floor(first / 1000) + 60000))
end
return 1
";

/// Notes a cooldown `ARGV[1]` ending `ARGV[2]` µs from now in the fleet's
/// list of cooldowns, which a process reads when it (re)subscribes to the
/// announcements (see [`COOLDOWNS_HEARD`]). Written before the cooldown is
/// closed and announced, so a process subscribing meanwhile either reads
/// it here or hears it. `KEYS[1]`: the list, a sorted set by end time,
/// trimmed of cooldowns that ended a minute ago (as the cooldowns
/// themselves expire).
pub(super) const COOLDOWN_LIST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[2])
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0') or 0
if untl > old then redis.call('ZADD', KEYS[1], string.format('%.0f', untl), ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - 60000000))
redis.call('PEXPIRE', KEYS[1], 120000)
return 1
";

/// The cooldowns of the list `KEYS[1]` that ended less than a minute ago:
/// `{name, micros left (negative once ended), ...}`.
pub(super) const COOLDOWNS_HEARD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local list = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', now - 60000000), '+inf', 'WITHSCORES')
local out = {}
for i = 1, #list, 2 do
  out[#out + 1] = list[i]
  out[#out + 1] = string.format('%.0f', tonumber(list[i + 1]) - now)
end
return out
";

/// A member's heartbeat: `KEYS[1]`, the fleet, a sorted set of members by
/// last heartbeat; `KEYS[2]`, the fleet's epoch, a name set by whichever
/// member finds it missing (Redis lost its state, or the whole fleet was
/// gone for as long as a member counts). `ARGV`: the member, how long a
/// member counts without a heartbeat (µs), a new epoch's name. Returns
/// how many members count, and the epoch.
pub(super) const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[2])
local keep = string.format('%.0f', math.floor(ttl / 1000) + 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - ttl))
redis.call('PEXPIRE', KEYS[1], keep)
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[2], epoch)
end
redis.call('PEXPIRE', KEYS[2], keep)
return {redis.call('ZCARD', KEYS[1]), epoch}
";
