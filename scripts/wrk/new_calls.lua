-- wrk script: ../shared/bench/event.json (BENCH_DIR), posted with a new call on every request: call_id and
-- other_leg_call_id replaced by random 32-digit hex ids, as Kazoo's are. The anchors' post.lua sends one call
-- id for every request, which no real traffic does: an index keyed by call then gets every entry on the same
-- page. scripts/speed_table.sh sends both.
local f = io.open((os.getenv("BENCH_DIR") or ".") .. "/event.json"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.headers["Content-Type"] = "application/json"
math.randomseed(os.time())
local function id()
  return string.format("%08x%08x%08x%08x", math.random(0, 0xffffffff), math.random(0, 0xffffffff),
    math.random(0, 0xffffffff), math.random(0, 0xffffffff))
end
request = function()
  local b = body:gsub('"call_id": "[^"]*"', '"call_id": "' .. id() .. '"', 1)
  b = b:gsub('"other_leg_call_id": "[^"]*"', '"other_leg_call_id": "' .. id() .. '"', 1)
  return wrk.format(nil, nil, nil, b)
end
