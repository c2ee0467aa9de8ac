-- Apply one event to the console's indexes, its state kept in KEYS[1] (mailpieces on another Redis; reindex).
-- KEYS[1] = index state hash     pr:ix:state:{source:id} (or the piece hash pr:piece:{source:id})
-- ARGV[1] = piece member (`<source>:<id>`)
-- ARGV[2] = source
-- ARGV[3] = event type
-- ARGV[4] = the type's lifecycle rank (0: none)
-- ARGV[5] = '1' when the type is terminal
-- ARGV[6] = occurred at (epoch seconds)
-- ARGV[7] = occurred day (YYYY-MM-DD)
-- ARGV[8] = campaign ('' none)
-- ARGV[9] = recipient email, lower case ('' none)
-- ARGV[10] = recipient name ('' none)
-- ARGV[11] = the name's search words, space-separated
-- ARGV[12] = retention in seconds of the state hash (0: keep)
-- returns 1
--! include _index_event.lua
ix_event(KEYS[1], ARGV, 1)
local ttl = tonumber(ARGV[12])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
