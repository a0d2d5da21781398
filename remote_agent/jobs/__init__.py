"""Jobs on a host: the durable job table, the per-job shim, caps and the supervisor."""
