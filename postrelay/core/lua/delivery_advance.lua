-- Advance a piece's sequence past a finished delivery (dead-lettered, unknown, or found done).
-- KEYS[1] = sequence list   pr:seq:{dest:source:piece}
-- ARGV[1] = event id of the finished delivery
-- returns the new head's event id, or '' when the sequence is empty (the head moves only if it was ARGV[1])
--! include _pop_head.lua
return pop_head(KEYS[1], ARGV[1]) or ''
