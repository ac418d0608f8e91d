-- Shared helpers for rules: require "lib.phone" loads this file once per Lua state.
local M = {}

-- "+14155550123" -> "(415) 555-0123" for North American numbers; anything else unchanged.
function M.pretty(number)
  local e164 = kazoo.e164(number or "")
  if e164 and #e164 == 12 and e164:sub(1, 2) == "+1" then
    return string.format("(%s) %s-%s", e164:sub(3, 5), e164:sub(6, 8), e164:sub(9, 12))
  end
  return number
end

-- The caller as a person reads it: "SMITH JOHN <(415) 555-0123>".
function M.caller(event)
  local name = event.caller_id_name
  local number = M.pretty(event.caller_id_number)
  if name and name ~= "" and name ~= event.caller_id_number then
    return string.format("%s <%s>", name, number)
  end
  return number or "unknown caller"
end

return M
