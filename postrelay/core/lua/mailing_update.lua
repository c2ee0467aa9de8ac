-- Change a queued mailing: its outcome (it leaves the due set) or a retry (due again at ARGV[3]). A mailing that
-- is no longer queued never changes (a stale worker cannot overwrite an outcome); it only leaves the due set.
-- KEYS[1] = record hash        pr:ml:{id}
-- KEYS[2] = due zset           pr:ml:due
-- ARGV[1] = mailing id
-- ARGV[2] = fields to set (JSON object of strings)
-- ARGV[3] = due time ('' = finished)
-- returns 1 when applied, 0 when the mailing was not queued
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
for k, v in pairs(cjson.decode(ARGV[2])) do redis.call('HSET', KEYS[1], k, v) end
if ARGV[3] == '' then redis.call('ZREM', KEYS[2], ARGV[1]) else redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
return 1
