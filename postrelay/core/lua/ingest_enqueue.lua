-- The receiver's one round trip: per event, if its dedupe marker is absent, append it to the ingest stream and
-- then set the marker (XADD before SET: a failing XADD leaves no marker without its event).
-- KEYS[1] = ingest stream                 pr:{in}:stream
-- KEYS[2..n] = one dedupe marker per event   pr:{in}:seen:<event id>, or another marker id (a link visitor's)
-- ARGV[1] = dedupe window (seconds)
-- ARGV[2..n] = one canonical event JSON per event, in KEYS order
-- ARGV[n+1..2n-1] = optional: one marker TTL (seconds) per event, in KEYS order, instead of ARGV[1]
-- returns one character per event: '1' queued, '0' duplicate
--! include _enqueue_one.lua
local flags = {}
local n = #KEYS
for i = 2, n do
  flags[i - 1] = enqueue_one(KEYS[1], KEYS[i], ARGV[n + i - 1] or ARGV[1], ARGV[i])
end
return table.concat(flags)
