"""What ``jobs`` and ``status`` say of the copies under the store's key that no job of the
store holds: found against a read of the store made before the hosts answered, then judged by
the store read again after (``copies.judged``, the rule the TUI follows too)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from fractui.sched.copies import Unheld, judged
from fractui.store.base import JobNotFound, Store, StoreForbidden
from fractui.store.model import Job, StaleCopy


def judged_again(store: Store, copies: List[Unheld], stale: Sequence[StaleCopy]
                 ) -> List[Tuple[Unheld, str]]:
    """``copies`` judged by ``store`` read again for their jobs and its stale copies (with
    ``stale``, those of the first read: a copy stale then is stale whatever became of its
    record since)."""
    if not copies:
        return []
    jobs: Dict[int, Optional[Job]] = {}
    for number in sorted({c.job for c in copies}):
        try:
            jobs[number] = store.get(number)
        except JobNotFound:
            jobs[number] = None
    return judged(copies, jobs, list(stale) + stale_copies(store), store.uid, after=True)


def stale_copies(store: Store) -> List[StaleCopy]:
    """The store's stale copies; none where this role is not granted their reading (a
    PostgreSQL role granted SELECT on the jobs alone): a stale copy is then said as the late
    copy it also is, as before they were read. Any other refusal (the role refused at a
    reconnect) is the caller's to say, as its other reads' are."""
    try:
        return store.stale()
    except StoreForbidden:
        return []


def unread(copies: List[Unheld], stale: Sequence[StaleCopy], uid: str
           ) -> List[Tuple[Unheld, str]]:
    """``copies`` where the store could not be read again: said as unread."""
    return judged(copies, {}, stale, uid, after=True)
