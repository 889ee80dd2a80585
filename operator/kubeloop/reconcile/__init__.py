"""Pure reconcile logic: observed objects -> desired status and next action. No I/O."""
