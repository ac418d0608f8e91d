-- Low balance: collect the accounts Kazoo warns about during the day and post one digest to the billing
-- chat at 9:00 Berlin time on weekdays, instead of a message per warning.
return {
  name = "low-balance-digest",
  on = { "notifications.low_balance" },
  cron = "0 9 * * 1-5",
  timezone = "Europe/Berlin",

  -- Each warning replaces the account's line: the digest shows the latest balance.
  run = function(event)
    local pending = store.get("pending") or {}
    pending[event.account_id] = { balance = event.current_balance }
    store.set("pending", pending)
  end,

  tick = function(now)
    local pending = store.get("pending")
    if not pending or next(pending) == nil then return end
    local lines = {}
    for account, info in pairs(pending) do
      lines[#lines + 1] = string.format("%s: %s", account, tostring(info.balance))
    end
    table.sort(lines)
    forward("https://chat.example.com/hooks/billing", {
      text = string.format("Low balance on %d account(s) at %s:\n%s", #lines, os.date("!%Y-%m-%d %H:%M UTC", now),
        table.concat(lines, "\n")),
    })
    -- Cleared in the same commit as the forward: a crash before it posts the digest again, never loses it.
    store.delete("pending")
  end,
}
