-- Prepare one attempt of delivery K: decide whether it may run now and, if it may, lock it (one round trip).
-- KEYS[1] = done marker        pr:done:{K}
-- KEYS[2] = record hash        pr:dlv:{K}
-- KEYS[3] = memo hash          pr:memo:{K}
-- KEYS[4] = lock               pr:lock:{K}
-- KEYS[5] = due zset           pr:dlv:inflight
-- KEYS[6] = sequence list      pr:seq:{dest:source:piece} (the record key when the caller knows no sequence)
-- KEYS[7] = paused flag        pr:dest:{dest}:paused
-- KEYS[8] = breaker hash       pr:cb:{dest}
-- KEYS[9] = dead-letter hash   pr:dlq
-- KEYS[10] = rate-limit time   pr:rl:{dest} (see ratelimit_gcra.lua)
-- KEYS[11] = rate-limit lore   pr:rl:{dest}:hdr
-- ARGV[1] = event id
-- ARGV[2] = the sequence key the caller knows ('' when unordered or not known)
-- ARGV[3] = lock token
-- ARGV[4] = lock ttl (ms)
-- ARGV[5] = lease deadline (now + lease): K's due score while it runs or waits for its turn
-- ARGV[6] = delivery key K
-- ARGV[7] = '1' when the fast path may lock (an adapter exists, no rate limit), '2' when it may lock once a
--           rate-limit slot is free now (only looked at: each of the adapter's calls takes its own), else '0'
-- ARGV[8] = destination
-- ARGV[9] = now (ms)
-- ARGV[10] = the configured interval between requests (ms; 0 when only the headers limit the destination)
-- ARGV[11] = burst allowance (ms)
-- returns {'done', seq} | {'dead', seq} (dead-lettered: finish it) | {'unknown'} (no record)
--   | {'seq', seq} (the record names another sequence: call again with it)
--   | {'waiting'} (not its piece's turn: looked at again at the lease deadline; the head is made due too)
--   | {'slow', record} (no adapter, paused, breaker not closed, no rate-limit slot now: the caller checks each)
--   | {'locked'} (another attempt runs) | {'run', record, memo} (locked, due score = lease deadline)
--! include _gcra.lua
if redis.call('EXISTS', KEYS[1]) == 1 then return {'done', redis.call('HGET', KEYS[2], 'seq') or ARGV[2]} end
local rec = redis.call('HGETALL', KEYS[2])
if #rec == 0 then return {'unknown'} end
local rseq = redis.call('HGET', KEYS[2], 'seq')
if rseq and rseq ~= ARGV[2] then return {'seq', rseq} end
if redis.call('HEXISTS', KEYS[9], ARGV[6]) == 1 then return {'dead', ARGV[2]} end
if ARGV[2] ~= '' then
  local head = redis.call('LINDEX', KEYS[6], 0)
  if head and head ~= ARGV[1] then
    redis.call('ZADD', KEYS[5], ARGV[5], ARGV[6])
    redis.call('ZADD', KEYS[5], 'NX', ARGV[5], ARGV[8] .. '|' .. head)
    return {'waiting'}
  end
end
if ARGV[7] == '0' or redis.call('EXISTS', KEYS[7]) == 1 then return {'slow', rec} end
local state = redis.call('HGET', KEYS[8], 'state')
if state and state ~= 'closed' then return {'slow', rec} end
if ARGV[7] == '2' and gcra(KEYS[10], KEYS[11], tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]),
                           false) ~= '0' then
  return {'slow', rec}
end
if not redis.call('SET', KEYS[4], ARGV[3], 'NX', 'PX', ARGV[4]) then return {'locked'} end
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[6])
return {'run', rec, redis.call('HGETALL', KEYS[3])}
