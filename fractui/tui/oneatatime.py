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

from typing import Callable, Optional

from textual.worker import Worker, WorkerState

ENDED = (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED)


class OneAtATime:
    """``start`` (a ``@work(thread=True)`` method) run one at a time: ``ask`` starts it, or,
    while one runs, has it run once more when that one ends. The screen that owns it hands
    it its workers' state changes (``changed``); all of it is called on the UI thread."""

    def __init__(self, start: Callable[[], Worker[None]]) -> None:
        self._start = start
        self._running: Optional[Worker[None]] = None
        self._again = False

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
        if self._again:
            self._again = False
            self.ask()
