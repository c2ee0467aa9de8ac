-- The receiver's one round trip: per event, if its dedupe marker is absent, append it to the ingest stream and
-- then set the marker (XADD before SET: a failing XADD leaves no marker without its event).
-- KEYS[1] = ingest stream                 pr:{in}:stream
-- KEYS[2..n] = one dedupe marker per event   pr:{in}:seen:<event id>
-- ARGV[1] = dedupe window (seconds)
-- ARGV[2..n] = one canonical event JSON per event, in KEYS order
-- returns one character per event: '1' queued, '0' duplicate
local flags = {}
local ttl = ARGV[1]
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
    redis.call('SET', KEYS[i], '1', 'EX', ttl)
    flags[i - 1] = '1'
  else
    flags[i - 1] = '0'
  end
end
return table.concat(flags)
