local function missed(from)
  local event = sample("notifications__missed_call")
  event.caller_id_number = from
  return run("missed-call-storm", event)
end

test("five missed calls within ten minutes alert once", function()
  for i = 1, 4 do
    expect(missed("+1415555010" .. i).forwards).to_have_length(0)
    clock.advance("2m")
  end
  local out = missed("+14155550105")
  expect(out.forwards[1].url).to_be("https://chat.example.com/hooks/frontdesk")
  expect(out.forwards[1].body.text).to_be("+16045550188 missed 5 calls in 10 minutes (the last from +14155550105)")
  -- The same storm goes on: no second alert.
  expect(missed("+14155550106").forwards).to_have_length(0)
end)

test("misses spread over more than ten minutes do not alert", function()
  for _ = 1, 4 do missed("+14155550101") end
  clock.advance("11m")
  expect(missed("+14155550101").forwards).to_have_length(0)
  expect(store.rule("missed-call-storm").get("missed:+16045550188")).to_have_length(1)
end)

test("a new storm after a quiet spell alerts again", function()
  for _ = 1, 5 do missed("+14155550101") end
  clock.advance("11m")
  for _ = 1, 4 do expect(missed("+14155550102").forwards).to_have_length(0) end
  expect(missed("+14155550102").forwards).to_have_length(1)
end)
