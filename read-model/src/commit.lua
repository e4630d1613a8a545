-- One atomic batch of a shard: check the fence, apply the coalesced read-model
-- changes, record progress, acknowledge. See commit.rs for the
-- argument layout (it builds ARGV; the two must change together).
--
-- KEYS: 1 generation marker, 2 progress hash, 3 shard stream,
--       4 dead-letter stream, 5 deadline set, 6 season set.
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
local function chunked(cmd, key, from, count, width)
  local i = from
  local left = count * width
  while left > 0 do
    local n = math.min(left, CHUNK - (CHUNK % width))
    if key then
      redis.call(cmd, key, unpack(ARGV, i, i + n - 1))
    else
      redis.call(cmd, unpack(ARGV, i, i + n - 1))
    end
    i = i + n
    left = left - n
  end
end

local n_stats, n_matches = tonumber(ARGV[9]), tonumber(ARGV[10])
local n_zadd, n_zrem = tonumber(ARGV[11]), tonumber(ARGV[12])
local n_dead, n_acks, n_seasons = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local FIELDS = {'wins', 'draws', 'losses', 'forfeits'}
local i = 16

for _ = 1, n_stats do
  local key, board, member = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  -- Only counters that change are written: an absent field is 0 to every
  -- reader (the API, verify). matches = wins + draws + losses is not stored.
  local reversal = false
  for f = 1, 4 do
    local d = ARGV[i + 2 + f]
    if d ~= '0' then
      redis.call('HINCRBY', key, FIELDS[f], d)
      if string.byte(d, 1) == 45 then reversal = true end -- '-'
    end
  end
  local gone = false
  if reversal then
    -- A voided result may take the player's last counted match.
    local c = redis.call('HMGET', key, 'wins', 'draws', 'losses')
    gone = (tonumber(c[1]) or 0) + (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0) <= 0
  end
  if gone then
    -- No counted match left: the player is on no board and has no hash.
    redis.call('DEL', key)
    redis.call('ZREM', board, member)
  elseif ARGV[i + 7] ~= '0' then
    redis.call('ZINCRBY', board, ARGV[i + 7], member)
  end
  i = i + 8
end

-- Every match state of the batch in one MSET (key, value pairs).
if n_matches > 0 then
  chunked('MSET', nil, i, n_matches, 2)
  i = i + 2 * n_matches
end

if n_zadd > 0 then
  chunked('ZADD', KEYS[5], i, n_zadd, 2)
  i = i + 2 * n_zadd
end
if n_zrem > 0 then
  chunked('ZREM', KEYS[5], i, n_zrem, 1)
  i = i + n_zrem
end

for _ = 1, n_dead do
  redis.call('XADD', KEYS[4], '*', unpack(ARGV, i, i + 29))
  i = i + 30
end

local t = redis.call('TIME')
local applied_at = t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5], ARGV[3] .. ':applied_at', applied_at)
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[3] .. ':at', ARGV[6])
end

if ARGV[7] == '1' and n_acks > 0 then
  local j = i
  local left = n_acks
  while left > 0 do
    local n = math.min(left, CHUNK)
    redis.call('XACK', KEYS[3], ARGV[8], unpack(ARGV, j, j + n - 1))
    j = j + n
    left = left - n
  end
end
i = i + n_acks

if n_seasons > 0 then
  chunked('SADD', KEYS[6], i, n_seasons, 1)
end

return {'OK', applied_at}
