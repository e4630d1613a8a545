-- Shared by the batch scripts (commit.lua, score.lua), prepended to each:
-- both take KEYS[1] = the generation marker's copy in their slot, ARGV[1] =
-- the generation, ARGV[2] = whether it must be the active one ('1').

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

-- The active generation when it is not ARGV[1], else nil. The marker's copy
-- in this slot: a switch writes every copy before the marker itself. A copy
-- never written yet (a pipeline that has not switched since it started) is
-- the generation the caller just read from the marker.
local function generation_moved()
  if ARGV[2] ~= '1' then return nil end
  local gen = redis.call('GET', KEYS[1])
  if not gen then
    redis.call('SET', KEYS[1], ARGV[1])
    return nil
  end
  if gen ~= ARGV[1] then return gen end
  return nil
end

