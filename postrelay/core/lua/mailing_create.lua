-- Store a new mailing, unless its id (derived from the idempotency key) exists or the recipient is cooling down.
-- KEYS[1] = record hash        pr:ml:{id}
-- KEYS[2] = due zset           pr:ml:due
-- KEYS[3] = index zset         pr:ml:index
-- KEYS[4] = cooldown marker    pr:ml:cool:{trigger}:<recipient> (the record key again when there is none)
-- ARGV[1] = mailing id
-- ARGV[2] = record fields (JSON object of strings)
-- ARGV[3] = now (epoch seconds)
-- ARGV[4] = retention (seconds)
-- ARGV[5] = cooldown (seconds; 0 = none)
-- ARGV[6] = '1' when the mailing is queued (due now), '0' when it is stored already finished (failed)
-- returns {'existing', fingerprint, status} | {'cooldown', the other mailing's id} | {'created'}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local r = redis.call('HMGET', KEYS[1], 'fingerprint', 'status')
  return {'existing', r[1] or '', r[2] or ''}
end
if tonumber(ARGV[5]) > 0 then
  local other = redis.call('GET', KEYS[4])
  if other then return {'cooldown', other} end
end
for k, v in pairs(cjson.decode(ARGV[2])) do redis.call('HSET', KEYS[1], k, v) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[6] == '1' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[5]) end
return {'created'}
