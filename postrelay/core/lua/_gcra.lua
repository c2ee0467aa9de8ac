-- Fragment (included with `--! include _gcra.lua`): the generic cell rate algorithm of one destination.
-- `tat_key` holds the theoretical arrival time, `learned_key` what its rate-limit headers taught (fields:
-- interval (ms), hold_until (epoch ms)); the interval is the slower of `interval` (configured, ms; 0 when only
-- the headers limit the destination) and the taught one, and a hold blocks every slot until it ends.
-- Returns '0' when a slot is free at `now` (ms; taken when `take`), else the ms (as a string) until one is.
local function gcra(tat_key, learned_key, now, interval, burst, take)
  local learned = redis.call('HMGET', learned_key, 'interval', 'hold_until')
  local hold = tonumber(learned[2] or '0')
  if hold > now then return tostring(hold - now) end
  local taught = tonumber(learned[1] or '0')
  if taught > interval then interval = taught end
  if interval <= 0 then return '0' end
  local tat = tonumber(redis.call('GET', tat_key) or now)
  if tat < now then tat = now end
  local allow_at = tat - burst
  if now < allow_at then return tostring(allow_at - now) end
  if take then
    local new_tat = tat + interval
    redis.call('SET', tat_key, tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
  end
  return '0'
end
