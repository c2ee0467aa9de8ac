-- Fragment (included with `--! include _index_event.lua`): the console's indexes (`postrelay.core.stores.indexes`).
-- ix_event(st, a, o) applies one event to the index state hash `st` (the piece hash, or `pr:ix:state:{…}`) and
-- to the index keys (`IX` prefix) on this Redis; a[o..o+10] = member, source, type, rank, terminal (0/1),
-- occurred epoch, occurred day (YYYY-MM-DD), campaign, email (lower case), name, name words (space-separated).
-- const IX_PREFIX = the index keys' prefix with its colon (`pr:ix:`)
-- const IX_LIFE = the lifecycle stages in rank order, a list of {type, rank} (not the terminal ones)
-- const IX_RANKS = type -> lifecycle rank; IX_TERMINAL = type -> true for the terminal types
-- const IX_RETURN_IMPLIES = the rank `returned_to_sender` implies (mailed)
-- const IX_CODE = type -> its one-letter code (`piece_codec.CODE`); IX_TYPE = code -> type
local IX = {{IX_PREFIX}}
local IX_LIFE = {{IX_LIFE}}
local IX_RANKS = {{IX_RANKS}}
local IX_TERMINAL = {{IX_TERMINAL}}
local IX_RETURN_IMPLIES = {{IX_RETURN_IMPLIES}}
local IX_CODE = {{IX_CODE}}
local IX_TYPE = {{IX_TYPE}}

-- the flag set `ix_x`: type codes (one letter each) so the value stays short in the piece hash (listpack);
-- a set written before as `|name|name|` is read too
local function ix_flags(v)
  if string.sub(v, 1, 1) ~= '|' then return v end
  local out = ''
  for t in string.gmatch(v, '[^|]+') do out = out .. (IX_CODE[t] or '') end
  return out
end

local function ix_bucket(m, p)
  if m == nil or p == nil then return nil end
  local d = (p - m) / 86400
  if d < 0 then d = 0 end
  return string.format('%.1f', math.floor(d * 10 + 1e-9) / 10)
end

local function ix_event(st, a, o)
  local member, src, etype, day = a[o], a[o + 1], a[o + 2], a[o + 6]
  local rank, at = tonumber(a[o + 3]), tonumber(a[o + 5])
  local terminal = a[o + 4] == '1'
  local f = redis.call('HMGET', st, 'campaign', 'email', 'name', 'ix_s', 'ix_r', 'ix_f', 'ix_x', 'ix_m', 'ix_p', 'ix_t')
  local camp, email, name, stage = f[1] or '', f[2] or '', f[3] or '', f[4] or ''
  local reached, first = tonumber(f[5] or '0'), tonumber(f[6] or '')
  local flags, mailed, pfd, words = ix_flags(f[7] or ''), tonumber(f[8] or ''), tonumber(f[9] or ''), f[10] or ''
  if first == nil or at < first then first = at end
  local new_stage = stage
  if rank > 0 and not IX_TERMINAL[stage] and rank > (IX_RANKS[stage] or 0) then new_stage = etype end
  local new_reached = reached
  if rank > 0 and not terminal and rank > new_reached then new_reached = rank end
  if etype == 'returned_to_sender' and new_reached < IX_RETURN_IMPLIES then new_reached = IX_RETURN_IMPLIES end
  local new_flag = false
  if (terminal or rank == 0) and not string.find(flags, IX_CODE[etype], 1, true) then
    flags = flags .. IX_CODE[etype]
    new_flag = true
  end
  local old_bucket = ix_bucket(mailed, pfd)
  if etype == 'mailed' and (mailed == nil or at < mailed) then mailed = at end
  if etype == 'processed_for_delivery' and (pfd == nil or at < pfd) then pfd = at end
  local new_bucket = ix_bucket(mailed, pfd)
  local joined = false
  if camp == '' and a[o + 7] ~= '' then camp = a[o + 7]; joined = true end
  if email == '' and a[o + 8] ~= '' then email = a[o + 8] end
  if name == '' and a[o + 9] ~= '' then name = a[o + 9]; words = a[o + 10] end
  if camp ~= '' then
    local fk, dk, tk = IX .. 'funnel:' .. camp, IX .. 'days:' .. camp, IX .. 'transit:' .. camp
    local low = reached
    if joined then
      redis.call('HINCRBY', fk, 'pieces', 1)
      low = 0
      old_bucket = nil
      for c in string.gmatch(flags, '.') do
        local t = IX_TYPE[c]
        redis.call('HINCRBY', fk, t, 1)
        redis.call('HINCRBY', dk, t .. '|' .. day, 1)
      end
    elseif new_flag then
      redis.call('HINCRBY', fk, etype, 1)
      redis.call('HINCRBY', dk, etype .. '|' .. day, 1)
    end
    for _, s in ipairs(IX_LIFE) do
      if s[2] > low and s[2] <= new_reached then
        redis.call('HINCRBY', fk, s[1], 1)
        redis.call('HINCRBY', dk, s[1] .. '|' .. day, 1)
      end
    end
    if old_bucket ~= new_bucket then
      if old_bucket and redis.call('HINCRBY', tk, old_bucket, -1) <= 0 then redis.call('HDEL', tk, old_bucket) end
      if new_bucket then redis.call('HINCRBY', tk, new_bucket, 1) end
    end
    redis.call('ZADD', IX .. 'campaigns', 'GT', at, camp)
    redis.call('ZADD', IX .. 'camp:' .. camp, first, member)
  end
  if new_stage ~= stage and stage ~= '' then redis.call('ZREM', IX .. 'stage:' .. stage, member) end
  if new_stage ~= '' then redis.call('ZADD', IX .. 'stage:' .. new_stage, first, member) end
  redis.call('ZADD', IX .. 'all', first, member)
  redis.call('ZADD', IX .. 'src:' .. src, first, member)
  if email ~= '' then redis.call('ZADD', IX .. 'email:' .. email, first, member) end
  for w in string.gmatch(words, '[^ ]+') do redis.call('ZADD', IX .. 'name:' .. w, first, member) end
  local out = {'ix_s', new_stage, 'ix_r', new_reached, 'ix_f', first, 'ix_x', flags}
  if camp ~= '' then table.insert(out, 'campaign'); table.insert(out, camp) end
  if email ~= '' then table.insert(out, 'email'); table.insert(out, email) end
  if name ~= '' then table.insert(out, 'name'); table.insert(out, name); table.insert(out, 'ix_t'); table.insert(out, words) end
  if mailed then table.insert(out, 'ix_m'); table.insert(out, mailed) end
  if pfd then table.insert(out, 'ix_p'); table.insert(out, pfd) end
  redis.call('HSET', st, unpack(out))
end
