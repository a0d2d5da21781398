"""The lease holder's hands: launch recorded decisions on the agents, send stops, and reflect
what the agents report back into the store.

Every launch carries the job's key (store uid, job id, attempt), so running a decision twice —
after a crash between the launch and its record — gives the same job, never a second copy.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, Optional, Set, Tuple

from remote_agent.rpc.jsonrpc import STALE_LAYOUT

from fractui.fleet.client import AgentCallError
from fractui.fleet.host import HostUnavailable
from fractui.sched import mig
from fractui.sched.fleetview import HostView, build_hosts, geometry, request_of, share_mib
from fractui.store.base import StateConflict, Store
from fractui.store.model import (CANCELLED, DONE, FAILED, PLACED, RUNNING, STOPPING, Job,
                                 Slot)

log = logging.getLogger("fractui.scheduler")

AGENT_ENDED = ("exited", "killed", "lost")
Call = Callable[[str, str, Dict[str, Any]], Any]  # (host, method, params) -> result


class LaunchRefused(Exception):
    """The decision cannot run as recorded (the agent refused it, or it names no such GPU)."""


def resolve(job: Job, view: HostView, store_uid: str, jobs: list) -> Slot:
    """A manual decision completed from the live GPU: the profile the request takes there, the
    start the planner picks, or the share in MiB. What was recorded is kept as it is."""
    slot = job.slot
    assert slot is not None
    gpus = view.gpu_records()
    if not slot.gpus or any(g >= len(gpus) for g in slot.gpus):
        raise LaunchRefused("%s has no GPU %s" % (view.name, ",".join(map(str, slot.gpus))))
    rec = gpus[slot.gpus[0]]
    req = request_of(job)
    if rec.get("mig_mode"):
        geo = geometry(rec.get("name") or "")
        if geo is None:
            raise LaunchRefused("GPU %d of %s is a MIG model fractui does not know (%s)" % (
                slot.gpus[0], view.name, rec.get("name")))
        profile = slot.profile
        if profile is None:
            found = mig.profile_for(req, geo)
            if found is None:
                raise LaunchRefused("no MIG profile of %s holds what queue %s asks for" % (
                    rec.get("name"), job.queue))
            profile = found.name
        start = slot.start
        if start is None:
            host = next(h for h in build_hosts([view], [j for j in jobs if j.id != job.id],
                                               store_uid))
            layout = host.gpus[slot.gpus[0]].layout
            start = mig.best_start(geo, mig.signature(layout), profile) if layout else None
            if start is None:
                raise LaunchRefused("no room for %s on GPU %d of %s" % (profile, slot.gpus[0],
                                                                         view.name))
        p = geo.profile(profile)
        share = (p.compute_slices / geo.compute_slices) if p else 0.0
        return Slot(slot.host, slot.gpus, profile, start, None, round(share, 6),
                    slot.layout_version)
    if slot.profile:
        raise LaunchRefused("GPU %d of %s has MIG off: it takes memory shares, not %s" % (
            slot.gpus[0], view.name, slot.profile))
    memory = int(rec.get("memory_mib") or 0)
    mib = slot.memory_mib or share_mib(req, memory, req.milli)
    charge = float(len(slot.gpus)) if req.gpus else round(mib / memory, 6) if memory else 0.0
    return Slot(slot.host, slot.gpus, None, None, mib, charge)


def launch_params(job: Job, store_uid: str) -> Dict[str, Any]:
    slot = job.slot
    assert slot is not None
    params: Dict[str, Any] = {"key": job.key(store_uid), "argv": list(job.argv),
                              "name": job.name, "env": {"FRACTUI_STORE_JOB": str(job.id)}}
    if job.cwd:
        params["cwd"] = job.cwd
    if slot.profile:
        mig_params = {"profile": slot.profile, "start": slot.start, "destroy_idle": True}
        if slot.layout_version:
            mig_params["layout_version"] = slot.layout_version
        params.update(gpu=slot.gpus[0], mig=mig_params)
    else:
        params.update(gpus=list(slot.gpus), memory_mib=slot.memory_mib)
    return params


class Executor:
    """Acts for the lease holder; remembers which stops it sent so each is sent once."""

    def __init__(self, store: Store, call: Call, actor: str, grace_s: float):
        self.store = store
        self.call = call
        self.actor = actor
        self.grace_s = grace_s
        self._stops_sent: Set[Tuple[str, str]] = set()

    def launch(self, job: Job, view: HostView, jobs: list) -> bool:
        """Runs one decision. Returns whether the host refused the job (it went back to its
        queue with the reason, and should avoid that host for a while)."""
        uid = self.store.uid
        try:
            slot = resolve(job, view, uid, jobs) if job.manual else job.slot
            if slot != job.slot:
                job = self.store.change(job.id, (PLACED,), slot=slot)
            record = self.call(view.name, "job.launch", launch_params(job, uid))
        except HostUnavailable as err:
            log.info("job %d waits for %s: %s", job.id, view.name, err)
            return False  # kept placed: the lost-host timeout requeues it if the host stays away
        except (AgentCallError, LaunchRefused) as err:
            stale = isinstance(err, AgentCallError) and err.code == STALE_LAYOUT
            if stale:  # the host is fine, the preview was not: nothing to avoid
                why = "not launched: the GPU changed since the placement was previewed " \
                      "(%s); preview it again" % err
            else:
                why = "launch refused on %s: %s" % (view.name, err)
            self.store.requeue(job.id, (PLACED,), self.actor, why)
            return not stale
        try:
            self.store.change(job.id, (PLACED,), self.actor, "started on %s" % slot.describe(),
                              "launch", state=RUNNING, agent_job=record.get("id"),
                              started_at=record.get("started_at"), reason=None)
        except StateConflict:
            pass  # cancelled or reflected meanwhile; the next pass sees the agent's record
        return False

    def stop(self, host: str, agent_job: str, key: str, reason: str,
             grace_s: Optional[float] = None) -> None:
        """Sends one stop for a job copy (once per scheduler run)."""
        if (host, key) in self._stops_sent:
            return
        grace = self.grace_s if grace_s is None else grace_s
        try:
            self.call(host, "job.stop", {"job": agent_job, "grace": math.ceil(grace),
                                         "reason": reason})
        except HostUnavailable as err:
            log.info("stopping %s on %s waits: %s", key, host, err)
            return
        except AgentCallError as err:
            log.warning("stopping %s on %s: %s", key, host, err)
        self._stops_sent.add((host, key))

    def reflect(self, job: Job, view: HostView) -> None:
        """Brings one on-host job of the store in line with its agent record."""
        key = job.key(self.store.uid)
        rec = view.by_key().get(key)
        if rec is None:
            if job.state == STOPPING:
                self.finish_stop(job, None)
            elif job.state == RUNNING:
                self.store.change(job.id, (RUNNING,), self.actor, "the agent on %s has no "
                                  "record of it" % view.name, "lost", state=FAILED,
                                  reason="the agent on %s has no record of it" % view.name)
            return
        state = rec.get("state")
        if state in AGENT_ENDED:
            if job.state == STOPPING:
                self.finish_stop(job, rec)
            else:
                self._ended(job, rec)
        elif job.state == PLACED:  # launched by a scheduler that died before recording it
            self.store.change(job.id, (PLACED,), self.actor, "found running on %s" %
                              job.slot.describe(), "launch",  # type: ignore[union-attr]
                              state=RUNNING, agent_job=rec.get("id"),
                              started_at=rec.get("started_at"))
        elif job.state == STOPPING:
            self.stop(view.name, rec["id"], key, job.reason or "stopped by fractui")

    def _ended(self, job: Job, rec: Dict[str, Any]) -> None:
        code = rec.get("exit_code")
        ok = rec.get("state") == "exited" and code == 0
        why = "exited 0" if ok else rec.get("reason") or (
            "exited %s" % code if code is not None else rec.get("state"))
        self.store.change(job.id, (PLACED, RUNNING), self.actor, why, "end",
                          state=DONE if ok else FAILED, reason=None if ok else why,
                          exit_code=code, ended_at=rec.get("ended_at"))

    def finish_stop(self, job: Job, rec: Optional[Dict[str, Any]]) -> None:
        """A stop completed: cancelled, or back to the queue for a requeue or a preemption."""
        if job.stop_intent == "cancel":
            self.store.change(job.id, (STOPPING,), self.actor, job.reason or "cancelled",
                              "end", state=CANCELLED, ended_at=(rec or {}).get("ended_at"))
        else:
            self.store.requeue(job.id, (STOPPING,), self.actor, job.reason or "requeued")

