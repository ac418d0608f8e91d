-- Call analytics for real legs only: Kazoo sends an event per leg, loopback legs included.
return {
  name = "drop-internal-legs",
  on = { "channel.*" },

  transform = function(event)
    if event.is_internal_leg then return nil end  -- dropped: nothing is forwarded
    return { event = event.name, call_id = event.call_id, direction = event.call_direction, at = event.unix_time }
  end,

  forward = "https://analytics.example.com/collect",
}
