-- The anchor benchmarks' rule (../shared/bench), as a Switchboard rule: keep inbound channel_create, count,
-- transform. scripts/bench.sh and scripts/serve_bench.sh load this directory; SwitchboardBench adds a forward.
local matched = 0
return {
  name = "anchor",
  on = "channel_create",
  match = { call_direction = "inbound" },
  transform = function(e)
    matched = matched + 1
    return { call_id = e.call_id, from = e.caller_id_number, to = e.callee_id_number, n = matched }
  end,
}
