-- New voicemail: tell the team chat, with the transcription when there is one.
local phone = require "lib.phone"

return {
  name = "voicemail-to-chat",
  on = { "notifications.voicemail_new" },

  transform = function(event)
    local seconds = math.floor((event.voicemail_length or 0) / 1000)
    local text = string.format("New voicemail (%d s) from %s in box %s", seconds, phone.caller(event),
      event.voicemail_box or "?")
    if event.voicemail_transcription then
      text = text .. "\n> " .. event.voicemail_transcription
    end
    return { text = text }
  end,

  forward = "https://chat.example.com/hooks/voicemail",
}
