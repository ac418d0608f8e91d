test("a billed call is summarised as form data", function()
  local out = run("call-summary", sample("channel_destroy__inbound"))
  expect(out.forwards[1].format).to_be("form")
  expect(out.forwards[1].body).to_contain("billed=3%3A07")
  expect(out.forwards[1].body).to_contain("hangup=NORMAL_CLEARING")
end)

test("calls with no billed time are skipped", function()
  local event = decode("form", "hook_event=channel_destroy&call_id=c1&billing_seconds=0&duration_seconds=5")
  local out = run("call-summary", event)
  expect(out.skipped).to_be(true)
  expect(out.stage).to_be("filter")
end)

test("each test starts with fresh rule state", function()
  local out = run("call-summary", sample("channel_destroy__inbound"))
  expect(out.forwards[1].body).to_contain("count=1")
end)

local a_leg = "1783265409_83651247@203.0.113.45"

test("the summary of each leg carries the CRM contact found when the call was created", function()
  http.mock{ url = "https://crm.example.com/lookup?*", status = 200, json = { name = "Acme" } }
  run("crm-popup", sample("channel_create__inbound"))
  expect(store.call(a_leg).get("crm")).to_be({ name = "Acme", number = "+14155550123" })

  local a = run("call-summary", sample("channel_destroy__inbound"))
  expect(a.forwards[1].body).to_contain("customer=Acme")
  expect(a.forwards[1].body).to_contain("count=1")

  -- The other leg has its own call_id; Kazoo names the first leg in other_leg_call_id.
  local b_leg = sample("channel_destroy__outbound")
  b_leg.other_leg_call_id = a_leg
  local b = run("call-summary", b_leg)
  expect(b.forwards[1].body).to_contain("customer=Acme")
  expect(b.forwards[1].body).to_contain("count=2")
end)

test("a call the CRM did not see is summarised as unknown", function()
  local out = run("call-summary", sample("channel_destroy__outbound"))
  expect(out.forwards[1].body).to_contain("customer=unknown")
end)

test("call state is kept for an hour after channel_destroy, then gone", function()
  http.mock{ url = "https://crm.example.com/lookup?*", status = 200, json = { name = "Acme" } }
  run("crm-popup", sample("channel_create__inbound"))
  run("call-summary", sample("channel_destroy__inbound"))
  clock.advance("59m")
  expect(store.call(a_leg).get("crm").name).to_be("Acme")
  clock.advance("2m")
  expect(store.call(a_leg).get("crm")).to_be_nil()
end)
