-- Renew a delivery's execution lock if it is still ours (PEXPIRE is allowed while Redis is full).
-- KEYS[1] = lock   pr:lock:{K}
-- ARGV[1] = our lock token
-- ARGV[2] = new ttl (ms)
-- returns 1 when renewed, 0 when the lock is not ours any more
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
