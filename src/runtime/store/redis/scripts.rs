//! The Lua scripts the Redis store runs: each changes what it changes atomically.

/// Writes one conversation if, and only if, it is still at the state the batch read (its stored
/// offset is the write's base, or it is absent and so is the base) and the batch's offset is
/// above that base. KEYS: header, messages, ids, results, result IDs, then the block list of each
/// block. ARGV: base ('' for none), offset, header JSON, outbox (see [`encode_outbox`]), replace
/// flag, the number of new results, the number of messages, the input partition, the number of
/// blocks, the (time, IP) pairs of the blocks, the (result ID, result JSON) pairs, the (index,
/// message JSON) pairs, then the (id, index) pairs. Returns 1 when written, 0 when stale.
///
/// Fields go in a few variadic commands rather than one call each: a call from Lua costs about
/// as much as the field it writes, and this script is most of Redis's work. Results are the
/// exception, one SADD each: a result is appended only if its ID is new to the set beside the
/// list, which costs the same however long the list is, and most writes carry none.
pub(super) const WRITE: &str = r#"
local stored = redis.call('HGET', KEYS[1], 'offset')
-- Compare and set: offsets compare as the decimal strings both sides were written as, and a
-- conversation without one (absent) matches only an absent base.
if (stored or '') ~= ARGV[1] then
  return 0
end
-- Forward only, so that a conversation never returns to an offset it held: the same offset
-- then means the same state, whoever writes.
if stored and tonumber(ARGV[2]) <= tonumber(stored) then
  return 0
end
-- unpack() is bounded by Lua's C stack: a replaced log of 100,000 messages goes in chunks.
local function bulk(command, key, list, first, last)
  for i = first, last, 1000 do
    redis.call(command, key, unpack(list, i, math.min(i + 999, last)))
  end
end
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[2], KEYS[3])
end
local results = tonumber(ARGV[6])
local messages = tonumber(ARGV[7])
local at = 10
-- LT: an IP blocked again keeps its earlier time (Redis 6.2+).
for i = 1, tonumber(ARGV[9]) do
  redis.call('ZADD', KEYS[5 + i], 'LT', ARGV[at], ARGV[at + 1])
  at = at + 2
end
local new = {}
for i = at, at + 2 * results - 1, 2 do
  if redis.call('SADD', KEYS[5], ARGV[i]) == 1 then
    new[#new + 1] = ARGV[i + 1]
  end
end
bulk('RPUSH', KEYS[4], new, 1, #new)
at = at + 2 * results
bulk('HSET', KEYS[2], ARGV, at, at + 2 * messages - 1)
at = at + 2 * messages
bulk('HSET', KEYS[3], ARGV, at, at + 2 * messages - 1)
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'offset', ARGV[2], 'outbox', ARGV[4], 'partition', ARGV[8])
return 1
"#;

/// Moves a partition's watermark forward, never back (a late write of a zombie carries an older
/// one): fields `<partition>` (next) and `<partition>:committed`, each on its own; -1 moves
/// nothing. KEYS: the topic's watermarks. ARGV: partition, next, committed.
pub(super) const MARK: &str = r#"
local function forward(field, value)
  if tonumber(value) < 0 then
    return
  end
  local stored = redis.call('HGET', KEYS[1], field)
  if not stored or tonumber(stored) < tonumber(value) then
    redis.call('HSET', KEYS[1], field, value)
  end
end
forward(ARGV[1], ARGV[2])
forward(ARGV[1] .. ':committed', ARGV[3])
return 0
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
