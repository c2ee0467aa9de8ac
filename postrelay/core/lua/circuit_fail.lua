-- Count a transient failure in a destination's circuit breaker; open (or re-open, doubling the cooldown up
-- to the maximum) the circuit at the threshold.
-- KEYS[1] = breaker hash   pr:cb:{dest} (fields: state, failures, cooldown, open_until, last_error, last_failure_at)
-- KEYS[2] = probe marker   pr:cb:{dest}:probe
-- ARGV[1] = now (epoch seconds)
-- ARGV[2] = threshold (consecutive failures)
-- ARGV[3] = cooldown (seconds)
-- ARGV[4] = maximum cooldown (seconds)
-- ARGV[5] = the failure's (redacted, truncated) detail
-- returns 1 when this failure opened or re-opened the circuit, else 0
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local cooldown = tonumber(redis.call('HGET', KEYS[1], 'cooldown') or ARGV[3])
redis.call('HSET', KEYS[1], 'last_error', ARGV[5], 'last_failure_at', ARGV[1])
if state == 'open' then
  cooldown = math.min(tonumber(ARGV[4]), cooldown * 2)
elseif failures >= tonumber(ARGV[2]) then
  cooldown = tonumber(ARGV[3])
else
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'open', 'cooldown', cooldown, 'open_until', tonumber(ARGV[1]) + cooldown)
redis.call('DEL', KEYS[2])
return 1
