-- Tracking-link visits on the ingest path: each is queued (as `ingest_enqueue.lua` queues events) only when its
-- link exists and is active, and every link's record comes back, so one round trip both checks the link and
-- records the visit.
-- KEYS[1] = ingest stream                 pr:{in}:stream
-- KEYS[2..n] = one collapse marker per visit  pr:{in}:seen:lnk:<token>:<kind>:<visitor>
-- ARGV[1] = now (epoch seconds: a link whose `expires` is not later is gone)
-- ARGV[2] = allowed target hosts, JSON list (`example.com`, `*.example.com`); a target elsewhere is gone
-- ARGV[3..] = per visit, in KEYS order: link record key (pr:link:{<token>}), marker TTL (seconds), event JSON
-- returns a flat list, per visit: flag ('1' queued, '0' collapsed, 'x' no such link, 'g' expired, revoked or
-- not allowed) and the link's record JSON (false when there is none)
--! include _enqueue_one.lua
local now = tonumber(ARGV[1])
local hosts = cjson.decode(ARGV[2])

local function allowed(target)
  local host = string.lower(string.match(target, '^%a+://([^/:?#]+)') or '')
  for _, entry in ipairs(hosts) do
    if string.sub(entry, 1, 2) == '*.' then
      local suffix = string.sub(entry, 2)
      if #host > #suffix and string.sub(host, -#suffix) == suffix then return true end
    elseif host == entry then
      return true
    end
  end
  return false
end

local out = {}
for i = 2, #KEYS do
  local at = 3 + 3 * (i - 2)
  local raw = redis.call('GET', ARGV[at])
  local flag = 'x'
  if raw then
    local link = cjson.decode(raw)
    local expires = tonumber(link['expires'])
    if link['revoked'] or (expires and expires <= now) or type(link['target']) ~= 'string'
        or not allowed(link['target']) then
      flag = 'g'
    else
      flag = enqueue_one(KEYS[1], KEYS[i], ARGV[at + 1], ARGV[at + 2])
    end
  end
  out[#out + 1] = flag
  out[#out + 1] = raw
end
return out
