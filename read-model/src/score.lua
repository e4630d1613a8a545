-- One shard's player deltas into one player partition, all in the
-- partition's slot: check the partition's fence for the shard, add the
-- deltas to its counters and boards, record its seasons, move the fence.
-- score.rs builds ARGV; the two must change together. prelude.lua comes
-- first.
--
-- KEYS: 1 the generation marker's copy in this slot, 2 fences hash, 3 seasons set, then per scope
--       its board and its counters hash.
-- ARGV: 1 generation, 2 require active ('1'), 3 shard, 4 expected fence
--       ('' = none yet), 5 new fence, 6 scopes, 7 seasons, 8 the
--       configured partition count; then the seasons;
--       then per scope: members n, fields nf, n members, n score deltas,
--       nf fields, nf counter deltas.
local moved = generation_moved()
if moved then
  return {'GENERATION', moved}
end
-- The generation's partition count, recorded in every partition (field
-- `n`) by its first writer: a writer configured otherwise would put players
-- where readers do not look.
local n = redis.call('HGET', KEYS[2], 'n')
if not n then
  redis.call('HSET', KEYS[2], 'n', ARGV[8])
elseif n ~= ARGV[8] then
  return {'LAYOUT', n}
end
local cur = redis.call('HGET', KEYS[2], ARGV[3])
if (cur or '') ~= ARGV[4] then
  return {'FENCE', cur or ''}
end

local function read_all(cmd, key, from, n)
  local out = {}
  for c = 0, n - 1, CHUNK do
    local part = redis.call(cmd, key, unpack(ARGV, from + c, from + math.min(c + CHUNK, n) - 1))
    for k = 1, #part do out[c + k] = part[k] end
  end
  return out
end

local n_scopes, n_seasons = tonumber(ARGV[6]), tonumber(ARGV[7])
local i = 9
if n_seasons > 0 then
  local s = {}
  for k = 0, n_seasons - 1 do s[k + 1] = ARGV[i + k] end
  chunked('SADD', KEYS[3], s, 1)
  i = i + n_seasons
end

-- Board score = -points * SCALE + matches (PlayerStats::board_score).
local SCALE = 67108864
-- Per scope: every member's score is read once (ZMSCORE) and every changed
-- counter once (HMGET), moved by the deltas and written back with one ZADD
-- and one HSET. A counter that falls to 0 is deleted (absent = 0); a member
-- whose matches (score mod SCALE) fall to 0 leaves the board.
for scope = 0, n_scopes - 1 do
  local board, counters = KEYS[4 + 2 * scope], KEYS[5 + 2 * scope]
  local n, nf = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local members, dscores = i + 2, i + 2 + n
  local fields, fdeltas = i + 2 + 2 * n, i + 2 + 2 * n + nf
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

redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
return {'OK', ''}
