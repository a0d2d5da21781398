"""One lane per host: the calls a scheduling pass makes to a host (launches, stops) run in order
on that host's own thread, so a host that stalls delays no other host and no later pass.

A host whose lane still runs a pass's calls gets none of the next pass's: what it would have
been sent is derived again from the store by the pass after it ends (a placed job stays placed,
a stopping job stopping), so nothing is lost and nothing is sent twice at once. Before each
call the lane asks ``may_act`` (the scheduler: do I still hold the lease, with time for the
call to end within it?), so no call starts that could outlive the lease. A lane that ends
calls ``ended`` (the scheduler: a pass is due, to derive what the lane left undone).

What fails again at every pass while it lasts (a job's row held by a session left open, a bug
of ours in a call) is said once, and once when it mends (``failures``, remote_agent.failing).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Dict, List, Optional, Set, Tuple

from remote_agent.failing import TRIES, Failures
from fractui.fleet.host import AnswerMalformed, HostUnavailable
from fractui.store.base import LeaseLost, RowsLocked, StoreError, StoreRefused
from fractui.words import count

log = logging.getLogger("fractui.scheduler")

Action = Callable[[], None]
HELD = "held"  # a row held is one failure while it lasts: its words say for how long it is
REFUSED = "refused"  # the failures' name of a host's words the store refuses: (REFUSED, host,
# what they are: RECORDS, SAMPLES, GPU_TIME), one failure while any is refused, whatever the
# store says; each kind its own, as the writes that take it again are
RECORDS, SAMPLES, GPU_TIME = "job records", "jobs' usage", "GPU time"


class Lanes:
    def __init__(self, may_act: Callable[[], bool], lease_lost: Callable[[], None],
                 ended: Callable[[], None] = lambda: None):
        self.may_act = may_act
        self.lease_lost = lease_lost  # the store refused a write: another holds the lease
        self.ended = ended
        self._lock = threading.Lock()
        self._running: Dict[str, threading.Thread] = {}
        self._jobs: Dict[str, Set[int]] = {}  # host -> store jobs its running calls act on
        self._queued: Dict[str, List[Tuple[Optional[int], Action]]] = {}
        self.failures = Failures(log, TRIES)  # the scheduler's, its passes' and its lanes'
        self._left: Set[int] = set()  # jobs left for a held row since the last ``mended``
        self._refused_calls: Set[str] = set()  # hosts a call's job record was refused for
        # since the last refused_no_more of RECORDS (a lane's call ends after its pass's)

    def left_locked(self, job_id: int, err: RowsLocked) -> None:
        """A job whose row another session holds (a psql transaction left open on it) is left
        for a later pass, said once while it stays held; what the pass or the lane does for
        the other jobs goes on rather than failing on it."""
        with self._lock:
            self._left.add(job_id)
        self.failures.failed((HELD, job_id), "job %d is left for a later pass: %s" % (
            job_id, err), same=HELD)

    def refused(self, host: str, kind: str, what: str, err: StoreRefused) -> None:
        """The store refused a value ``host``'s agent sent (``what``, of its ``kind``): that
        write is left out, and the others go on, of this host and of every other: one odd
        value of one host's stopped every host's jobs being placed. Said once while the
        store refuses any of the host's ``kind``, with the first refused."""
        self.failures.failed((REFUSED, host, kind), "%s: the store refused what its agent "
                             "said of %s, left out (said once while the store refuses any of "
                             "its %s): %s" % (host, what, kind, err), same=REFUSED)

    def refused_no_more(self, kind: str, hosts: Set[str],
                        written: Optional[Set[str]] = None) -> None:
        """Writes of ``kind`` were just made, ``hosts`` those refused, ``written`` the hosts
        whose values of ``kind`` they held (None: every host's): each other host of them whose
        ``kind`` the store refused before is said to be taken again (nor one a lane's call was
        refused for since the last such word: its calls end after their pass). A host none of
        whose ``kind`` was written is no word on it: said taken again, its refusal was said
        anew at its next value, at every write between two of them."""
        if kind == RECORDS:
            with self._lock:
                hosts, self._refused_calls = hosts | self._refused_calls, set()
        for name in self.failures.failing(REFUSED):
            if name[2] == kind and name[1] not in hosts and (written is None or
                                                             name[1] in written):
                self.failures.worked(name, "%s: the store takes what its agent says of its %s "
                                     "again" % (name[1], kind))

    def mended(self) -> None:
        """Called by a pass that went through, before it starts its calls: a job left for a
        held row since the pass before, and not by this one nor by a call queued or running
        (which may be left again), is said to be left no more."""
        busy = self.in_flight()
        with self._lock:
            left, self._left = self._left, set()
        for name in sorted(self.failures.failing(HELD)):  # (HELD, job id)
            if name[1] not in left and name[1] not in busy:
                self.failures.worked(name, "job %d is left for a later pass no more" % name[1])

    def busy(self, host: str) -> bool:
        """Whether the host's lane still runs an earlier pass's calls."""
        with self._lock:
            return host in self._running

    def in_flight(self) -> Set[int]:
        """Store jobs a call is queued or running for: their state is the lane's to change."""
        with self._lock:
            return {j for jobs in self._jobs.values() for j in jobs} | {
                j for queued in self._queued.values() for j, _ in queued if j is not None}

    def add(self, host: str, action: Action, job: Optional[int] = None) -> bool:
        """Queues a call for this pass; False (nothing queued) if the host's lane is busy."""
        with self._lock:
            if host in self._running:
                return False
            self._queued.setdefault(host, []).append((job, action))
            return True

    def start(self) -> None:
        """Starts the pass's queued calls, each host's on its own thread."""
        with self._lock:
            queued, self._queued = self._queued, {}
            for host, actions in queued.items():
                thread = threading.Thread(target=self._run, args=(host, actions),
                                          name="lane-%s" % host, daemon=True)
                self._running[host] = thread
                self._jobs[host] = {j for j, _ in actions if j is not None}
                thread.start()

    def wait(self, timeout_s: float) -> bool:
        """Waits for the running lanes; whether all ended within ``timeout_s``."""
        with self._lock:
            threads = list(self._running.values())
        for thread in threads:
            thread.join(timeout_s)
        return not any(t.is_alive() for t in threads)

    def _run(self, host: str, actions: List[Tuple[Optional[int], Action]]) -> None:
        failing = False  # a call of this run failed: the host's calls are not said mended
        try:
            for done, (job, action) in enumerate(actions):
                try:
                    may = self.may_act()
                except Exception as err:  # a bug of ours: said (once while it lasts), not
                    # left to threading's hook, and the calls wait for a later pass
                    self.failures.failed("may_act", "whether a call to a host may start is "
                                         "not known (%s: %s); calls wait for a later pass" % (
                                             type(err).__name__, err), logging.ERROR, True)
                    return
                self.failures.worked("may_act", "whether a call to a host may start is known "
                                     "again")
                if not may:
                    log.info("%s to %s not made: the lease is not held long enough",
                             count(len(actions) - done, "call"), host)
                    return
                try:
                    action()
                except AnswerMalformed as err:  # as AnswerLost, but the host answers so
                    # at every pass (in its own words): said once while it does so
                    self.failures.failed(("call", host), "%s; %s waiting for a later pass" % (
                                         err, count(len(actions) - done - 1, "call")),
                                         same="%s %s" % (type(err).__name__, err.method))
                    return
                except HostUnavailable as err:  # its other calls wait for a later pass
                    log.info("%s: %s; %s waiting for a later pass", host, err,
                             count(len(actions) - done - 1, "call"))
                    return
                except RowsLocked as err:  # only what needs the held row waits
                    if job is None:
                        failing = True
                        self.failures.failed(("call", host), "a call to %s waits for a later "
                                             "pass: %s" % (host, err), same=HELD)
                    else:
                        self.left_locked(job, err)
                except StoreRefused as err:  # a value its agent sent (a started job's id,
                    # its GPU's name): that write left out, the host's other calls go on
                    with self._lock:
                        self._refused_calls.add(host)
                    self.refused(host, RECORDS, "job %d" % job if job is not None else
                                 "a call's answer", err)
                except LeaseLost as err:  # another scheduler leads now: the calls are its
                    log.info("%s; %s to %s left to the lease's holder", err,
                             count(len(actions) - done - 1, "call"), host)
                    self.lease_lost()
                    return
                except StoreError as err:
                    self.failures.failed(("call", host), "%s; the calls to %s wait for a "
                                         "later pass" % (err, host), logging.ERROR)
                    return
                except Exception as err:  # a bug of ours: shown in full (once while it
                    # fails so), the host's other calls go on
                    failing = True
                    self.failures.failed(("call", host), "a call to %s failed (%s: %s)" % (
                        host, type(err).__name__, err), logging.ERROR, True)
            if not failing:  # (one call that fails at every pass beside others that work
                # was said mended, and its stack said again, at every pass)
                self.failures.worked(("call", host), "the calls to %s go through again" % host)
        finally:
            with self._lock:
                del self._running[host]
                del self._jobs[host]
            self.ended()
