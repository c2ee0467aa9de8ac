-- Apply one event to a mailpiece in the first layout (`postrelay.core.timeline_legacy`; tests and the memory
-- bench): idempotent, the stage moves only forward by rank and never past a terminal one.
-- KEYS[1] = piece hash     pr:piece:{source:id} (stage, stage_rank, stage_terminal, stage_at, first_seen, attributes)
-- KEYS[2] = timeline zset  pr:piece:{source:id}:timeline (event ids by occurrence)
-- KEYS[3] = events hash    pr:piece:{source:id}:events (event id -> canonical JSON with the stage reached)
-- KEYS[4] = types set      pr:piece:{source:id}:types
-- ARGV[1] = event id
-- ARGV[2] = occurred at (epoch seconds)
-- ARGV[3] = event type
-- ARGV[4] = the type's lifecycle rank (0: none)
-- ARGV[5] = '1' when the type is terminal
-- ARGV[6] = the event's JSON up to its stage value; ARGV[7] = the JSON after it
-- ARGV[8] = mailpiece kind ('' none); ARGV[9] = country ('' none)
-- ARGV[10] = occurred at (ISO 8601)
-- ARGV[11] = retention in seconds (0: keep)
-- ARGV[12] … = (hash field, value) pairs of the event's other piece attributes
-- const FIELDS = the piece hash fields of the piece attributes (`postrelay.core.events.PIECE_ATTRS` order)
-- returns {applied 1/0, the stage ('' none), the attribute values in FIELDS order (false: none)}
local fields = {{FIELDS}}
local existing = redis.call('HGET', KEYS[3], ARGV[1])
if existing then
  return {0, redis.call('HGET', KEYS[1], 'stage') or '', redis.call('HMGET', KEYS[1], unpack(fields))}
end
local stage = redis.call('HGET', KEYS[1], 'stage')
local stage_rank = tonumber(redis.call('HGET', KEYS[1], 'stage_rank') or '0')
local stage_terminal = redis.call('HGET', KEYS[1], 'stage_terminal') == '1'
local rank = tonumber(ARGV[4])
if (not stage_terminal) and rank > stage_rank then
  stage = ARGV[3]
  redis.call('HSET', KEYS[1], 'stage', stage, 'stage_rank', rank, 'stage_terminal', ARGV[5], 'stage_at', ARGV[10])
end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'kind', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'country', ARGV[9]) end
for i = 12, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSETNX', KEYS[1], 'first_seen', ARGV[10])
local stage_json = 'null'
if stage then stage_json = '"' .. stage .. '"' end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[6] .. stage_json .. ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[3])
local ttl = tonumber(ARGV[11])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
end
return {1, stage or '', redis.call('HMGET', KEYS[1], unpack(fields))}
