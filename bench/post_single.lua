-- wrk script: one small canonical JSON reading per request, distinct timestamps per thread.
local counter = 0
local thread_id = 0
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
  local body = string.format(
    '{"readings":[{"device":"bench-%d-%d","metric":"power","ts":%d,"value":%d.5}]}',
    tid or 0, counter % 1000, 1700000000000 + counter, counter % 1000)
  return wrk.format(nil, nil, nil, body)
end
