-- Count a mailing against today's caps, once per mailing (a retry or a re-run after a crash reuses its slot).
-- KEYS[1] = record hash            pr:ml:{id}
-- KEYS[2] = day counter            pr:ml:cap:<day>
-- KEYS[3] = trigger day counter    pr:ml:cap:<day>:<trigger> (the day counter again when there is no trigger)
-- ARGV[1] = max per day (0 = no limit)
-- ARGV[2] = the trigger's max per day (0 = no limit)
-- ARGV[3] = day (YYYY-MM-DD, UTC)
-- ARGV[4] = counter ttl (seconds)
-- ARGV[5] = '1' when the mailing has a trigger
-- returns 'ok', or the name of the cap that is full ('max_per_day', 'trigger_max_per_day')
if redis.call('HEXISTS', KEYS[1], 'cap_day') == 1 then return 'ok' end
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > 0 and total >= tonumber(ARGV[1]) then return 'max_per_day' end
if ARGV[5] == '1' then
  local mine = tonumber(redis.call('GET', KEYS[3]) or '0')
  if tonumber(ARGV[2]) > 0 and mine >= tonumber(ARGV[2]) then return 'trigger_max_per_day' end
  redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[1], 'cap_day', ARGV[3])
return 'ok'
