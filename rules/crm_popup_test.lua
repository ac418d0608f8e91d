test("inbound call looks up the caller and pops the screen", function()
  http.mock{ method = "GET", url = "https://crm.example.com/lookup?phone=%2B14155550123",
             status = 200, json = { name = "Acme" } }
  local out = run("crm-popup", sample("channel_create__inbound"))
  expect(out.outcome).to_be("ok")
  expect(#out.http).to_be(1)
  expect(out.http[1].status).to_be(200)
  expect(out.forwards[1].url).to_be("https://screen.example.com/pop")
  expect(out.forwards[1].body).to_be({
    call_id = "1783265409_83651247@203.0.113.45",
    caller = "SMITH JOHN <(415) 555-0123>",
    customer = "Acme",
    at = 1715700187,
  })
end)

test("a CRM outage still pops the screen, marked unknown, and logs a warning", function()
  http.mock{ url = "https://crm.example.com/lookup?*", error = "connection refused" }
  local out = run("crm-popup", sample("channel_create__inbound"))
  expect(out.forwards[1].body.customer).to_be("unknown")
  expect(out.logs[1].level).to_be("warn")
  expect(out.logs[1].fields.error).to_be("connection refused")
end)

test("outbound calls are not popped", function()
  local out = run("crm-popup", sample("channel_create__outbound"))
  expect(out.skipped).to_be(true)
  expect(out.stage).to_be("match")
end)

test("internal legs are filtered out", function()
  local event = sample("channel_create__inbound")
  event.is_internal_leg = true
  local out = run("crm-popup", event)
  expect(out.stage).to_be("filter")
end)
