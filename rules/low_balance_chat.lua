-- Low balance: post an alert to the team chat.
return {
  name = "low-balance-chat",
  on = { "notifications.low_balance" },

  transform = function(event)
    return {
      text = string.format("Account %s is low on credit: balance %s", event.account_id, tostring(event.current_balance)),
    }
  end,

  forward = { url = "https://chat.example.com/hooks/billing", headers = { ["X-Source"] = "switchboard" } },
}
