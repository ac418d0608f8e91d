-- Call ended: send a one-line summary of billed calls to reporting, as Kazoo-style form data, with the CRM
-- contact crm-popup found when the call was created (on this leg, or on the other leg of a bridged call).
local phone = require "lib.phone"

-- The contact crm-popup kept: with this leg's call state, or under the other leg's call_id.
local function contact(event)
  local mine = call.get("crm")
  if mine then return mine end
  if event.other_leg_call_id then return store.shared.get("crm:" .. event.other_leg_call_id) end
end

return {
  name = "call-summary",
  on = { "channel_destroy" },
  filter = function(event) return (event.billing_seconds or 0) > 0 end,

  transform = function(event)
    local crm = contact(event) or {}
    -- A count in the store, not in a module variable: it is the same on every worker and survives restarts.
    local day = os.date("!%Y-%m-%d", event.unix_time or os.time())
    local count = store.incr("calls:" .. day, 1, { ttl = "2d" })
    return {
      call_id = event.call_id,
      direction = event.call_direction,
      caller = phone.caller(event),
      customer = crm.name or "unknown",
      billed = string.format("%d:%02d", event.billing_seconds // 60, event.billing_seconds % 60),
      hangup = event.hangup_cause,
      count = count,
    }
  end,

  forward = { url = "https://reports.example.com/calls", format = "form" },
}
