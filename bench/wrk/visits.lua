-- Replays tracking-link visits (bench/payloads.py write_visits) with wrk: GET /t/<token>, one client each.
-- wrk -t1 -cC -dD -s bench/wrk/visits.lua URL -- FILE OFFSET COUNT
-- FILE lines are "<path>\t<User-Agent>". Lines [OFFSET, OFFSET+COUNT) are loaded; past the last one the script
-- wraps around (the driver then reports it: requests > COUNT means repeated clients, which collapse).
-- done() prints one line "BENCHJSON {...}" like replay.lua (wrk counts statuses >= 400 as errors; 302 is ok).

local requests = {}
local loaded = 0
local cursor = 0

function init(args)
  local path = args[1]
  local offset = tonumber(args[2] or "0")
  local count = tonumber(args[3] or "0")
  local index = 0
  for line in io.lines(path) do
    if index >= offset then
      local tab = line:find("\t", 1, true)
      local headers = { ["User-Agent"] = line:sub(tab + 1), ["Accept"] = "text/html,*/*" }
      loaded = loaded + 1
      requests[loaded] = wrk.format("GET", line:sub(1, tab - 1), headers)
      if count > 0 and loaded >= count then break end
    end
    index = index + 1
  end
end

function request()
  cursor = cursor + 1
  if cursor > loaded then cursor = 1 end
  return requests[cursor]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
