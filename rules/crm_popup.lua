-- Inbound call: look the caller up in the CRM, then pop a screen for the agent. The answer is kept with
-- the call, so call-summary can attach it at channel_destroy (on this leg and on the other).
local phone = require "lib.phone"

return {
  name = "crm-popup",
  on = { "channel_create" },
  match = { call_direction = "inbound" },
  filter = function(event) return not event.is_internal_leg end,

  ---@param event ChannelCreateEvent   (editor completion: see `switchboard stubs`)
  run = function(event)
    local number = kazoo.e164(event.caller_id_number or "")
    if not number then
      log.info("caller has no usable number", { caller = event.caller_id_number })
      return
    end
    local customer = "unknown"
    local resp, err = http.get("https://crm.example.com/lookup?phone=" .. number:gsub("%+", "%%2B"), {
      headers = { Authorization = "Bearer " .. (env("SWITCHBOARD_CRM_TOKEN") or "") },
      timeout = 2,
    })
    if resp and resp.status == 200 and resp.json then
      customer = resp.json.name or customer
    elseif err then
      log.warn("CRM lookup failed", { error = err })
    end
    -- call.* is this leg's state; the other leg of the call finds the contact by this leg's call_id,
    -- which Kazoo sends it as other_leg_call_id.
    local contact = { name = customer, number = number }
    call.set("crm", contact)
    store.shared.set("crm:" .. event.call_id, contact, { ttl = "4h" })
    forward("https://screen.example.com/pop", {
      call_id = event.call_id,
      caller = phone.caller(event),
      customer = customer,
      at = event.unix_time,
    })
  end,
}
