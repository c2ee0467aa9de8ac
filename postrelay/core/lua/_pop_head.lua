-- Fragment (included with `--! include _pop_head.lua`): pop `event_id` (and copies of it, a re-staged
-- duplicate) off the head of sequence list `seq`; returns the new head (false when the list is empty).
-- The head moves only when it is this event.
local function pop_head(seq, event_id)
  local h = redis.call('LINDEX', seq, 0)
  if h == event_id then
    redis.call('LPOP', seq)
    while redis.call('LINDEX', seq, 0) == event_id do redis.call('LPOP', seq) end
    h = redis.call('LINDEX', seq, 0)
  end
  return h
end
