"""A verb's long wait on the store (``submit --wait``, ``logs -f``) ridden through a store it
cannot reach for a while — a PostgreSQL server restarting, down, in crash recovery: said once
when lost and once when back, and the wait goes on; the job goes on meanwhile, so the store's
absence is no end of it. A store gone for good (its database dropped), or one its URL can never
reach (StoreMisdirected), ends the wait."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, TypeVar

from fractui.store import StoreUnavailable
from fractui.store.base import StoreMisdirected, StoreMissing
from fractui.terminal import say

T = TypeVar("T")

STORE_AWAY_S = 1.0  # how often a wait tries a store it cannot reach


@dataclasses.dataclass
class Outage:
    """Where a wait stands with its store: ``meanwhile`` is said with the store's words when
    it is lost (``job 12 goes on meanwhile``), ``then`` once it is back (``waiting for job 12
    to end``); ``back_at``: the monotonic time it last came back (0 if never lost)."""
    meanwhile: str
    then: str
    lost: bool = False
    back_at: float = 0.0

    def through(self, read: Callable[[], T]) -> T:
        """What ``read()`` returns once the store answers it: a store that cannot be reached
        is tried again every STORE_AWAY_S; any other error of the store is raised."""
        while True:
            try:
                value = read()
            except (StoreMissing, StoreMisdirected):
                raise
            except StoreUnavailable as err:
                if not self.lost:
                    say("%s; waiting for the store to come back (%s)" % (err, self.meanwhile))
                    self.lost = True
                time.sleep(STORE_AWAY_S)
                continue
            if self.lost:
                say("the store is back; %s" % self.then)
                self.lost, self.back_at = False, time.monotonic()
            return value
