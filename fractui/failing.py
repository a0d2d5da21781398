"""Failures that repeat, said once, on the admin's side (remote_agent/failing.py is the host's).

The headless scheduler logs at INFO on stderr, into the admin's journal: a condition that lasts
— a row held by a psql session left open, an agent that will not answer a read, a listener
that fails on every notification — met again by every pass, each second, would bury what else
happens under one line a pass. What failed and why is said when it starts failing, and again
only where the words change; a traceback once; and once more when it works again, with how
many tries failed, so a failure is never dropped without a word.
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, Hashable, Optional, Tuple


class Failures:
    """What is failing now, by name (any hashable: a job, a (host, key) pair), each with what
    it said and how many tries failed. Tries may come from several threads (a pass and the
    hosts' lanes)."""

    def __init__(self, logger: logging.Logger):
        self._log = logger
        self._lock = threading.Lock()
        self._failing: Dict[Hashable, Tuple[str, int]] = {}  # name -> (same, tries failed)

    def failed(self, name: Hashable, said: str, level: int = logging.WARNING,
               trace: bool = False, same: Optional[str] = None) -> None:
        """A try of ``name`` failed: ``said`` is logged at ``level`` (with the traceback being
        handled, where ``trace``) unless it said the same when it failed before. ``same``,
        where given, is what is compared instead of ``said``: words that change at every try
        (how long a session has held a row) make no new failure."""
        same = said if same is None else same
        with self._lock:
            before = self._failing.get(name)
            self._failing[name] = (same, before[1] + 1 if before else 1)
        if before is None or before[0] != same:
            self._log.log(level, "%s", said, exc_info=trace)

    def worked(self, name: Hashable, said: str) -> None:
        """A try of ``name`` worked: ``said``, with how many tries failed, where it was
        failing; nothing where it was not."""
        with self._lock:
            before = self._failing.pop(name, None)
        if before is not None:
            self._log.info("%s after %d failed tr%s", said, before[1],
                           "y" if before[1] == 1 else "ies")
