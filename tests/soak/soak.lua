-- wrk script for the soak run: `wrk ... -s soak.lua URL -- MIX_FILE`.
--
-- Every request is a forward-auth check (GET /auth with X-Forwarded-Method/Uri/Host) whose
-- Authorization header carries the next token of MIX_FILE (lines `<expected reason> <token>`,
-- written by tokens.py). Each thread starts at its own offset and cycles through the file.
-- wrk cannot tell which request a response answers, so the script counts what it sent per
-- expected reason and what came back per status; run.sh compares the first with authgate's
-- own decision counters. done() prints `soak.<what> <key> <value>` lines for report.py.

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  if path == nil then
    error("soak.lua: the mix file is the first script argument (after --)")
  end
  reasons = {}
  tokens = {}
  for line in io.lines(path) do
    local reason, token = line:match("^(%S+) (%S+)$")
    if reason then
      table.insert(reasons, reason)
      table.insert(tokens, token)
    end
  end
  if #tokens == 0 then
    error("soak.lua: no tokens in " .. path)
  end
  -- Spread the threads over the file so they do not send the same token at the same moment.
  local spread = math.floor(#tokens / 16)
  position = (thread_index * spread) % #tokens
  sent = {}
  statuses = {}
end

function request()
  position = position % #tokens + 1
  local reason = reasons[position]
  sent[reason] = (sent[reason] or 0) + 1
  return wrk.format("GET", "/auth", {
    ["Authorization"] = "Bearer " .. tokens[position],
    ["X-Forwarded-Method"] = "GET",
    ["X-Forwarded-Uri"] = "/api/items",
    ["X-Forwarded-Host"] = "soak.test",
  })
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local sent_total, status_total = {}, {}
  for _, thread in ipairs(threads) do
    for reason, n in pairs(thread:get("sent") or {}) do
      sent_total[reason] = (sent_total[reason] or 0) + n
    end
    for status, n in pairs(thread:get("statuses") or {}) do
      status_total[status] = (status_total[status] or 0) + n
    end
  end
  for reason, n in pairs(sent_total) do
    io.write(string.format("soak.sent %s %d\n", reason, n))
  end
  for status, n in pairs(status_total) do
    io.write(string.format("soak.status %s %d\n", status, n))
  end
  io.write(string.format("soak.summary requests %d\n", summary.requests))
  io.write(string.format("soak.summary duration_us %d\n", summary.duration))
  -- errors.status counts every answer >= 400, which here includes the expected 401s: the
  -- status lines above are what to read instead.
  for _, kind in ipairs({ "connect", "read", "write", "timeout" }) do
    io.write(string.format("soak.errors %s %d\n", kind, summary.errors[kind]))
  end
  for _, p in ipairs({ 50, 99, 99.9 }) do
    io.write(string.format("soak.latency_us p%s %d\n", p, latency:percentile(p)))
  end
  io.write(string.format("soak.latency_us max %d\n", latency.max))
end
