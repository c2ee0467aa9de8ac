-- A destination accepted delivery K: store everything about the success atomically — the done marker
-- (first: a script that cannot write it, e.g. Redis full, writes nothing), the stats, the breaker closed, the
-- sequence advanced (its next head due at the lease deadline: the caller starts it at once), the record
-- deleted, K's due entry removed, the lock released if still ours.
-- KEYS[1] = done marker      pr:done:{K}
-- KEYS[2] = record hash      pr:dlv:{K}
-- KEYS[3] = lock             pr:lock:{K}
-- KEYS[4] = due zset         pr:dlv:inflight
-- KEYS[5] = breaker hash     pr:cb:{dest}
-- KEYS[6] = probe marker     pr:cb:{dest}:probe
-- KEYS[7] = sequence list    pr:seq:{dest:source:piece} (the record key when unordered)
-- KEYS[8..] = one stats hash per stats op (see ARGV[10..])
-- ARGV[1] = done marker JSON
-- ARGV[2] = done marker retention (seconds)
-- ARGV[3] = delivery key K
-- ARGV[4] = our lock token
-- ARGV[5] = breaker cooldown (seconds) to reset to
-- ARGV[6] = event id
-- ARGV[7] = sequence key ('' when unordered)
-- ARGV[8] = destination
-- ARGV[9] = due score for the sequence's next head (now + lease)
-- ARGV[10] = n, the number of stats ops; then ARGV[11..10+3n] = (command, field, amount) per op, on KEYS[7 + i]
-- returns the sequence's new head event id, or ''
--! include _pop_head.lua
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local n = tonumber(ARGV[10])
for i = 1, n do
  local a = 10 + (i - 1) * 3
  redis.call(ARGV[a + 1], KEYS[7 + i], ARGV[a + 2], ARGV[a + 3])
end
local cb = redis.call('HMGET', KEYS[5], 'state', 'failures', 'cooldown')
if cb[1] and not (cb[1] == 'closed' and cb[2] == '0' and cb[3] == ARGV[5]) then
  redis.call('HSET', KEYS[5], 'state', 'closed', 'failures', 0, 'cooldown', ARGV[5])
end
redis.call('DEL', KEYS[6])
local head = ''
if ARGV[7] ~= '' then
  local h = pop_head(KEYS[7], ARGV[6])
  if h then
    head = h
    redis.call('ZADD', KEYS[4], ARGV[9], ARGV[8] .. '|' .. h)
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[4], ARGV[3])
if redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
return head
