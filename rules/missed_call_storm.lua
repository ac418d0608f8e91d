-- Missed-call storm: tell the front desk's chat when one number misses 5 calls within 10 minutes, once
-- per storm. store.count keeps the times of the misses in a sliding window that every worker shares.
return {
  name = "missed-call-storm",
  on = { "notifications.missed_call" },

  run = function(event)
    local number = event.to_user or "unknown"
    local missed = store.count("missed:" .. number, "10m")
    -- store.add is true only for the first caller: one alert per storm, another after 10 quiet minutes.
    if missed >= 5 and store.add("alerted:" .. number, true, { ttl = "10m" }) then
      forward("https://chat.example.com/hooks/frontdesk", {
        text = string.format("%s missed %d calls in 10 minutes (the last from %s)", number, missed,
          event.caller_id_number or "an unknown number"),
      })
    end
  end,
}
