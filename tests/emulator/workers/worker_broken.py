"""A worker file that cannot start: the supervisor must back off, not restart it in a tight loop."""

raise SystemExit("this worker cannot start")
