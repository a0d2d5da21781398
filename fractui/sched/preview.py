"""Every place a pending job could go now, each with its plan in words and its score: what the
TUI's placement mode moves a ghost across, and what ``fractui place`` records. Pure.

A MIG candidate is planned against the GPU's real layout (idle instances included, so the plan
says which idle ones it destroys; one on an idle instance of its profile that no job holds
says the launch reuses it as it is) and carries that layout's version: the launch is refused if
the GPU changed in between, so what was previewed is what happens. The score is the fleet
fragmentation the placement spares (FGD's ΔF, against the mix of requests waiting now): higher
is better; the scheduler's own choice is marked. Nothing on a host or GPU out of service (the
store's cordons) is a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from remote_agent.mig import planner
from remote_agent.mig.layout import Layout

from fractui.sched import mig, topology
from fractui.sched.cordons import fenced
from fractui.sched.fleetview import (ACTIVE_AGENT_STATES, HostView, build_hosts, gpu_layout,
                                     placement_charge, request_of, share_mib)
from fractui.sched.mig_change import flip_words
from fractui.sched.model import MILLI, Host, Request
from fractui.sched.place import Placer, TypicalClass, host_frag, typical_classes
from fractui.sched.queueing import POLICY
from fractui.store.model import PENDING, Cordon, Job, Slot


@dataclass(frozen=True)
class Candidate:
    host: str
    gpus: Tuple[int, ...]
    profile: Optional[str]
    start: Optional[int]
    memory_mib: Optional[int]
    charge: float
    score: float
    plan: str
    layout_version: Optional[str] = None
    chosen: bool = False
    pending: bool = False
    """On a GPU whose MIG mode change is pending: judged as ``fractui place`` judges it
    (``manual.by_hand``), its launch making or undoing the change; not scored."""
    refusal: Optional[str] = None
    """Why its launch would be refused (``fractui place``'s words): shown, never recorded."""
    turns: Optional[bool] = None
    """The MIG mode its launch turns the GPU to first (True: on, False: off; a reset on some
    models), as its plan says; None: it keeps the GPU's mode."""

    def slot(self) -> Slot:
        """The decision to record if the admin confirms this candidate."""
        return Slot(self.host, self.gpus, self.profile, self.start, self.memory_mib,
                    self.charge, self.layout_version)


def candidates(views: Sequence[HostView], jobs: Sequence[Job], store_uid: str,
               job: Job, cordons: Sequence[Cordon] = ()) -> List[Candidate]:
    """Where ``job`` could run now, best first (the scheduler's choice marked ``chosen``)."""
    req = request_of(job)
    hosts = fenced(build_hosts(views, jobs, store_uid), cordons)
    waiting = [request_of(j) for j in jobs if j.state == PENDING and j.id != job.id]
    classes = typical_classes(waiting + [req])
    choice = Placer(hosts, POLICY, classes).place(req)
    by_name = {v.name: v for v in views}
    found: List[Candidate] = []
    for host in hosts:
        if host.cpu_free < req.cpu_milli or host.memory_free < req.memory_mib or (
                req.hosts and host.name not in req.hosts):
            continue
        found += _on_host(host, by_name[host.name], req, classes)
    if choice is not None:
        chosen = (choice.host, tuple(choice.gpus),
                  next((p.start for p in choice.plans if p), None))
        found = [c if (c.host, c.gpus, c.start) != chosen else _mark(c) for c in found]
    return sorted(found, key=lambda c: (not c.chosen, -c.score, c.host, c.gpus, c.start or 0))


def _mark(c: Candidate) -> Candidate:
    return replace(c, chosen=True)


def _kinds_keys(host: Host) -> Tuple[tuple, tuple]:
    kinds = tuple((g.model, g.memory_mib, g.layout.geometry if g.layout else None)
                  for g in host.gpus)
    keys = tuple(g.free_milli if g.layout is None else mig.signature(g.layout)
                 for g in host.gpus)
    return kinds, keys


def _on_host(host: Host, view: HostView, req: Request,
             classes: Sequence[TypicalClass]) -> List[Candidate]:
    kinds, keys = _kinds_keys(host)
    before = host_frag(kinds, host.cpu_free, keys, classes)
    cpu_after = host.cpu_free - req.cpu_milli
    records = view.gpu_records()
    active = [j for j in view.jobs.values() if j.get("state") in ACTIVE_AGENT_STATES]

    def score(after: tuple) -> float:
        return round((before - host_frag(kinds, cpu_after, after, classes)) / 1000, 3)

    def flipped(g: int, kind: tuple, after: Any) -> float:
        """The score of a slot on GPU ``g`` once its MIG mode changed to ``kind``."""
        return round((before - host_frag(kinds[:g] + (kind,) + kinds[g + 1:], cpu_after,
                                         keys[:g] + (after,) + keys[g + 1:], classes)) / 1000,
                     3)

    out: List[Candidate] = []
    shares: List[Tuple[int, int]] = []  # (gpu, milli) of GPUs without MIG that fit
    for g, gpu in enumerate(host.gpus):
        if gpu.layout is not None:
            out += _mig_candidates(host, g, records[g], active, req, keys, score)
            if gpu.mig_geometry is not None and not req.gpus:
                out += _share_after_mig_off(host, g, req, flipped)
            continue
        milli = req.share_milli(gpu.model, gpu.memory_mib)
        if milli and gpu.free_milli >= milli:
            shares.append((g, milli))
        if gpu.mig_geometry is not None:
            out += _slices_after_mig_on(host, g, req, flipped)
    if req.gpus:
        if len(shares) >= req.gpus:
            chosen = set(topology.pick(host.links, [g for g, _ in shares], req.gpus))
            picked = [(g, m) for g, m in shares if g in chosen]
            after = list(keys)
            for g, m in picked:
                after[g] = keys[g] - m
            gpus = tuple(g for g, _ in picked)
            mib = share_mib(req, host.gpus[gpus[0]].memory_mib, picked[0][1])
            link = topology.explain(host.links, gpus)
            out.append(Candidate(host.name, gpus, None, None, mib,
                                 placement_charge(host, gpus, None, mib),
                                 score(tuple(after)),
                                 "whole gpu%s of %s%s" % (",".join(map(str, gpus)), host.name,
                                                          ": " + link if link else "")))
        return out
    for g, m in shares:
        gpu = host.gpus[g]
        mib = share_mib(req, gpu.memory_mib, m)
        free = gpu.free_milli * gpu.memory_mib // 1000
        out.append(Candidate(host.name, (g,), None, None, mib,
                             placement_charge(host, (g,), None, mib),
                             score(keys[:g] + (keys[g] - m,) + keys[g + 1:]),
                             "a %d MiB share of gpu%d of %s (%d of %d MiB free)" % (
                                 mib, g, host.name, free, gpu.memory_mib)))
    return out


def _mig_candidates(host: Host, g: int, rec: Dict[str, Any], active: List[Dict[str, Any]],
                    req: Request, keys: tuple, score: Callable[[tuple], float]
                    ) -> List[Candidate]:
    gpu = host.gpus[g]
    layout: Layout = gpu.layout  # type: ignore[assignment]
    geo = layout.geometry
    if req.models and gpu.model not in req.models:
        return []
    profile = mig.profile_for(req, geo)
    full = gpu_layout(rec, active)
    if profile is None or full is None:
        return []
    out = []
    for start in profile.starts:
        try:
            after = mig.after(geo, keys[g], profile.name, start)
            where = "on gpu%d of %s" % (g, host.name)
            if (profile.name, start) in gpu.idle_instances:  # the launch takes it as it is
                steps = _reuse_words(full, profile.name, start, where)
            else:
                made = "create %s at slot %d" % (profile.name, start)
                steps = planner.plan(full, profile.name, start=start, destroy_idle=True
                                     ).describe().replace(made, "%s %s" % (made, where))
        except planner.PlanError:
            continue
        out.append(Candidate(host.name, (g,), profile.name, start, None,
                             placement_charge(host, (g,), profile.name, None),
                             score(keys[:g] + (after,) + keys[g + 1:]), steps,
                             rec.get("layout_version")))
    return out


def _reuse_words(full: Layout, profile: str, start: int, where: str) -> str:
    """The plan in words on an idle instance of ``profile`` at ``start`` that no job holds
    (``Gpu.idle_instances``): the launch takes it as it is, with no MIG change."""
    twin = next(i for i in full.instances if (i.profile, i.start) == (profile, start))
    return "reuses the idle %s %s as it is; no MIG change" % (twin.label(), where)


def _slices_after_mig_on(host: Host, g: int, req: Request,
                         flipped: Callable[[int, tuple, Any], float]) -> List[Candidate]:
    """A MIG slice on an idle GPU whose MIG mode is off: every start of its profile on the
    empty GPU, once MIG is turned on (the launch turns it on first)."""
    gpu = host.gpus[g]
    geo = gpu.mig_geometry
    assert geo is not None
    profile = mig.profile_for(req, geo) if not (req.models and gpu.model not in req.models) \
        else None
    if profile is None:
        return []
    empty = mig.signature(Layout(geo, ()))
    first = flip_words("gpu%d of %s" % (g, host.name), True, gpu.mode_reset)
    out = []
    for start in profile.starts:
        try:
            after = mig.after(geo, empty, profile.name, start)
        except planner.PlanError:
            continue
        out.append(Candidate(host.name, (g,), profile.name, start, None,
                             placement_charge(host, (g,), profile.name, None),
                             flipped(g, (gpu.model, gpu.memory_mib, geo), after),
                             "%s, then create %s at slot %d on gpu%d of %s" % (
                                 first, profile.name, start, g, host.name), turns=True))
    return out


def _share_after_mig_off(host: Host, g: int, req: Request,
                         flipped: Callable[[int, tuple, Any], float]) -> List[Candidate]:
    """A memory share of an idle MIG GPU, once MIG is turned off (its idle instances
    destroyed first: the launch does both)."""
    gpu = host.gpus[g]
    milli = req.share_milli(gpu.model, gpu.memory_mib)
    if not milli:
        return []
    mib = share_mib(req, gpu.memory_mib, milli)
    return [Candidate(host.name, (g,), None, None, mib, placement_charge(host, (g,), None, mib),
                      flipped(g, (gpu.model, gpu.memory_mib, None), MILLI - milli),
                      "%s, then a %d MiB share of gpu%d of %s (%d of %d MiB free)" % (
                          flip_words("gpu%d of %s" % (g, host.name), False, gpu.mode_reset),
                          mib, g, host.name, gpu.memory_mib, gpu.memory_mib), turns=False)]
