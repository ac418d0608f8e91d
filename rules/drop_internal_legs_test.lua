test("real legs are sent to analytics", function()
  local out = run("drop-internal-legs", sample("channel_answer__inbound"))
  expect(out.outcome).to_be("ok")
  expect(out.forwards[1].body).to_be({
    event = "channel_answer", call_id = out.forwards[1].body.call_id, direction = "inbound",
    at = out.forwards[1].body.at,
  })
end)

test("internal legs are dropped", function()
  local out = run("drop-internal-legs", { hook_event = "channel_bridge", call_id = "loop-1", is_internal_leg = true })
  expect(out.dropped).to_be(true)
  expect(#out.forwards).to_be(0)
end)
