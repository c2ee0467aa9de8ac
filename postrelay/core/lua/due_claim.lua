-- Claim due work from a due-time sorted set (deliveries and follow-ups): every member whose score is at or
-- before `now` is pushed `lease` seconds into the future, so no other worker claims it meanwhile; a claimer
-- that dies lets it come due again when the lease runs out.
-- KEYS[1] = due zset   pr:dlv:inflight or pr:fu:due
-- ARGV[1] = now (epoch seconds, fractions allowed)
-- ARGV[2] = lease (seconds)
-- ARGV[3] = at most this many members
-- returns a flat list {member, its due score, member, its due score, ...}, earliest first
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local until_ = tonumber(ARGV[1]) + tonumber(ARGV[2])
for i = 1, #ids, 2 do
  redis.call('ZADD', KEYS[1], until_, ids[i])
end
return ids
