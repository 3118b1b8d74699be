-- Suspend the Job's schedule: slots that fall while suspended are skipped, not caught up.
obj.spec.suspend = true
return obj
