-- One atomic batch of a shard: check the fence, apply the coalesced read-model
-- changes, record progress, move the projector group. commit.rs builds ARGV;
-- the two must change together.
--
-- KEYS: 1 generation marker, 2 progress hash, 3 shard stream,
--       4 dead-letter stream, 5 deadline set, 6 season set,
--       7 matches per lifecycle state.
-- ARGV: 1 generation, 2 require active ('1'), 3 shard, 4 expected progress,
--       5 new progress, 6 last event time, 7 move the group ('1'), 8 group,
--       9 boards, 10 matches, 11 deadlines set, 12 deadlines cleared,
--       13 dead letters, 14 seasons, 15 lifecycle states changed; then the
--       sections in that order.
local gen = redis.call('GET', KEYS[1])
if ARGV[2] == '1' and gen ~= ARGV[1] then
  return {'GENERATION', gen or ''}
end
local cur = redis.call('HGET', KEYS[2], ARGV[3])
if (cur or '') ~= ARGV[4] then
  return {'PROGRESS', cur or ''}
end

-- Lua's unpack is bounded by the C stack; keep every variadic call short.
local CHUNK = 2000
local function chunked(cmd, key, list, width)
  local n = #list
  local step = CHUNK - (CHUNK % width)
  for i = 1, n, step do
    local j = math.min(i + step - 1, n)
    if key then
      redis.call(cmd, key, unpack(list, i, j))
    else
      redis.call(cmd, unpack(list, i, j))
    end
  end
end
local function slice(from, count)
  local t = {}
  for k = 0, count - 1 do t[k + 1] = ARGV[from + k] end
  return t
end

local n_boards, n_matches = tonumber(ARGV[9]), tonumber(ARGV[10])
local n_zadd, n_zrem = tonumber(ARGV[11]), tonumber(ARGV[12])
local n_dead, n_seasons = tonumber(ARGV[13]), tonumber(ARGV[14])
local n_states = tonumber(ARGV[15])
-- Board score = -points * SCALE + matches (PlayerStats::board_score).
local SCALE = 67108864
local i = 16

-- Per scope: the board and the counters hash. Every member's score is read
-- once (ZMSCORE) and every changed counter once (HMGET), moved by the
-- batch's deltas and written back with one ZADD and one HSET. A counter
-- that falls to 0 is deleted (absent = 0); a member whose matches (score
-- mod SCALE) fall to 0 leaves the board. Arguments come in blocks, so the
-- reads take them with unpack and Lua only loops to add.
local function read_all(cmd, key, from, n)
  local out = {}
  for c = 0, n - 1, CHUNK do
    local part = redis.call(cmd, key, unpack(ARGV, from + c, from + math.min(c + CHUNK, n) - 1))
    for k = 1, #part do out[c + k] = part[k] end
  end
  return out
end
for _ = 1, n_boards do
  local board, counters = ARGV[i], ARGV[i + 1]
  local n, nf = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local members, dscores = i + 4, i + 4 + n
  local fields, fdeltas = i + 4 + 2 * n, i + 4 + 2 * n + nf
  i = fdeltas + nf
  local scores = read_all('ZMSCORE', board, members, n)
  local olds = read_all('HMGET', counters, fields, nf)
  local hset, hdel = {}, {}
  for x = 0, nf - 1 do
    local v = (tonumber(olds[x + 1]) or 0) + tonumber(ARGV[fdeltas + x])
    if v == 0 then
      hdel[#hdel + 1] = ARGV[fields + x]
    else
      hset[#hset + 1] = ARGV[fields + x]
      hset[#hset + 1] = v
    end
  end
  local zadd, zrem = {}, {}
  for k = 0, n - 1 do
    local score = (tonumber(scores[k + 1]) or 0) + tonumber(ARGV[dscores + k])
    if score % SCALE == 0 then
      zrem[#zrem + 1] = ARGV[members + k]
    else
      zadd[#zadd + 1] = score
      zadd[#zadd + 1] = ARGV[members + k]
    end
  end
  if #hset > 0 then chunked('HSET', counters, hset, 2) end
  if #hdel > 0 then chunked('HDEL', counters, hdel, 1) end
  if #zadd > 0 then chunked('ZADD', board, zadd, 2) end
  if #zrem > 0 then chunked('ZREM', board, zrem, 1) end
end

-- Every match state of the batch in one MSET (key, value pairs).
if n_matches > 0 then
  chunked('MSET', nil, slice(i, 2 * n_matches), 2)
  i = i + 2 * n_matches
end
if n_zadd > 0 then
  chunked('ZADD', KEYS[5], slice(i, 2 * n_zadd), 2)
  i = i + 2 * n_zadd
end
if n_zrem > 0 then
  chunked('ZREM', KEYS[5], slice(i, n_zrem), 1)
  i = i + n_zrem
end
for _ = 1, n_dead do
  redis.call('XADD', KEYS[4], '*', unpack(ARGV, i, i + 29))
  i = i + 30
end
if n_seasons > 0 then
  chunked('SADD', KEYS[6], slice(i, n_seasons), 1)
  i = i + n_seasons
end
-- The batch's net change per state (at most four), not one call per event.
for _ = 1, n_states do
  redis.call('HINCRBY', KEYS[7], ARGV[i], ARGV[i + 1])
  i = i + 2
end

local t = redis.call('TIME')
local applied_at = t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5], ARGV[3] .. ':applied_at', applied_at)
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[3] .. ':at', ARGV[6])
end
if ARGV[7] == '1' then
  -- A stream or group that does not exist has nobody to tell.
  redis.pcall('XGROUP', 'SETID', KEYS[3], ARGV[8], ARGV[5])
end
return {'OK', applied_at}
