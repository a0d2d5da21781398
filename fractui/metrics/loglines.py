"""A bound on the lines a log takes from what its clients do: the metrics endpoint's warnings
(a request refused, a connection bound reached and left) come from anyone who reaches its port,
and one a connection let any local user flood the scheduler's log, burying what matters and
filling the disk it is on."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

from fractui.words import count


class Bounded(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``logger``, saying at most ``lines()`` lines at INFO or above in each ``window()``
    seconds (read at each line, so a test may set them): past them a line is counted, not
    said, and the count is said in one warning once the window has ended, at the next line or
    ``flush``, so none is dropped without a word. Debug lines, off unless asked for, pass."""

    def __init__(self, logger: logging.Logger, lines: Callable[[], int],
                 window: Callable[[], float]):
        super().__init__(logger, {})
        self._lines, self._window = lines, window
        self._lock = threading.Lock()
        self._start = 0.0  # when the window began (its first line)
        self._said = 0  # lines said in it
        self._unsaid = 0  # lines past the bound in it

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if level < logging.INFO or not self.isEnabledFor(level):
            super().log(level, msg, *args, **kwargs)
            return
        with self._lock:
            ended = self._ended()
            say = self._said < self._lines()
            if say:
                self._said += 1
            else:
                self._unsaid += 1
        if ended:
            self.logger.warning("%s", ended)
        if say:
            super().log(level, msg, *args, **kwargs)

    def flush(self, stopping: bool = False) -> None:
        """Says the count of lines unsaid where their window has ended (a pass calls it), or,
        ``stopping``, where it goes on."""
        with self._lock:
            if stopping:
                self._said = 0  # (ends it)
            ended = self._ended()
        if ended:
            self.logger.warning("%s", ended)

    def _ended(self) -> Optional[str]:
        """Where the window has ended (the lock held): a new one begins now, and the words
        for the lines the last left unsaid ("" where none); None where it goes on."""
        now, window = time.monotonic(), self._window()
        if self._said and now - self._start < window:
            return None
        unsaid, self._said, self._unsaid, self._start = self._unsaid, 0, 0, now
        return "" if not unsaid else "metrics: and %s from its clients in the last %g s, " \
            "unsaid: at most %d are said in that time" % (
                count(unsaid, "more line"), window, self._lines())
