-- Argo CD health of a kadence.io Job.
-- Argo CD's Lua has only the base, table and (safe) os libraries: no string or math here.
--   spec.suspend                                  -> Suspended
--   no status yet, or status older than the spec  -> Progressing
--   Ready=False                                   -> Degraded (the condition's message)
--   LastRunSucceeded=False                        -> Degraded (the condition's message)
--   Ready missing or Unknown                      -> Progressing
--   otherwise                                     -> Healthy
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

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Job is suspended: scheduled runs are skipped (a manual trigger still runs)"
  return hs
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the Job"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end

local ready = find_condition(status, "Ready")
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready, "Job is not ready")
  return hs
end

local last_run = find_condition(status, "LastRunSucceeded")
if last_run ~= nil and last_run.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(last_run, "The last run failed")
  return hs
end

if ready == nil or ready.status ~= "True" then
  hs.status = "Progressing"
  if ready ~= nil then
    hs.message = describe(ready, "Waiting for the Job to become ready")
  else
    hs.message = "Waiting for the Job to become ready"
  end
  return hs
end

hs.status = "Healthy"
if status.nextRunTime ~= nil then
  hs.message = "Next run at " .. status.nextRunTime
elseif status.lastResult ~= nil then
  hs.message = "Last run " .. status.lastResult
else
  hs.message = describe(ready, "Job is ready")
end
return hs
