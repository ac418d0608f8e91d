local e = ...
local n = 0
for k, v in pairs(e) do n = n + 1 end
e.call_id = nil
local a = e.vars.deep.x[3].y
rawset(e.vars, "a", nil)
setmetatable(e.vars.deep, { __index = function() return 1 end })
local k = next(e)
e.kind = nil
return e, n, a, k, getmetatable(e), e.none, e.list, e.vars
