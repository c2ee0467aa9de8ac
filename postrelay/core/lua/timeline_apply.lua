-- Apply one event to a mailpiece's compact hash (`postrelay.core.timeline`): idempotent, the stage moves only
-- forward by lifecycle rank and never past a terminal one; with ARGV[11] = '1' the console's indexes too.
-- KEYS[1] = piece hash             pr:piece:{source:id}
-- KEYS[2] = first layout timeline  pr:piece:{source:id}:timeline (not touched)
-- KEYS[3] = first layout events    pr:piece:{source:id}:events (exists: the piece is still in the first layout)
-- KEYS[4] = first layout types     pr:piece:{source:id}:types (not touched)
-- ARGV[1] = the event's record field (12 hex; present: the event is recorded already)
-- ARGV[2] = the event type's code
-- ARGV[3] = the type's lifecycle rank (0: none)
-- ARGV[4] = the stage's time code (occurred at)
-- ARGV[5] = '1' when the event is stored whole
-- ARGV[6] = the event's piece part (or the whole event's JSON)
-- ARGV[7] = its metadata.postrelay JSON ('' none)
-- ARGV[8] = the record's head; ARGV[9] = the record's tail
-- ARGV[10] = retention in seconds (0: keep)
-- ARGV[11] = '1' to index here, then ARGV[12] … ARGV[22] = the index's 11 arguments (`index_apply.lua` ARGV[1]
--            … ARGV[11]; its keys are on this same Redis, its state fields live in the piece hash)
-- const CODE_RANK = type code -> lifecycle rank; CODE_TERMINAL = type code -> true for the terminal types
-- returns {-1} for a piece still in the first layout (nothing done), else {applied 1/0, the stage code ('-'
-- none), the piece parts most recently used first}
--! include _index_event.lua
--! include _chunks.lua
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1} end
local P = KEYS[1]
local RANK = {{CODE_RANK}}
local TERMINAL = {{CODE_TERMINAL}}
local function answer(applied)
  local out = {applied, string.sub(redis.call('HGET', P, 's') or '-', 1, 1)}
  for ref in string.gmatch(redis.call('HGET', P, 'u') or '', '[^,]+') do out[#out + 1] = get(P, '_' .. ref) end
  return out
end
if redis.call('HEXISTS', P, ARGV[1]) == 1 then return answer(0) end
local s = redis.call('HGET', P, 's')
local stage = '-'
if s then stage = string.sub(s, 1, 1) end
local rank = tonumber(ARGV[3])
if (not TERMINAL[stage]) and rank > (RANK[stage] or 0) then
  stage = ARGV[2]
  redis.call('HSET', P, 's', stage .. ARGV[4])
end
local types = redis.call('HGET', P, 't') or ''
if not string.find(types, ARGV[2], 1, true) then redis.call('HSET', P, 't', types .. ARGV[2]) end
local ref = blob(P, ARGV[6])
if ARGV[5] == '1' then
  put(P, ARGV[1], stage .. '!' .. ref)
else
  local pr = ''
  if ARGV[7] ~= '' then pr = blob(P, ARGV[7]) end
  put(P, ARGV[1], stage .. ARGV[8] .. ref .. ',' .. pr .. ARGV[9])
end
local used = ref
for r in string.gmatch(redis.call('HGET', P, 'u') or '', '[^,]+') do
  if r ~= ref then used = used .. ',' .. r end
end
redis.call('HSET', P, 'u', used)
if ARGV[11] == '1' then ix_event(P, ARGV, 12) end
local ttl = tonumber(ARGV[10])
if ttl > 0 then redis.call('EXPIRE', P, ttl) end
return answer(1)
