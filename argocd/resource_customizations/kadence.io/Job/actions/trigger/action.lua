-- Run the Job now: give the kadence.io/trigger annotation a new value. The operator dispatches
-- one run per new value (even while suspended), subject to the Job's concurrencyPolicy.
-- The value is the current UTC time; a suffix keeps it new when two triggers fall in the same
-- second (it must differ from the annotation and from status.lastTrigger, the last one acted on).
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local current = obj.metadata.annotations["kadence.io/trigger"]
local acted_on = nil
if obj.status ~= nil then
  acted_on = obj.status.lastTrigger
end
local base = os.date("!%Y-%m-%dT%H:%M:%SZ")
local value = base
local n = 1
while value == current or value == acted_on do
  n = n + 1
  value = base .. "." .. tostring(n)
end
obj.metadata.annotations["kadence.io/trigger"] = value
return obj
