-- Resume the Job's schedule.
obj.spec.suspend = false
return obj
