"""Usage: what the fleet's jobs held and used, and what sharing saved — computed from the
store's usage records and GPU time (fractui.store.model), pure: no store, no fleet, no clock
but the one passed in. ``report`` sums a time range by team, queue, user, host, GPU model or
GPU; ``gputime`` turns what the lease holder sees of each GPU into time buckets."""

BY = ("team", "queue", "user", "host", "model", "gpu")
"""What usage is grouped by (here, so the command line knows it without the report's imports)."""
