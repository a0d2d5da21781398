"""The lease holder's usage bookkeeping: each GPU's time (fractui.usage.gputime) written to the
store once a minute, what the agents sampled of running jobs read once a refresh period (a
``job.list`` on each host's lane, never on the pass) and kept on their usage records, and usage
older than the retention forgotten once an hour. The records themselves are opened and closed
by the store with each job's change (fractui.store.usage_rows)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Sequence, Set, Tuple

from fractui.config import UsageSettings
from fractui.fleet.client import AgentCallError
from fractui.fleet.host import HostUnavailable
from fractui.sched.fleetview import USABLE, HostView
from fractui.scheduler.lanes import GPU_TIME, HELD, REFUSED, SAMPLES, Lanes
from fractui.store.base import (LeaseLost, RowsLocked, Store, StoreDamaged, StoreError,
                                 StoreRefused)
from fractui.store.model import RUNNING, GpuTime, Job, Sampled
from fractui.usage.gputime import FLUSH_S, GpuClock
from fractui.words import count

log = logging.getLogger("fractui.scheduler")

LOOK_S = 5.0  # seconds between two looks at every GPU (cheaper than one per pass)
PRUNE_S = 3600.0  # seconds between prunes of old usage

Call = Callable[[str, str, Dict[str, Any]], Any]


class UsageKeeper:
    def __init__(self, settings: UsageSettings, store: Store, call: Call, lanes: Lanes,
                 clock: Callable[[], float] = time.time,
                 ticks: Callable[[], float] = time.monotonic):
        """``clock`` dates what is kept (the store's clock as the lease holder reads it,
        ``Scheduler._store_now``: `report` and the retention read GPU time by the store's);
        ``ticks`` times when each thing is due again (the
        monotonic clock: a wall clock set back stops none of them)."""
        self.settings = settings
        self.store = store
        self.call = call
        self.lanes = lanes
        self.clock = clock
        self.ticks = ticks
        self.gpus = GpuClock(settings.bucket_s)
        self._looked = self._flushed = self._refreshed = self._pruned = float("-inf")
        self._lock = threading.Lock()
        self._sampled: Dict[Tuple[int, int], Tuple[str, Sampled]] = {}
        """(job, attempt) -> its host and what its agent sampled: read on the lanes, not yet
        kept."""

    def turn(self, views: Callable[[], List[HostView]], jobs: Callable[[], Sequence[Job]],
             epoch: int) -> None:
        """What is due this turn of a lease holder: a look, a write, a refresh, a prune.
        ``views`` and ``jobs`` are read only when a look is due."""
        tick = self.ticks()
        if tick - self._looked >= LOOK_S:
            self._looked = tick
            seen, active = views(), jobs()
            self.gpus.observe(seen, active, self.clock())
            if tick - self._refreshed >= self.settings.refresh_s:
                self._refreshed = tick
                self._refresh(seen, active)
        if tick - self._flushed >= min(FLUSH_S, self.settings.bucket_s):
            self._flushed = tick
            self._write(epoch)
        if tick - self._pruned >= PRUNE_S:
            self._pruned = tick
            # by the store's clock, read now (once an hour): the ends it cuts are its times
            gone = self.store.prune_usage(self.store.now() - self.settings.keep_days * 86400,
                                          epoch=epoch)
            if gone:
                log.info("forgot %s older than %s", count(gone, "usage row"),
                         count(self.settings.keep_days, "day"))

    def taken_over(self) -> None:
        """The lease is newly this holder's: what it saw before is not counted (another
        holder counted that time), and every GPU is looked at afresh."""
        self.gpus = GpuClock(self.settings.bucket_s)
        with self._lock:
            self._sampled = {}

    def _refresh(self, views: List[HostView], jobs: Sequence[Job]) -> None:
        """Asks each host with running jobs of the store for their records (on its lane). A
        host whose read failed and that runs none of them now is read no more: said so, as a
        read that goes through is, so its failure does not stand in the log for ever."""
        running: Dict[str, Dict[str, Job]] = {}
        uid = self.store.uid
        for job in jobs:
            if job.state == RUNNING and job.slot is not None:
                running.setdefault(job.slot.host, {})[job.key(uid)] = job
        for name in self.lanes.failures.failing("usage"):
            if name[1] not in running:
                self.lanes.failures.worked(name, "the running jobs' usage on %s is no longer "
                                           "read: none of the store's runs there" % name[1])
        for view in views:
            if view.state in USABLE and view.name in running:
                self.lanes.add(view.name, lambda host=view.name: self._read(
                    host, running[host]))

    def _read(self, host: str, mine: Dict[str, Job]) -> None:
        try:
            records = self.call(host, "job.list", {"state": "running"}).get("jobs") or []
        except (AgentCallError, HostUnavailable) as err:  # said once while it fails so (a
            # malformed answer or one lost too: left to the lanes, a line at every refresh)
            self.lanes.failures.failed(("usage", host), "reading the running jobs' usage on "
                                       "%s: %s; read again every %g s" % (
                                           host, err, self.settings.refresh_s),
                                       same="%s %s" % (type(err).__name__,
                                                       getattr(err, "code", "")))
            return
        self.lanes.failures.worked(("usage", host), "the running jobs' usage on %s is read "
                                   "again" % host)
        found = {}
        for rec in records:
            job = mine.get(rec.get("key")) if isinstance(rec, dict) else None
            sampled = Sampled.of(rec.get("usage")) if job is not None else None
            if job is not None and sampled is not None and sampled.samples:
                found[job.id, job.attempt] = (host, sampled)
        with self._lock:
            self._sampled.update(found)

    def _write(self, epoch: int) -> None:
        with self._lock:
            sampled, self._sampled = self._sampled, {}
        rows = self.gpus.take()
        timed = {r.host for r in rows}  # (taken out of ``rows`` as they are kept)
        refused: Dict[str, Set[str]] = {SAMPLES: set(), GPU_TIME: set()}  # the hosts whose
        # words the store refused, left out
        try:
            left = self._keep_sampled(sampled, epoch, refused[SAMPLES])
            self._keep_gpu_time(rows, epoch, refused[GPU_TIME])
        except LeaseLost:
            raise  # another holder counts from now
        except StoreError as err:  # kept for the next write (newer samples first)
            self.lanes.failures.failed("usage write", "%s; the GPU time and the jobs' samples "
                                       "are written next time" % err, logging.ERROR)
            for row in rows:
                self.gpus.add(row)
            left = sampled
        else:
            self.lanes.failures.worked("usage write", "the GPU time and the jobs' samples are "
                                       "written again")
            self.lanes.refused_no_more(SAMPLES, refused[SAMPLES], {
                host for key, (host, _) in sampled.items() if key not in left})
            self.lanes.refused_no_more(GPU_TIME, refused[GPU_TIME], timed)
        with self._lock:
            self._sampled = {**left, **self._sampled}

    def _keep_sampled(self, sampled: Dict[Tuple[int, int], Tuple[str, Sampled]], epoch: int,
                      refused: Set[str]) -> Dict[Tuple[int, int], Tuple[str, Sampled]]:
        """Keeps the jobs' samples, in one write; where a usage record's row is held by
        another session, or the store refuses a value a host sent, one job at a time, so only
        the held one waits and only the refused one is left out (its host added to
        ``refused``). Returns those not kept, to be kept by a later write."""
        failures = self.lanes.failures  # a held record is said once while it stays held
        try:
            self.store.keep_usage({k: s for k, (_, s) in sampled.items()}, epoch=epoch)
            left: Dict[Tuple[int, int], Tuple[str, Sampled]] = {}
        except (RowsLocked, StoreRefused):  # which one it is is found one by one
            left = {}
            for key, (host, each) in sampled.items():
                try:
                    self.store.keep_usage({key: each}, epoch=epoch)
                except RowsLocked as err:
                    failures.failed(("usage record", key), "job %d's usage is kept by a later "
                                    "write: %s" % (key[0], err), same=HELD)
                    left[key] = (host, each)
                except StoreRefused as err:
                    refused.add(host)
                    self.lanes.refused(host, SAMPLES, "job %d's usage" % key[0], err)
        for key in set(sampled) - set(left):
            failures.worked(("usage record", key), "job %d's usage is kept again" % key[0])
        return left

    def _keep_gpu_time(self, rows: List[GpuTime], epoch: int, refused: Set[str]) -> None:
        """Keeps the GPUs' time, in one write; where the store refuses a value a host sent (its
        GPU's model), host by host, that host's left out (added to ``refused``). Each host's
        kept or refused one by one is taken out of ``rows``: where a later host's write fails,
        those left are what a later write keeps (put back whole, the hosts kept before the
        failure were counted twice: the GPU time is added to what is kept)."""
        try:
            self.store.keep_gpu_time(rows, epoch=epoch)
        except (StoreRefused, StoreDamaged):  # (one host's row of a bucket damaged: put
            # back, the bucket's every write failed, and every GPU's time waited for ever)
            for host in sorted({r.host for r in rows}):
                try:
                    self.store.keep_gpu_time([r for r in rows if r.host == host], epoch=epoch)
                except StoreRefused as err:
                    refused.add(host)
                    self.lanes.refused(host, GPU_TIME, "its GPUs' time", err)
                except StoreDamaged as err:
                    refused.add(host)
                    self.lanes.failures.failed((REFUSED, host, GPU_TIME), "%s: its GPUs' time "
                                               "is left out while the store holds a damaged "
                                               "row of it (said once while it does): %s" % (
                                                   host, err), logging.ERROR, same=REFUSED)
                rows[:] = [r for r in rows if r.host != host]
