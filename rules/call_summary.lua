-- Call ended: send a one-line summary of billed calls to reporting, as Kazoo-style form data.
local phone = require "lib.phone"

local calls_today = 0

return {
  name = "call-summary",
  on = { "channel_destroy" },
  filter = function(event) return (event.billing_seconds or 0) > 0 end,

  transform = function(event)
    calls_today = calls_today + 1
    return {
      call_id = event.call_id,
      direction = event.call_direction,
      caller = phone.caller(event),
      billed = string.format("%d:%02d", event.billing_seconds // 60, event.billing_seconds % 60),
      hangup = event.hangup_cause,
      count = calls_today,
    }
  end,

  forward = { url = "https://reports.example.com/calls", format = "form" },
}
