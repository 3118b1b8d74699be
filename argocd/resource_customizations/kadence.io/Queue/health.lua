-- Argo CD health of a kadence.io Queue.
-- Argo CD's Lua has only the base, table and (safe) os libraries: no string or math here.
--   no status yet, or status older than the spec  -> Progressing
--   Ready=True                                    -> Healthy
--   Ready=False                                   -> Degraded (the condition's message)
--   Ready missing or Unknown                      -> Progressing
local hs = {}

local function find_condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function describe(condition, fallback)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  if condition.reason ~= nil and condition.reason ~= "" then
    return condition.reason
  end
  return fallback
end

local status = obj.status
if status ~= nil and status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end

local ready = find_condition(status, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to create the stream"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Queue is ready")
  return hs
end
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready, "Queue is not ready")
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the Queue to become ready")
return hs
