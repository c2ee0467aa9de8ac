-- Fragment (included with `--! include _enqueue_one.lua`): the ingest step for one event. If `marker` is absent,
-- append `json` to `stream` and then set the marker for `ttl` seconds (XADD before SET: a failing XADD leaves no
-- marker without its event); returns '1' (queued) or '0' (a duplicate within the marker's lifetime).
local function enqueue_one(stream, marker, ttl, json)
  if redis.call('EXISTS', marker) == 1 then return '0' end
  redis.call('XADD', stream, '*', 'e', json)
  redis.call('SET', marker, '1', 'EX', ttl)
  return '1'
end
