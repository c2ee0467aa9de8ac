-- A tracking-link visit seen by the dispatcher: a bound link's record, else the visit is held for a binding.
-- KEYS[1] = the link's hash                 pr:link:{<token>}
-- KEYS[2] = the link's held visits (zset)    pr:link:{<token>}:held
-- ARGV[1] = the visit's occurred_at (epoch seconds: the score)
-- ARGV[2] = the visit's canonical event JSON
-- returns the link's hash as a flat list when it is bound to a piece; else {} (held, or no such link)
if redis.call('HEXISTS', KEYS[1], 'piece_id') == 1 then
  return redis.call('HGETALL', KEYS[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return {} end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return {}
