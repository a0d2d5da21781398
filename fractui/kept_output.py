"""A job's output as the lease holder keeps it in the store (fractui/scheduler/relay.py), read
by those who reach only the store: ``logs`` and ``submit --wait``. What is kept comes a moment
after it is asked for, so each waits on the store's change feed, never longer than
LOG_WAIT_S."""

from __future__ import annotations

import time
from typing import Callable, Optional

from fractui.store.base import Feed, Store
from fractui.store.model import Job, LogTail

LOG_WAIT_S = 10.0  # how long a reader waits for the lease holder to keep a job's tail


def waited(feed: Feed, done: Callable[[], bool]) -> bool:
    """Whether ``done()`` came true within LOG_WAIT_S, asked again each time the store's
    change feed wakes (at least once a second)."""
    deadline = time.monotonic() + LOG_WAIT_S
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        feed.wait(min(left, 1.0))
    return True


def final_tail(store: Store, job: Job) -> Optional[LogTail]:
    """The end of an ended job's output once the lease holder has kept it whole (it asks for
    it as it records the end); None where it has not within LOG_WAIT_S, or no lease holder is
    there to keep it."""
    feed = store.feed()  # before the first read: a tail kept in between is not missed

    def kept() -> bool:
        tail = store.log_tail(job.id)
        return (tail is not None and tail.complete) or store.lease_holder() is None

    try:
        waited(feed, kept)
    finally:
        feed.close()
    tail = store.log_tail(job.id)
    return tail if tail is not None and tail.complete else None
