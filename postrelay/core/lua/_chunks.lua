-- Fragment (included with `--! include _chunks.lua`): the compact piece hash P's values (`postrelay.core.stores.
-- piece_codec`), split into chunks of at most {{CHUNK}} bytes (`f`, `f.1`, …), and its deduplicated blobs `_<n>`.
-- const CHUNK = the chunk size in bytes (`piece_codec.CHUNK`)
-- get(P, f): the whole value of field f (nil when absent); put(P, f, v): store v in chunks;
-- blob(P, v): the ref (n as a string) of blob v, stored as the next `_<n>` when the piece has no such blob yet.
local function get(P, f)
  local v = redis.call('HGET', P, f)
  if not v then return nil end
  local parts, j = {v}, 1
  while true do
    local c = redis.call('HGET', P, f .. '.' .. j)
    if not c then break end
    parts[#parts + 1] = c
    j = j + 1
  end
  return table.concat(parts)
end
local function put(P, f, v)
  redis.call('HSET', P, f, string.sub(v, 1, {{CHUNK}}))
  local j = 1
  while j * {{CHUNK}} < #v do
    redis.call('HSET', P, f .. '.' .. j, string.sub(v, j * {{CHUNK}} + 1, (j + 1) * {{CHUNK}}))
    j = j + 1
  end
end
local function blob(P, v)
  local i = 0
  while true do
    local have = get(P, '_' .. i)
    if not have then put(P, '_' .. i, v) return tostring(i) end
    if have == v then return tostring(i) end
    i = i + 1
  end
end
