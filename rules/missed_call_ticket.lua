-- Missed call: open a ticket so someone calls back.
local phone = require "lib.phone"

return {
  name = "missed-call-ticket",
  on = { "notifications.missed_call" },
  -- Nobody left a message: those get their own voicemail alert.
  filter = function(event) return not event.message_left end,

  transform = function(event)
    local rang = event.notify and event.notify.ringing_seconds or 0
    return {
      subject = "Missed call from " .. phone.caller(event),
      description = string.format("Called %s, rang %d s, at %s", event.to_user or "?", rang,
        os.date("!%Y-%m-%d %H:%M UTC", event.unix_time)),
      priority = rang > 20 and "high" or "normal",
      call_id = event.call_id,
    }
  end,

  forward = { url = "https://tickets.example.com/api/tickets", method = "POST" },
}
