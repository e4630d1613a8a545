-- One atomic batch of a shard, all in the shard's slot: check the fence,
-- write the match states, deadlines and lifecycle counts, append the
-- batch's player deltas and dead letters to the shard's outbox (applied to
-- the player partitions and forwarded to the dead-letter stream by
-- score.lua and score.rs), record progress and the shard's sequence, move
-- the projector group. commit.rs
-- builds ARGV; the two must change together. prelude.lua comes first.
--
-- KEYS: 1 the generation marker's copy in this slot, 2 the shard's
--       progress, 3 shard stream, 4 the shard's deadlines, 5 the shard's
--       matches per lifecycle state, 6 the shard's outbox.
-- ARGV: 1 generation, 2 require active ('1'), 3 shard, 4 expected progress,
--       5 new progress, 6 last event time, 7 move the group ('1'), 8 group,
--       9 sequence before, 10 sequence after, 11 outbox deltas,
--       12 outbox retention (ms), 13 matches, 14 deadlines set,
--       15 deadlines cleared, 16 outbox dead letters, 17 lifecycle states
--       changed;
--       then the sections in that order.
local moved = generation_moved()
if moved then
  return {'GENERATION', moved}
end
local cur = redis.call('HGET', KEYS[2], 'id')
if (cur or '') ~= ARGV[4] then
  return {'PROGRESS', cur or ''}
end

local function slice(from, count)
  local t = {}
  for k = 0, count - 1 do t[k + 1] = ARGV[from + k] end
  return t
end

local n_matches = tonumber(ARGV[13])
local n_zadd, n_zrem = tonumber(ARGV[14]), tonumber(ARGV[15])
local n_states = tonumber(ARGV[17])
local i = 18

-- Every match state of the batch in one MSET (key, value pairs).
if n_matches > 0 then
  chunked('MSET', nil, slice(i, 2 * n_matches), 2)
  i = i + 2 * n_matches
end
if n_zadd > 0 then
  chunked('ZADD', KEYS[4], slice(i, 2 * n_zadd), 2)
  i = i + 2 * n_zadd
end
if n_zrem > 0 then
  chunked('ZREM', KEYS[4], slice(i, n_zrem), 1)
  i = i + n_zrem
end
-- The batch's net change per state (at most four), not one call per event.
for _ = 1, n_states do
  redis.call('HINCRBY', KEYS[5], ARGV[i], ARGV[i + 1])
  i = i + 2
end

local t = redis.call('TIME')
local applied_at = t[1] .. string.format('%06d', tonumber(t[2]))
-- One outbox entry per batch, deltas or not, so the entries chain: each
-- starts where the one before ended, and a gap shows that entries a
-- partition needs were lost. Entries older than the retention go: the
-- applier settles a batch in every partition before it commits the next,
-- so only a failover that rolled a partition back needs them again.
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XTRIM', KEYS[6], 'MINID', now_ms - tonumber(ARGV[12]))
local outbox_id = redis.call('XADD', KEYS[6], '*', 'q0', ARGV[9], 'q1', ARGV[10], 'd', ARGV[11],
  'dl', ARGV[16])
redis.call('HSET', KEYS[2], 'id', ARGV[5], 'applied_at', applied_at, 'q', ARGV[10])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[2], 'at', ARGV[6])
end
if ARGV[7] == '1' then
  -- A stream or group that does not exist has nobody to tell.
  redis.pcall('XGROUP', 'SETID', KEYS[3], ARGV[8], ARGV[5])
end
return {'OK', applied_at, outbox_id}
