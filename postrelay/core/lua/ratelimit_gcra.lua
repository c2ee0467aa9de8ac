-- Generic cell rate algorithm: take one slot of a destination's rate limit if one is free now (or only look).
-- The interval is the slower of the configured one and the one the destination's rate-limit headers taught;
-- a hold (the headers said the budget is almost spent, or a 429's Retry-After) blocks every slot until it ends.
-- KEYS[1] = theoretical arrival time   pr:rl:{dest}
-- KEYS[2] = learned hash               pr:rl:{dest}:hdr (fields: interval (ms), hold_until (epoch ms))
-- ARGV[1] = now (ms)
-- ARGV[2] = configured interval between requests (ms; 0 when only the headers limit the destination)
-- ARGV[3] = burst allowance (ms)
-- ARGV[4] = '1' to take the slot, '0' to only report the wait
-- returns '0' when a slot is free now (taken when ARGV[4] is '1'), else the ms (as a string) until one is
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local learned = redis.call('HMGET', KEYS[2], 'interval', 'hold_until')
local hold = tonumber(learned[2] or '0')
if hold > now then return tostring(hold - now) end
local taught = tonumber(learned[1] or '0')
if taught > interval then interval = taught end
if interval <= 0 then return '0' end
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local allow_at = tat - burst
if now < allow_at then return tostring(allow_at - now) end
if ARGV[4] == '1' then
  local new_tat = tat + interval
  redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
end
return '0'
