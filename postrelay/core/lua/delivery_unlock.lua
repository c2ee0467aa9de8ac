-- Release a delivery's execution lock if it is still ours.
-- KEYS[1] = lock   pr:lock:{K}
-- ARGV[1] = our lock token
-- returns 1 when deleted, 0 when someone else holds it (or it expired)
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
