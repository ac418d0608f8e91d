test("a missed call opens a ticket with the caller and how long it rang", function()
  local out = run("missed-call-ticket", sample("notifications__missed_call"))
  expect(out.forwards[1].method).to_be("POST")
  expect(out.forwards[1].body.subject).to_be("Missed call from SMITH JOHN <(415) 555-0123>")
  expect(out.forwards[1].body.priority).to_be("high")
end)

test("no ticket when the caller left a message", function()
  local event = sample("notifications__missed_call")
  event.message_left = true
  expect(run("missed-call-ticket", event).stage).to_be("filter")
end)

test("the GET query-string version decodes the same", function()
  local out = run("missed-call-ticket", sample("notifications__missed_call.query"))
  expect(out.forwards[1].body.call_id).to_be("1783265409_83651247@203.0.113.45")
end)
