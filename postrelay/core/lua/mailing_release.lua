-- Give a mailing's cap slot back (the provider refused the piece: nothing is mailed).
-- KEYS[1] = record hash            pr:ml:{id}
-- KEYS[2] = day counter            pr:ml:cap:<day>
-- KEYS[3] = trigger day counter    pr:ml:cap:<day>:<trigger> (the day counter again when there is no trigger)
-- ARGV[1] = '1' when the mailing has a trigger
-- returns 1 when a slot was given back, 0 when the mailing held none
if redis.call('HEXISTS', KEYS[1], 'cap_day') == 0 then return 0 end
redis.call('HDEL', KEYS[1], 'cap_day')
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
if ARGV[1] == '1' and tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then redis.call('DECR', KEYS[3]) end
return 1
