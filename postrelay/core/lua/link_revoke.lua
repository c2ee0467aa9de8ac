-- Revoke a tracking link; the first revocation time stays.
-- KEYS[1] = the link's record (JSON)        pr:link:{<token>}
-- ARGV[1] = now (epoch seconds)
-- returns the record JSON after the revocation; nil when there is no such link
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local link = cjson.decode(raw)
if link['revoked'] then return raw end
link['revoked'] = tonumber(ARGV[1])
raw = cjson.encode(link)
redis.call('SET', KEYS[1], raw, 'KEEPTTL')
return raw
