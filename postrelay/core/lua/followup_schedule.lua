-- Schedule a rule's follow-up for one piece, unless it fired, an `unless` type was seen, or an exact
-- schedule already exists (an exact due time replaces an estimated one, never the other way round).
-- KEYS[1] = record hash          pr:fu:{id}
-- KEYS[2] = due zset             pr:fu:due
-- KEYS[3] = piece's pending set  pr:fu:piece:{source:piece}
-- KEYS[4] = fired marker         pr:fu:fired:{id}
-- KEYS[5] = piece's types set    pr:piece:{source:piece}:types (first layout; on the queue Redis; see ARGV[6])
-- KEYS[6] = piece hash           pr:piece:{source:piece} (its `t` field: type codes; on the queue Redis)
-- ARGV[1] = follow-up id
-- ARGV[2] = due time (epoch seconds)
-- ARGV[3] = estimated flag ('1'/'0')
-- ARGV[4] = `unless` types (JSON list)
-- ARGV[5] = record JSON
-- ARGV[6] = types already seen (JSON list; read from the mailpiece store when it is another Redis)
-- ARGV[7] = the `unless` types' codes (`postrelay.stores.piece_codec.CODE`), in ARGV[4]'s order
-- returns 1 when scheduled, 0 when not
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local unless = cjson.decode(ARGV[4])
local seen = {}
for _, t in ipairs(cjson.decode(ARGV[6])) do seen[t] = true end
local codes = redis.call('HGET', KEYS[6], 't') or ''
for i, t in ipairs(unless) do
  if seen[t] or redis.call('SISMEMBER', KEYS[5], t) == 1 then return 0 end
  if string.find(codes, string.sub(ARGV[7], i, i), 1, true) then return 0 end
end
local existing = redis.call('HGET', KEYS[1], 'estimated')
if existing and not (existing == '1' and ARGV[3] == '0') then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[5], 'estimated', ARGV[3], 'due', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
