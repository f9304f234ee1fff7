-- wrk script (bench/run.sh): every request carries the next token of a file, and the thread stops
-- once every token has been answered once, so each token is checked exactly once (a first pass:
-- no cache can help; wrk itself counts non-2xx answers). Run with one thread:
--   wrk -t1 ... -s first_pass.lua URL -- TOKENS_FILE
local tokens = {}
local next_token = 1
local answered = 0

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
end

function request()
  local token = tokens[next_token]
  next_token = next_token % #tokens + 1
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. token })
end

function response(status, headers, body)
  answered = answered + 1
  if answered >= #tokens then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  io.write(string.format("first_pass: %d tokens\n", #tokens))
end
