-- wrk script: canonical JSON batches of BATCH readings (env BATCH, default 1000),
-- one device per request, distinct timestamps so the worker stores every reading.
local counter = 0
local thread_id = 0
local batch = tonumber(os.getenv("BATCH") or "1000")
function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local parts = {}
  local base = 1700000000000 + counter * batch
  for i = 1, batch do
    parts[i] = string.format('{"device":"dev-%d-%d","metric":"energy","ts":%d,"value":%d.25}',
      tid or 0, counter % 1000, base + i, i % 500)
  end
  return wrk.format(nil, nil, nil, '{"readings":[' .. table.concat(parts, ",") .. ']}')
end
