"""MIG layouts as data, the pure planner, and the all-or-nothing executor."""
