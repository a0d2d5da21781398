"""The scheduler service: one pass a second (or sooner when woken) while it holds the lease.

A pass, in order: reflect the agents' job records into the store; requeue the jobs of hosts
lost for longer than ``host_lost_s`` (recording their copies as stale); stop stale copies on
hosts that came back, before anything new is placed there; send the stops the store asks for
(cancel, requeue, preemption); decide where pending jobs go (fractui.sched.queueing) and record
the decisions; then execute every recorded decision. Decisions are durable before they run, so
a scheduler killed at any point leaves nothing a restarted one cannot finish.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from fractui.config import Config
from fractui.fleet.fleet import Fleet
from fractui.sched.fleetview import USABLE, HostView, facts
from fractui.sched.queueing import schedule
from fractui.scheduler.execute import AGENT_ENDED, Executor
from fractui.store.base import StateConflict, Store
from fractui.store.model import (ACTIVE, CANCELLED, ON_HOST, PENDING, PLACED, RUNNING,
                                 STOPPING, Job, StaleCopy)

log = logging.getLogger("fractui.scheduler")

REFUSED_FOR_S = 60.0  # a host that refused a job is left out for it this long
FENCE_WAIT_S = 10.0  # how long a returning host's connect waits for its stale copies to end


def _stale_why(copy: StaleCopy) -> str:
    return "a stale copy: job %d was requeued while %s was lost" % (copy.job, copy.host)


def default_holder() -> str:
    return "%s@%s:%d" % (getpass.getuser(), socket.gethostname(), os.getpid())


class Scheduler:
    """Places and runs the store's jobs on the fleet while it holds the store's lease; a
    second one waits as a standby and takes over when the lease expires."""

    def __init__(self, config: Config, store: Store, fleet: Fleet, name: Optional[str] = None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.settings = config.scheduler
        self.store = store
        self.fleet = fleet
        self.holder = name or default_holder()
        self.clock = clock
        self.leader = False
        self._renewed = 0.0
        self.executor = Executor(store, self._call, self.holder, self.settings.preempt_grace_s)
        self._refused: Dict[int, Dict[str, float]] = {}  # job -> host -> until
        self._away: Dict[str, float] = {}  # host -> when a pass first saw it unreachable
        self._inventory: Dict[str, Dict[str, Any]] = {}  # host -> facts this one recorded
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        for session in fleet.sessions.values():
            session.connect_hooks.append(self._fence_returning)

    # -- running --

    def start(self) -> "Scheduler":
        self._thread = threading.Thread(target=self.run, name="scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Ends the loop; ``release`` hands the lease over at once (a clean shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if release:
            self.store.release_lease(self.holder)
            self.leader = False

    def wake(self, *_: Any) -> None:
        """Run a pass now (e.g. on a fleet change); safe from any thread."""
        self._wake.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # one bad pass must not end the service: log it, try again
                log.exception("scheduling pass failed")
            self._wake.wait(self.settings.interval_s)
            self._wake.clear()

    # -- one pass --

    def step(self) -> bool:
        """One pass; returns whether this scheduler holds the lease (and so acted)."""
        if not self._renew(force=True):
            return False
        views = self._views()
        self._record_inventory(views)
        by_name = {v.name: v for v in views}
        jobs = self.store.jobs(ACTIVE)
        for job in jobs:
            view = by_name.get(job.slot.host) if job.slot else None
            if job.state in ON_HOST and view is not None and view.state in USABLE:
                self.executor.reflect(job, view)
            elif job.state == STOPPING and job.slot is None:
                self.executor.finish_stop(job, None)
        self._requeue_lost(views)
        recovering = self._stop_stale(by_name)
        jobs = self.store.jobs(ACTIVE)
        self._decide([replace(v, state="recovering") if v.name in recovering else v
                      for v in views], jobs)
        jobs = self.store.jobs(ACTIVE)
        for job in jobs:
            if job.state != PLACED or job.slot is None:
                continue
            if not self._renew():
                return False  # a long pass outlived the lease: another scheduler acts now
            view = by_name.get(job.slot.host)
            if view is None or view.state not in USABLE:
                continue  # waits; requeued if its host stays lost
            if self.executor.launch(job, view, jobs):
                self._refused.setdefault(job.id, {})[view.name] = self.clock() + REFUSED_FOR_S
        return True

    def _renew(self, force: bool = False) -> bool:
        """Takes or renews the lease: every pass, and within a long pass once a third of it
        has gone, so nothing is launched by a scheduler whose lease may have passed on."""
        now = self.clock()
        if force or now - self._renewed > self.settings.lease_s / 3:
            self.leader = self.store.acquire_lease(self.holder, self.settings.lease_s)
            self._renewed = now
        return self.leader

    def _views(self) -> List[HostView]:
        return [HostView.of(s) for s in self.fleet.statuses()]

    def _record_inventory(self, views: List[HostView]) -> None:
        """Keeps each reachable host's lasting facts in the store (written only when they
        change), so ``submit`` can check a request without reaching the fleet."""
        self.store.keep_inventory({v.name: facts(v) for v in views
                                   if v.state in USABLE and v.hello}, self._inventory)

    def _call(self, host: str, method: str, params: Dict[str, Any]) -> Any:
        return self.fleet.session(host).call(method, params)

    def _requeue_lost(self, views: List[HostView]) -> None:
        """Jobs of a host unreachable for longer than host_lost_s go back to their queues; what
        may still run there is recorded as stale, to be stopped when the host returns. Away
        time is this scheduler's own observation, from the first pass that saw the host gone."""
        now = self.clock()
        for view in views:
            if view.state in USABLE:
                self._away.pop(view.name, None)
            else:
                self._away.setdefault(view.name, now)
        lost = {h: now - since for h, since in self._away.items()
                if now - since > self.settings.host_lost_s}
        if not lost:
            return
        for job in self.store.jobs(ON_HOST):
            host = job.slot.host if job.slot else None
            if host not in lost:
                continue
            why = "host %s lost for %.0f s" % (host, lost[host])
            try:
                if job.state == STOPPING and job.stop_intent == "cancel":
                    # it ends cancelled; a copy still running there is stopped on return
                    self.store.requeue(job.id, (STOPPING,), self.holder, why, stale_on=host)
                    self.store.change(job.id, (PENDING,), self.holder, why, "end",
                                      state=CANCELLED)
                else:
                    self.store.requeue(job.id, ON_HOST, self.holder, why, stale_on=host)
            except StateConflict:
                continue

    def _fence_returning(self, host: str, call: Callable[..., Any],
                         jobs: Dict[str, Dict[str, Any]]) -> None:
        """A host that comes back kills its stale copies before it counts as back at all: the
        fleet runs this on reconnect, before the host is online, so no moment exists after its
        return when the old copy and the requeued one both run."""
        if not self.leader:
            return  # the lease holder's own connection does it
        by_key = {j.get("key"): j for j in jobs.values()}
        for copy in self.store.stale(host):
            rec = by_key.get(copy.key)
            if rec is not None and rec.get("state") not in AGENT_ENDED:
                call("job.stop", {"job": rec["id"], "grace": 0, "reason": _stale_why(copy)})
                deadline = time.monotonic() + FENCE_WAIT_S
                while rec.get("state") not in AGENT_ENDED and time.monotonic() < deadline:
                    time.sleep(0.05)
                    rec = call("job.get", {"job": rec["id"]})
                if rec.get("state") not in AGENT_ENDED:
                    continue  # left to the passes, which keep the host from new work
            self.store.drop_stale(host, copy.key, self.holder, "the copy left on %s is not "
                                  "running" % host)

    def _stop_stale(self, by_name: Dict[str, HostView]) -> Set[str]:
        """Kills the copies left on hosts that came back (no grace: their work was redone
        elsewhere). Returns the hosts still running one: they take no new work until then."""
        recovering = set()
        for copy in self.store.stale():
            view = by_name.get(copy.host)
            if view is None or view.state not in USABLE:
                continue
            rec = view.by_key().get(copy.key)
            if rec is None or rec.get("state") in AGENT_ENDED:
                self.store.drop_stale(copy.host, copy.key, self.holder,
                                      "the copy left on %s is not running" % copy.host)
            else:
                recovering.add(copy.host)
                self.executor.stop(copy.host, rec["id"], copy.key, _stale_why(copy),
                                   grace_s=0)
        return recovering

    def _decide(self, views: List[HostView], jobs: List[Job]) -> None:
        now = self.clock()
        refused: Dict[int, Tuple[str, ...]] = {}
        for job_id, hosts in list(self._refused.items()):
            live = tuple(h for h, until in hosts.items() if until > now)
            if live:
                refused[job_id] = live
            else:
                del self._refused[job_id]
        result = schedule(views, jobs, self.config.queues, self.config.teams, self.store.uid,
                          refused)
        for d in result.decisions:
            try:
                self.store.change(d.job, (PENDING,), self.holder, d.why, "decide",
                                  state=PLACED, slot=d.slot, preemptible=d.preemptible,
                                  reason=None)
            except StateConflict:
                continue  # cancelled or placed by hand meanwhile
        for p in result.preemptions:
            try:
                self.store.change(p.victim, (RUNNING,), self.holder, p.why, "preempt",
                                  state=STOPPING, stop_intent="preempt", reason=p.why)
            except StateConflict:
                continue
        reasons = {j.id: j.reason for j in jobs}
        for job_id, why in result.waiting.items():
            if reasons.get(job_id) != why:
                try:
                    self.store.change(job_id, (PENDING,), reason=why)
                except StateConflict:
                    continue
