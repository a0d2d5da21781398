"""The per-host daemon (owns GPUs and jobs, outlives SSH) and the stdio bridge that reaches it."""
