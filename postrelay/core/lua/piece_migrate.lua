-- Move one mailpiece from the first layout to the compact one (`postrelay migrate`), unless it changed since read.
-- KEYS[1] = piece hash            pr:piece:{source:id}
-- KEYS[2] = first layout timeline pr:piece:{source:id}:timeline
-- KEYS[3] = first layout events   pr:piece:{source:id}:events
-- KEYS[4] = first layout types    pr:piece:{source:id}:types
-- ARGV[1] = number of events read (HLEN of KEYS[3] then)
-- ARGV[2] = the piece hash's PTTL then (ms; <= 0: none)
-- ARGV[3] = n, the number of first-layout fields to drop from the piece hash
-- ARGV[4] … ARGV[3 + n] = those fields, then (field, value) pairs of the compact layout to set
-- returns 1 moved, 0 nothing to move (no KEYS[3]), -1 changed since read (nothing done)
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
if redis.call('HLEN', KEYS[3]) ~= tonumber(ARGV[1]) then return -1 end
local n = tonumber(ARGV[3])
for i = 4, 3 + n do redis.call('HDEL', KEYS[1], ARGV[i]) end
for i = 4 + n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
