-- wrk script (bench/run.sh): every request carries the next token of a file (one per line),
-- cycling, so that consecutive requests never share a token. Run as:
--   wrk -t1 ... -s cycle_tokens.lua URL -- TOKENS_FILE
local tokens = {}
local next_token = 1

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
