"""Prometheus metrics of the fleet, served by the scheduler that holds the lease
(docs/metrics.md). ``state`` is what the scheduler hands over after each turn, ``families`` turns
a state into metric families (pure), ``exporter`` serves them over HTTP."""
