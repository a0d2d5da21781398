"""What a person types to find text (the fleet's and the jobs' filter, the log's search): a
regex, matched under a time budget.

It runs on the UI thread against text other people wrote (job names, job output), and a
pattern that backtracks, ``(a+)+$`` against ``"a" * 24 + "!"``, takes a second, each more
``a`` twice that: the TUI froze. A worker thread does not help (the engine holds the GIL all
along). The engine does check for signals as it runs, so a SIGALRM timer cuts a match off; a
pass that outruns its budget is done again with the text as written, and that pattern is
matched so from then on.
"""

from __future__ import annotations

import re
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Callable, Optional, TypeVar

BUDGET_S = 0.25
"""The matching one pass over what is shown may spend (a keystroke's or a refresh's filter, the
log's lines drawn): a filter over 10,000 jobs' rows spends 0.01 to 0.03 s of it, a frame of
50 lines of output 0.0001 to 0.0002 s (docs/decisions.md)."""
SEARCH_BUDGET_S = 1.0
"""The matching a search through a job's output may spend: 100,000 lines (``logview.MAX_LINES``)
cost 0.1 to 0.25 s."""
TOO_SLOW = "pattern too slow on this text: matched as written"

R = TypeVar("R")


def typed_pattern(text: str) -> re.Pattern[str]:
    """What a person typed to find text (a filter, a log search): a case-insensitive regex, or
    the text as written where it is no regex ``re`` can compile: not valid, or too big (a
    count past its limit, ``a{99999999999}``, is an OverflowError; groups nested thousands
    deep a RecursionError), or its flags at odds (``(?a)(?u)``: a ValueError)."""
    try:
        return re.compile(text, re.I)
    except (re.error, OverflowError, RecursionError, ValueError):
        return as_written(text)


def as_written(text: str) -> re.Pattern[str]:
    """``text`` matched as written, case-insensitively: no backtracking to outrun a budget."""
    return re.compile(re.escape(text), re.I)


class TooSlow(Exception):
    """The pass's budget ran out in a match (raised by the SIGALRM handler)."""


def _alarm(_signum: int, _frame: Optional[FrameType]) -> None:
    raise TooSlow()


class Clocked:
    """The pattern's calls for one pass, each under a timer of what the pass has left; with
    ``left`` None, unbounded."""

    def __init__(self, regex: re.Pattern[str], left: Optional[float]) -> None:
        self.regex = regex
        self.left = left

    def _timed(self, call: Callable[[], R]) -> R:
        if self.left is None:
            return call()
        if self.left <= 0:  # (spent, its signal not yet handled: a timer of 0 would be none)
            raise TooSlow()
        signal.setitimer(signal.ITIMER_REAL, self.left)
        try:
            return call()
        finally:
            self.left = signal.setitimer(signal.ITIMER_REAL, 0)[0]

    def search(self, text: str) -> bool:
        """Whether the pattern is found in ``text``."""
        return self._timed(lambda: self.regex.search(text) is not None)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where the pattern is found in ``text``, the empty matches left out (nothing to
        highlight)."""
        return self._timed(lambda: [m.span() for m in self.regex.finditer(text)
                                    if m.end() > m.start()])


@dataclass
class Typed:
    """A typed pattern: ``text`` as typed, ``regex`` what it is matched with (``as_written``
    once a pass outran its budget, ``slow``)."""

    text: str
    regex: re.Pattern[str]
    slow: bool = False

    @classmethod
    def again(cls, before: Optional[Typed], text: str) -> Typed:
        """``before`` if ``text`` is what it was typed as (its slowness kept: a refresh, the
        same search again), else ``text`` compiled anew."""
        return before if before is not None and before.text == text else cls(
            text, typed_pattern(text))

    def run(self, work: Callable[[Clocked], R], told: Callable[[str], None],
            seconds: float = BUDGET_S) -> R:
        """``work`` with the pattern's calls (``Clocked``), spending at most ``seconds`` of
        matching in all; past it, the pattern is the text as written from then on, ``told``
        says so (once: then it is fast) and ``work`` runs again."""
        if self.slow or threading.current_thread() is not threading.main_thread():
            # Only the main thread (where Textual runs) may set a signal's handler, and only
            # there is one handled: elsewhere a pass cannot be cut off, and is not bounded.
            return work(Clocked(self.regex, None))
        previous = signal.signal(signal.SIGALRM, _alarm)
        try:
            try:
                return work(Clocked(self.regex, seconds))
            finally:
                # (Clocked clears its own timer; one that fired between its arming and
                # its try is cleared here all the same)
                signal.setitimer(signal.ITIMER_REAL, 0)
        except TooSlow:
            pass
        finally:
            signal.signal(signal.SIGALRM, previous)
        self.slow, self.regex = True, as_written(self.text)
        told(TOO_SLOW)
        return work(Clocked(self.regex, None))
