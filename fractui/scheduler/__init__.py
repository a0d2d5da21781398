"""The scheduler service: places the store's pending jobs on the fleet and runs them there."""

from fractui.scheduler.service import Scheduler

__all__ = ["Scheduler"]
