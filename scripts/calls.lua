-- wrk: POSTs ../shared/bench/event.json with a call_id of its own per request (events of one call run one at a
-- time, in order, so a single call_id would measure one call's queue, not the node).
local f = io.open(os.getenv("EVENT") or (os.getenv("BENCH_DIR") or ".") .. "/event.json")
local body = f:read("*a")
f:close()
local n = 0
local prefix = tostring(math.random(1, 1000000000))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local b = body:gsub('"call_id"%s*:%s*"[^"]*"', '"call_id": "bench-' .. prefix .. '-' .. n .. '"', 1)
  return wrk.format(nil, nil, nil, b)
end
