-- Generic cell rate algorithm: take one slot of a destination's rate limit if one is free now.
-- KEYS[1] = theoretical arrival time   pr:rl:{dest}
-- ARGV[1] = now (ms)
-- ARGV[2] = interval between requests (ms)
-- ARGV[3] = burst allowance (ms)
-- returns '0' when the slot was taken, else the ms (as a string) until one is free (nothing taken)
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local allow_at = tat - burst
if now < allow_at then return tostring(allow_at - now) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return '0'
