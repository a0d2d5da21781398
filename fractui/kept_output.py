"""A job's output as the lease holder keeps it in the store (fractui/scheduler/relay.py), read
by those who reach only the store: ``logs`` and ``submit --wait``. What is kept comes a moment
after it is asked for, so each waits on the store's change feed, never longer than
LOG_WAIT_S."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from fractui.store.base import Feed, Store
from fractui.store.model import Job, LogTail

LOG_WAIT_S = 10.0  # how long a reader waits for the lease holder to keep a job's tail
FOLLOW_EVERY_S = 1.0  # logs -f through the store asks for a fresh tail at most this often


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


@dataclass(frozen=True)
class Later:
    """What a kept tail holds past what a follower printed (``after``)."""

    text: str  # exactly the log's bytes after it, as far as the tail holds them
    missed: int  # bytes written after it that the tail no longer holds (0: none)
    rotated: bool  # the log rotated since: what the old log had past it is not known


def after(tail: LogTail, printed: int) -> Later:
    """What of ``tail`` (kept with its offset) comes after byte ``printed`` of the job's log:
    its last ``tail.offset - printed`` bytes, its text's UTF-8 being the log's bytes one for
    one (fractui.store.model.tail_bytes). A smaller offset is a rotated log (the agent starts
    a new one past half its cap): then only the new log's bytes are known to be new."""
    assert tail.offset is not None
    data = tail.text.encode("utf-8")
    rotated = tail.offset < printed
    new = tail.offset if rotated else tail.offset - printed
    if new > len(data):
        return Later(tail.text, new - len(data), rotated)
    # a cut inside a character only where a rotation fell inside one
    return Later(data[len(data) - new:].decode("utf-8", errors="replace"), 0, rotated)
