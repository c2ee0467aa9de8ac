-- A tracking-link visit seen by the dispatcher: the link's record; a visit of a link not bound yet is also held
-- for its binding.
-- KEYS[1] = the link's record (JSON)        pr:link:{<token>}
-- KEYS[2] = the link's held visits (zset)    pr:link:{<token>}:held
-- ARGV[1] = the visit's occurred_at (epoch seconds: the score)
-- ARGV[2] = the visit's canonical event JSON
-- returns the link's record JSON; nil when there is no such link
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local link = cjson.decode(raw)
if not link['piece_id'] then
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return raw
