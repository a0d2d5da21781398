"""Failures that repeat, said once: a step of one of the daemon's loops (a watchdog pass, a push
of the logs or the snapshot, a wait for XID events, accepting connections) that fails the same
way pass after pass is logged when it starts failing, not once a pass. On a full state disk a
line (or a traceback) each half second would fill the disk the log is on and bury what else
happens. What failed and why is said when it first fails, and again only if the reason changes;
a traceback only for an error of no known kind; and once more when it works again, with how many
passes failed, so a failure is never dropped without a word. The admin's side (the headless
scheduler, whose log is the admin's journal) says its own failures with the same class, counted
in tries: a pass, a push, a reconnect.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple, TypeVar, Union

from remote_agent.daemon.trust import UnsafePath
from remote_agent.gpu.backend import NvmlCallError
from remote_agent.jobs.store import StoreError
from remote_agent.rpc.jsonrpc import RpcError
from remote_agent.text import count

# The host's failures, which say what and why themselves: logged without a traceback.
KNOWN = (UnsafePath, StoreError, NvmlCallError, RpcError, OSError)

T = TypeVar("T")
TRIES = ("try", "tries")  # the admin side's count: of passes, pushes, reconnects alike
# the last part of a capped kind's name for its things said no more (no host's value equals it)
PAST_CAP = object()


class Failures:
    """The steps of a loop that are failing now, by name (any hashable: a job, a (host, key)
    pair), each with what it said and how many passes (``counted``: one and many) it failed.
    Steps may run on several threads (a snapshot is taken by the monitor and by a client's
    request; a scheduler's pass and its hosts' lanes)."""

    def __init__(self, logger: Union[logging.Logger, logging.LoggerAdapter[Any]],
                 counted: Tuple[str, str] = ("pass", "passes")):
        self._log = logger
        self._counted = counted
        self._lock = threading.Lock()
        self._failing: Dict[Hashable, Tuple[str, int]] = {}  # name -> (same, passes failed)

    def failed(self, name: Hashable, said: str, level: Optional[int] = None,
               trace: bool = False, same: Optional[str] = None,
               cap: Optional[int] = None) -> None:
        """A pass of step ``name`` failed: ``said`` is logged at ``level`` (by default an error
        with the traceback being handled, where ``trace``, else a warning) unless the step said
        the same when it failed before. ``same``, where given, is what is compared instead of
        ``said``: words that change at every pass (how long a session has held a row) make no
        new failure.
        ``cap``: ``name`` is a tuple ending with a thing a host names as it likes (a job's id),
        and at most ``cap`` things of its kind (the name less its last part) are said failing
        at once: one past them is said once as the cap hit, counted under the kind's
        ``PAST_CAP``, and said no more (nor when it mends), so a hostile host that names a new
        thing at every push grows neither the names kept nor the log."""
        same = said if same is None else same
        with self._lock:
            if cap is not None and name not in self._failing and self._things(
                    name[:-1]) >= cap:  # type: ignore[index]
                name = name[:-1] + (PAST_CAP,)  # type: ignore[index]
                said, same = "more than %d failing at once, past them said no more until " \
                             "they mend: %s" % (cap, said), "past the cap"
            before = self._failing.get(name)
            self._failing[name] = (same, before[1] + 1 if before else 1)
        if before is not None and before[0] == same:
            return
        if level is None:
            level = logging.ERROR if trace else logging.WARNING
        self._log.log(level, "%s", said, exc_info=trace)

    def worked(self, name: Hashable, said: str) -> None:
        """A pass of step ``name`` worked: ``said``, with how many passes failed, where it was
        failing; nothing where it was not."""
        with self._lock:
            before = self._failing.pop(name, None)
            past = None
            capped = name[:-1] + (PAST_CAP,) if isinstance(name, tuple) and name else None
            if before is not None and capped in self._failing and not self._things(
                    name[:-1]):  # (walked only while its kind has things past its cap)
                past = self._failing.pop(capped)
        if before is not None:
            one, many = self._counted
            self._log.info("%s after %s%s", said,
                           count(before[1], "failed " + one, "failed " + many),
                           "" if past is None else "; the last of them said, with %s past the "
                           "cap unsaid" % count(past[1], "failure"))

    def failing(self, kind: str) -> List[Tuple[Hashable, ...]]:
        """The names ``(kind, ...)`` failing now: a failure that ends with what failed (a copy
        that is gone, a job no pass leaves any more) is run no more to say it worked; the pass
        that finds it gone says so, from these."""
        with self._lock:
            return [name for name in self._failing
                    if isinstance(name, tuple) and name and name[0] == kind]

    def _things(self, kind: Tuple[Hashable, ...]) -> int:
        """How many things of ``kind`` are said failing now (the lock held)."""
        return sum(1 for name in self._failing if isinstance(name, tuple) and
                   name[:-1] == kind and name[-1] is not PAST_CAP)

    def step(self, name: str, step: Callable[[], T]) -> Optional[T]:
        """Run one step of a pass; its failure (a full disk, a damaged file, NVML) is said as
        ``failed`` says it and keeps no other step from running. None where it failed."""
        try:
            result = step()
        except KNOWN as err:
            self.failed(name, "%s failed: %s; tried again each pass" % (name, err))
            return None
        except Exception as err:  # a bug: its traceback, once
            self.failed(name, "%s failed (%s: %s); tried again each pass" % (
                name, type(err).__name__, err), trace=True)
            return None
        self.worked(name, "%s works again" % name)
        return result
