-- wrk script for the sign-in benchmark (benchmarks/wrk.py writes the settings above this).
-- Every request is a GET of prefix .. n (n counts per connection thread, so each asks for a
-- new room), with the next cookie of the list; every answer must be a 302 whose Location
-- starts with expect_location (and holds "jwt=" when expect_jwt): the rest count as bad.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  n = 0
  bad = 0
  first_bad = ""
end

function request()
  n = n + 1
  local headers = {}
  if #cookies > 0 then
    headers["Cookie"] = cookies[(n % #cookies) + 1]
  end
  return wrk.format("GET", prefix .. n, headers)
end

function response(status, headers, body)
  local location = headers["Location"] or headers["location"] or ""
  local ok = status == 302 and string.sub(location, 1, #expect_location) == expect_location
  if ok and expect_jwt then
    ok = string.find(location, "jwt=", 1, true) ~= nil
  end
  if not ok then
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(location, 1, 120)
    end
  end
end

function done(summary, latency, requests)
  local bad_total, sample = 0, ""
  for _, thread in ipairs(threads) do
    bad_total = bad_total + thread:get("bad")
    local seen = thread:get("first_bad")
    if sample == "" and seen ~= nil then sample = seen end
  end
  local e = summary.errors
  local file = io.open(out, "w")
  file:write(string.format(
    '{"requests": %d, "duration_us": %d, "bad": %d, "first_bad": "%s", '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"p50": %d, "p95": %d, "p99": %d, "max": %d}}',
    summary.requests, summary.duration, bad_total, string.gsub(sample, '["\\]', ""),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
  file:close()
end
