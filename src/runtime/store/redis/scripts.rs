//! The Lua scripts the Redis store runs: each changes what it changes atomically.

/// Writes a batch's conversations on one node, then moves its watermarks and adds the blocks it
/// carries for other nodes' conversations (a Redis Cluster only). One script per node and batch:
/// Redis runs it in one go, one fsync with `appendfsync always`, after reading all of it (a
/// pipeline of one script per conversation is executed a socket read at a time, each ending in
/// an fsync: a megabyte-sized batch once cost some ninety of them). Its one declared key only
/// routes it; the keys it writes are in ARGV, all on this node (a script without flags may
/// touch keys of several slots of its node).
///
/// ARGV: the number of writes, then per write: its number of keys and of arguments, its keys
/// (header, messages, ids, results, result IDs, then each block's list), its arguments (base, ''
/// for none; offset; header JSON; outbox; replace flag; the number of new results; the number
/// of messages; the input partition; the number of blocks; the group's committed offset on the
/// partition (-1: none); the (time, IP) pairs of the blocks;
/// the (result ID, result JSON) pairs; the (index, message JSON) pairs; the (id, index) pairs).
/// Then the number of watermarks, and per watermark: its key, partition, next, committed. Then
/// the number of blocks, and per block: its list, time, IP.
///
/// Returns per write 1 (written), 0 (stale: the conversation is not at its base, or the offset is
/// not above it) or the error that stopped it; one write failing does not stop the others.
///
/// Fields go in a few variadic commands rather than one call each: a call from Lua costs about
/// as much as the field it writes, and this script is most of Redis's work. Results are the
/// exception, one SADD each: a result is appended only if its ID is new to the set beside the
/// list, which costs the same however long the list is, and most writes carry none.
pub(super) const BATCH: &str = r#"
-- unpack() is bounded by Lua's C stack: a replaced log of 100,000 messages goes in chunks.
local function bulk(command, key, list, first, last)
  for i = first, last, 1000 do
    redis.call(command, key, unpack(list, i, math.min(i + 999, last)))
  end
end
-- One conversation: its keys are ARGV[k + 1 ...], its arguments ARGV[a + 1 ...].
local function write(k, a)
  local header, messages, ids, results, rids = ARGV[k + 1], ARGV[k + 2], ARGV[k + 3], ARGV[k + 4], ARGV[k + 5]
  local stored = redis.call('HGET', header, 'offset')
  -- Compare and set: offsets compare as the decimal strings both sides were written as, and a
  -- conversation without one (absent) matches only an absent base.
  if (stored or '') ~= ARGV[a + 1] then
    return 0
  end
  -- Forward only, so that a conversation never returns to an offset it held: the same offset
  -- then means the same state, whoever writes.
  if stored and tonumber(ARGV[a + 2]) <= tonumber(stored) then
    return 0
  end
  if ARGV[a + 5] == '1' then
    redis.call('DEL', messages, ids)
  end
  local nresults = tonumber(ARGV[a + 6])
  local nmessages = tonumber(ARGV[a + 7])
  local at = a + 11
  -- LT: an IP blocked again keeps its earlier time (Redis 6.2+).
  for i = 1, tonumber(ARGV[a + 9]) do
    redis.call('ZADD', ARGV[k + 5 + i], 'LT', ARGV[at], ARGV[at + 1])
    at = at + 2
  end
  local new = {}
  for i = at, at + 2 * nresults - 1, 2 do
    if redis.call('SADD', rids, ARGV[i]) == 1 then
      new[#new + 1] = ARGV[i + 1]
    end
  end
  bulk('RPUSH', results, new, 1, #new)
  at = at + 2 * nresults
  bulk('HSET', messages, ARGV, at, at + 2 * nmessages - 1)
  at = at + 2 * nmessages
  bulk('HSET', ids, ARGV, at, at + 2 * nmessages - 1)
  -- A batch is written while the one before commits: the outbox of a write the group has not
  -- committed yet stays beside the new one, for a replay of both.
  if stored and tonumber(stored) >= tonumber(ARGV[a + 10]) then
    redis.call('HSET', header, 'outbox_prior', redis.call('HGET', header, 'outbox') or '')
  else
    redis.call('HDEL', header, 'outbox_prior')
  end
  redis.call('HSET', header, 'doc', ARGV[a + 3], 'offset', ARGV[a + 2], 'outbox', ARGV[a + 4], 'partition', ARGV[a + 8])
  return 1
end
-- Never back: a late write of a zombie carries an older watermark; -1 moves nothing.
local function forward(key, field, value)
  if tonumber(value) < 0 then
    return
  end
  local stored = redis.call('HGET', key, field)
  if not stored or tonumber(stored) < tonumber(value) then
    redis.call('HSET', key, field, value)
  end
end
local outcomes = {}
local at = 2
for w = 1, tonumber(ARGV[1]) do
  local nkeys, nargs = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local ok, written = pcall(write, at + 1, at + 1 + nkeys)
  if ok then
    outcomes[w] = written
  else
    outcomes[w] = type(written) == 'table' and (written.err or 'error') or tostring(written)
  end
  at = at + 2 + nkeys + nargs
end
local nmarks = tonumber(ARGV[at])
at = at + 1
for i = 1, nmarks do
  forward(ARGV[at], ARGV[at + 1], ARGV[at + 2])
  forward(ARGV[at], ARGV[at + 1] .. ':committed', ARGV[at + 3])
  at = at + 4
end
local nblocks = tonumber(ARGV[at])
at = at + 1
for i = 1, nblocks do
  redis.call('ZADD', ARGV[at], 'LT', ARGV[at + 1], ARGV[at + 2])
  at = at + 3
end
return outcomes
"#;

/// Log messages by ID. KEYS: ids, messages. ARGV: message IDs.
pub(super) const BY_ID: &str = r#"
local found = {}
for _, id in ipairs(ARGV) do
  local index = redis.call('HGET', KEYS[1], id)
  if index then
    local message = redis.call('HGET', KEYS[2], index)
    if message then
      table.insert(found, message)
    end
  end
end
return found
"#;
