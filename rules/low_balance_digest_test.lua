local function warn(account, balance)
  local event = sample("notifications__low_balance")
  event.account_id = account
  event.current_balance = balance
  return run("low-balance-digest", event)
end

test("warnings are collected and posted once, in one message, at the morning tick", function()
  warn("acct-b", 12)
  warn("acct-a", 40)
  warn("acct-a", 35)  -- a later warning for the same account replaces its line
  expect(store.rule("low-balance-digest").get("pending")).to_be({ ["acct-a"] = { balance = 35 }, ["acct-b"] = { balance = 12 } })

  clock.set(1796112000)  -- Tuesday 1 December 2026, 9:00 in Berlin
  local out = tick("low-balance-digest")
  expect(out.outcome).to_be("ok")
  expect(out.forwards[1].body.text).to_be("Low balance on 2 account(s) at 2026-12-01 08:00 UTC:\nacct-a: 35\nacct-b: 12")

  -- Nothing new since: the next morning posts nothing.
  clock.advance("1d")
  expect(tick("low-balance-digest").forwards).to_have_length(0)
end)

test("a quiet day posts nothing", function()
  expect(tick("low-balance-digest").forwards).to_have_length(0)
end)
