-- A piece event naming links (`postrelay_link` = a token, or `ref`): binds those not bound yet, returns held visits.
-- KEYS[1] = the ref's set of unbound tokens  pr:link:ref:{<ref>} (any key when ARGV[2] is '')
-- ARGV[1] = token named by postrelay_link, or ''
-- ARGV[2] = ref, or ''
-- ARGV[3] = piece source     ARGV[4] = piece id     ARGV[5] = kind or ''     ARGV[6] = country or ''
-- ARGV[7] = the event's campaign or '' (a ref match needs the same campaign when both name one)
-- ARGV[8] = recipient JSON   ARGV[9] = piece metadata JSON (without `postrelay`): stored as strings, not re-encoded
-- ARGV[10] = now (epoch seconds)
-- ARGV[11] = the binding event's id, or 'mint' (bound_by: that event gets the held visits again when re-run)
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
  local raw = redis.call('GET', lk)
  if raw then
    local link = cjson.decode(raw)
    local give = false
    if not link['piece_source'] then
      local campaign = link['campaign']
      if not (by_ref and type(campaign) == 'string' and ARGV[7] ~= '' and campaign ~= ARGV[7]) then
        link['piece_source'], link['piece_id'] = ARGV[3], ARGV[4]
        link['bound_at'], link['bound_by'] = tonumber(ARGV[10]), ARGV[11]
        if type(link['ref']) == 'string' then redis.call('SREM', ARGV[15] .. link['ref'] .. ARGV[16], t) end
        give = true
      end
    elseif link['piece_source'] == ARGV[3] and link['piece_id'] == ARGV[4] then
      give = (link['bound_by'] == 'mint' or link['bound_by'] == ARGV[11])
      if link['bound_by'] == 'mint' then link['bound_by'] = ARGV[11] end
    end
    if give then
      if ARGV[5] ~= '' then link['piece_kind'] = ARGV[5] end
      if ARGV[6] ~= '' then link['piece_country'] = ARGV[6] end
      if ARGV[8] ~= '{}' or not link['recipient'] then link['recipient'] = ARGV[8] end
      if ARGV[9] ~= '{}' or not link['metadata'] then link['metadata'] = ARGV[9] end
      redis.call('SET', lk, cjson.encode(link), 'KEEPTTL')
      local held = redis.call('ZRANGE', lk .. ARGV[14], 0, -1)
      out[#out + 1] = t
      out[#out + 1] = #held
      for _, v in ipairs(held) do out[#out + 1] = v end
    end
  end
end
return out
