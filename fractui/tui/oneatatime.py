"""A thread worker that runs one at a time: a screen's periodic read of the store, a job's
record, the report's range, a host's cordon.

As k9s's table model drops a refresh that would overlap one running (STYLE.md), a run asked
while one is under way is not started beside it: it is made once after it (what changed
meanwhile is read then, and what was asked is done, in the order asked). Started beside it,
each timer tick behind a store that hangs (a PostgreSQL server gone, a locked SQLite file) took
a thread, one more a second, and Textual's thread workers share asyncio's small default pool
(``min(32, CPUs + 4)`` threads): once they were all waiting on the store, an agent's call (a
MIG plan, a placement's check) waited behind them, and when the store came back every read
queued ran in turn, each reading everything again. Two cordons asked of a slow store ran in
two threads, the later (``U``, the undo) sometimes first, so the host ended cordoned.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

from textual.worker import Worker, WorkerState

ENDED = (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED)

log = logging.getLogger("fractui.tui")


def unforeseen(what: str, err: BaseException, then: str = "") -> str:
    """Words for ``what`` that failed in a way no one foresaw (a fault of fractui's, whose
    traceback its log has), with what to do ``then`` where there is something."""
    return "%s failed: %s: %s (fractui's log has the rest)%s" % (
        what, type(err).__name__, err, "; " + then if then else "")


class OneAtATime:
    """``start`` (a ``@work(thread=True)`` method) run one at a time: ``ask`` starts it, or,
    while one runs, has it run once more when that one ends. The screen that owns it hands
    it its workers' state changes (``changed``); all of it is called on the UI thread.

    A run that ends in an exception its worker does not catch (a fault of fractui's: the
    foreseen ones, a store that cannot be read, are answered as messages) is logged with its
    traceback, once while the same one recurs, and handed to ``failed`` in words
    (``unforeseen``), which says it where the owner says its foreseen failures: a worker
    started with ``exit_on_error=False`` ends silently otherwise, and the view went on showing
    what it had with nothing said ("reading…" for good, on the report)."""

    def __init__(self, start: Callable[[], Worker[None]], what: str,
                 failed: Callable[[str], None]) -> None:
        self._start = start
        self._what = what
        self._failed = failed
        self._running: Optional[Worker[None]] = None
        self._again = False
        self._logged: Optional[str] = None  # the failure logged last, while it recurs

    def ask(self) -> None:
        if self._running is not None:
            self._again = True
            return
        self._running = self._start()

    def changed(self, event: Worker.StateChanged) -> None:
        """A worker's state changed: where it is this one's and it ended, the run asked
        meanwhile (if one was) starts."""
        if event.worker is not self._running or event.state not in ENDED:
            return
        self._running = None
        err = event.worker.error
        if event.state == WorkerState.ERROR and err is not None:
            said = unforeseen(self._what, err)
            if said != self._logged:
                log.error("%s", said, exc_info=err)
                self._logged = said
            self._failed(said)
        elif event.state == WorkerState.SUCCESS:
            self._logged = None
        if self._again:
            self._again = False
            self.ask()
