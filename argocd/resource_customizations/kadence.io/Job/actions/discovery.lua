-- Actions Argo CD offers on a kadence.io Job: run it now, suspend or resume its schedule.
local actions = {}
local suspended = obj.spec ~= nil and obj.spec.suspend == true
actions["trigger"] = {
  ["disabled"] = false,
  ["iconClass"] = "fa fa-fw fa-play",
  ["displayName"] = "Run now"
}
actions["suspend"] = {
  ["disabled"] = suspended,
  ["iconClass"] = "fa fa-fw fa-pause",
  ["displayName"] = "Suspend schedule"
}
actions["resume"] = {
  ["disabled"] = not suspended,
  ["iconClass"] = "fa fa-fw fa-play-circle",
  ["displayName"] = "Resume schedule"
}
return actions
