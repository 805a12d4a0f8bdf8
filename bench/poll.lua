-- wrk script for bench/polling.py: each connection is one client polling about
-- once a second (a random 0.5–1.5 s pause after each answer, so the clients'
-- phases spread out as independent pollers' would, instead of arriving in one
-- burst). Prints one JSON line of figures when done.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  interval_ms = tonumber(args[1] or "1000")
  running, bad = 0, 0
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function delay()
  if interval_ms <= 0 then return 0 end
  return math.random(math.floor(interval_ms / 2), math.floor(interval_ms * 3 / 2))
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  elseif string.find(body, '"status":"running"', 1, true) then
    running = running + 1
  end
end

function done(summary, latency, requests)
  local running_total, bad_total = 0, 0
  for _, t in ipairs(threads) do
    running_total = running_total + t:get("running")
    bad_total = bad_total + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f, "non_200": %d, "socket_errors": %d, "timeouts": %d, "running": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, bad_total, e.connect + e.read + e.write, e.timeout,
    running_total))
end
