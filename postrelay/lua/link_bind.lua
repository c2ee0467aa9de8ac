-- A piece event naming links (`postrelay_link` = a token, or `ref`): binds those not bound yet, returns held visits.
-- KEYS[1] = the ref's set of unbound tokens  pr:link:ref:{<ref>} (any key when ARGV[2] is '')
-- ARGV[1] = token named by postrelay_link, or ''
-- ARGV[2] = ref, or ''
-- ARGV[3] = piece source     ARGV[4] = piece id     ARGV[5] = kind or ''     ARGV[6] = country or ''
-- ARGV[7] = the event's campaign or '' (a ref match needs the same campaign when both name one)
-- ARGV[8] = recipient JSON   ARGV[9] = piece metadata JSON (without `postrelay`)
-- ARGV[10] = now (epoch seconds)   ARGV[11] = the binding event's id (bound_by: it gets the held visits again)
-- ARGV[12], ARGV[13] = link key prefix and suffix (pr:link:{ and })   ARGV[14] = held key suffix (:held)
-- ARGV[15], ARGV[16] = ref key prefix and suffix (pr:link:ref:{ and })
-- returns a flat list: for each link this event binds: token, n, then its n held visit JSONs (oldest first)
local candidates = {}
if ARGV[1] ~= '' then candidates[#candidates + 1] = {ARGV[1], false} end
if ARGV[2] ~= '' then
  for _, t in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if t ~= ARGV[1] then candidates[#candidates + 1] = {t, true} end
  end
end
local out = {}
for _, c in ipairs(candidates) do
  local t, by_ref = c[1], c[2]
  local lk = ARGV[12] .. t .. ARGV[13]
  local f = redis.call('HMGET', lk, 'target', 'piece_source', 'piece_id', 'bound_by', 'campaign', 'ref')
  local give = false
  if f[1] and not f[2] then
    if not (by_ref and f[5] and ARGV[7] ~= '' and f[5] ~= ARGV[7]) then
      redis.call('HSET', lk, 'piece_source', ARGV[3], 'piece_id', ARGV[4], 'bound_at', ARGV[10], 'bound_by', ARGV[11])
      if f[6] then redis.call('SREM', ARGV[15] .. f[6] .. ARGV[16], t) end
      give = true
    end
  elseif f[1] and f[2] == ARGV[3] and f[3] == ARGV[4] then
    if f[4] == 'mint' then redis.call('HSET', lk, 'bound_by', ARGV[11]) end
    give = (f[4] == 'mint' or f[4] == ARGV[11])
  end
  if give then
    if ARGV[5] ~= '' then redis.call('HSET', lk, 'piece_kind', ARGV[5]) end
    if ARGV[6] ~= '' then redis.call('HSET', lk, 'piece_country', ARGV[6]) end
    redis.call('HSET', lk, 'recipient', ARGV[8], 'metadata', ARGV[9])
    local held = redis.call('ZRANGE', lk .. ARGV[14], 0, -1)
    out[#out + 1] = t
    out[#out + 1] = #held
    for _, v in ipairs(held) do out[#out + 1] = v end
  end
end
return out
