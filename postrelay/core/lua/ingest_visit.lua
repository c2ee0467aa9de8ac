-- Tracking-link visits on the ingest path: each is queued (as `ingest_enqueue.lua` queues events) only when its
-- link exists and is active, and every link's record comes back, so one round trip both checks the link and
-- records the visit. Visits travel as one string and the answer is one string (a batch of hundreds of visits
-- is then a handful of RESP elements to pack and parse, not four per visit on the way in and two on the way out).
-- KEYS[1] = ingest stream                 pr:{in}:stream
-- ARGV[1] = now (epoch seconds: a link whose `expires` is not later is gone)
-- ARGV[2] = allowed target hosts, JSON list (`example.com`, `*.example.com`); a target elsewhere is gone
-- ARGV[3] = the visits, one line each ("\n" between lines), four fields separated by "\t": link record key
--           (pr:link:{<token>}), collapse marker key (pr:{in}:seen:lnk:<token>:<kind>:<visitor>), marker TTL
--           (seconds), event JSON (JSON text never holds a raw tab or newline)
-- returns one string, one line per visit in order ("\n" between lines): the flag ('1' queued, '0' collapsed,
-- 'x' no such link, 'g' expired, revoked or not allowed), "\t", the link's record JSON ('' when there is none)
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
for link_key, marker, ttl, json in string.gmatch(ARGV[3], '([^\t\n]*)\t([^\t\n]*)\t([^\t\n]*)\t([^\n]*)') do
  local raw = redis.call('GET', link_key)
  local flag = 'x'
  if raw then
    local link = cjson.decode(raw)
    local expires = tonumber(link['expires'])
    if link['revoked'] or (expires and expires <= now) or type(link['target']) ~= 'string'
        or not allowed(link['target']) then
      flag = 'g'
    else
      flag = enqueue_one(KEYS[1], marker, ttl, json)
    end
  end
  out[#out + 1] = flag .. '\t' .. (raw or '')
end
return table.concat(out, '\n')
