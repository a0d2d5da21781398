"""Requests onto MIG GPUs: which profile a request needs, and where the agent's planner would put
it. The rules themselves are the planner's (remote_agent.mig), imported, never copied."""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Optional, Tuple

from remote_agent.gpu.models import mig_geometry, models
from remote_agent.mig import planner
from remote_agent.mig.layout import Geometry, Instance, Layout, Profile

from fractui.sched.model import Request

# A MIG GPU's state as the placer keys it: (profile, start, busy) per instance, sorted.
Signature = Tuple[Tuple[str, int, bool], ...]
# Idle instances a layout leaves out (``Gpu.idle_instances``): (profile, start) each, sorted.
Idle = Tuple[Tuple[str, int], ...]


def _plain(geo: Geometry) -> Tuple[Profile, ...]:
    """Profiles a request can be given by size alone (media-extension variants are asked for by
    name only)."""
    return tuple(p for p in geo.profiles if "+" not in p.name)


@lru_cache(maxsize=4096)
def profile_for_fraction(geo: Geometry, f: float) -> Optional[Profile]:
    """DESIGN's rule: the smallest profile whose compute share and memory share are both >= f."""
    fits = [p for p in _plain(geo) if p.compute_slices * 1.0 / geo.compute_slices >= f - 1e-9
            and p.size * 1.0 / geo.memory_slices >= f - 1e-9]
    return min(fits, key=lambda p: (p.size, p.compute_slices, p.profile_id), default=None)


@lru_cache(maxsize=4096)
def profile_for_memory(geo: Geometry, memory_mib: float) -> Optional[Profile]:
    fits = [p for p in _plain(geo) if p.memory_mib >= memory_mib]
    return min(fits, key=lambda p: (p.size, p.compute_slices, p.profile_id), default=None)


def profile_for(req: Request, geo: Geometry) -> Optional[Profile]:
    """The profile ``req`` takes on a GPU of this geometry, or None if it cannot use MIG there.
    A whole GPU is the full profile (7g on A100/H100); a CPU-only request takes none."""
    if req.isolation == "share":
        return None
    if req.mig:
        return geo.profile(req.mig)
    if req.gpus:
        return profile_for_fraction(geo, 1.0)
    if req.memory_gib:
        return profile_for_memory(geo, req.memory_gib * 1024)
    if req.gpu:
        return profile_for_fraction(geo, req.gpu)
    return None


@lru_cache(maxsize=256)
def as_named(name: str) -> Optional[Tuple[Geometry, Profile]]:
    """Profile ``name`` on the GPU model that gives the least with it (compute share, then
    memory), with that model's geometry; None if no model has it: what a queue's ``mig``
    asks of a GPU of a model whose profiles are named otherwise (3g.40gb of an H100 NVL)."""
    found = [(g, p) for g, p in ((g, g.profile(name)) for g in (
        m.geometry() for m in models().values() if m.mig_capable)) if p is not None]
    return min(found, key=lambda f: (share(f[0], f[1]), f[1].memory_mib), default=None)


def table_mib(geo: Geometry, profile: Profile) -> int:
    """``profile``'s memory as its model's table gives it: what profiles of two models are
    compared by (an agent's report of it, for most models below the table's estimate, is of
    its own GPU alone)."""
    table = mig_geometry(geo.model)
    found = table.profile(profile.name) if table is not None else None
    return (found or profile).memory_mib


def share(geo: Geometry, profile: Profile) -> Fraction:
    """The part of its GPU's compute ``profile`` holds."""
    return Fraction(profile.compute_slices, geo.compute_slices)


def signature(layout: Layout) -> Signature:
    return tuple(sorted((i.profile, i.start, i.busy) for i in layout.instances))


@lru_cache(maxsize=200_000)
def layout_of(geo: Geometry, sig: Signature) -> Layout:
    insts = []
    for k, (name, start, busy) in enumerate(sig):
        p = geo.profile(name)
        assert p is not None, name
        insts.append(Instance(gi_id=k, profile=name, start=start, size=p.size,
                              compute_slices=p.compute_slices, busy=busy))
    return Layout(geo, tuple(insts))


@lru_cache(maxsize=400_000)
def best_start(geo: Geometry, sig: Signature, profile: str) -> Optional[int]:
    """Where the planner would create ``profile`` on a GPU in this state (None: nowhere, even by
    destroying idle instances). Memoised: thousands of GPUs share a few hundred states."""
    try:
        return planner.plan(layout_of(geo, sig), profile, destroy_idle=True).start
    except planner.PlanError:
        return None


@lru_cache(maxsize=400_000)
def after(geo: Geometry, sig: Signature, profile: str, start: int) -> Signature:
    """The state once the planner's plan for ``profile`` at ``start`` ran and a job holds it."""
    plan = planner.plan(layout_of(geo, sig), profile, start=start, destroy_idle=True)
    gone = {(i.profile, i.start) for i in plan.destroy}
    kept = tuple(s for s in sig if (s[0], s[1]) not in gone)
    return tuple(sorted(kept + ((profile, start, True),)))


@lru_cache(maxsize=100_000)
def reuse_start(geo: Geometry, sig: Signature, idle: Idle, profile: str, start: int) -> int:
    """Where ``profile`` goes on a GPU in state ``sig`` whose layout leaves out the idle
    instances ``idle``, given the planner's ``start`` there: the start of an idle twin (same
    profile) whose plan leaves the same ``planner.room`` as ``start`` does, i.e. the same
    fragmentation, so the launch takes the twin as it is instead of changing the GPU's MIG
    layout; else ``start``. Keyed by ``idle`` too: an idle twin makes another state here."""
    twins = [s for p, s in idle if p == profile]
    if not twins or start in twins:
        return start
    layout = layout_of(geo, sig)
    want = _room_after(layout, profile, start)
    return next((s for s in sorted(twins) if _room_after(layout, profile, s) == want), start)


def launch_start(geo: Geometry, sig: Signature, idle: Idle, profile: str) -> Optional[int]:
    """Where the launch of ``profile`` on a GPU in state ``sig`` (its idle instances ``idle``
    left out) goes when its slot leaves the start open: the planner's start there, or an idle
    twin's where it packs as well (``reuse_start``); None: nowhere."""
    start = best_start(geo, sig, profile)
    return None if start is None else reuse_start(geo, sig, idle, profile, start)


def _room_after(layout: Layout, profile: str, start: int) -> Optional[Tuple[int, ...]]:
    """``planner.room`` once the plan for ``profile`` at ``start`` ran; None: no plan there."""
    try:
        plan = planner.plan(layout, profile, start=start, destroy_idle=True)
    except planner.PlanError:
        return None
    return planner.room(layout.without(plan.destroy).with_instance(plan.profile, start))


def idle_after(geo: Geometry, idle: Idle, profile: str, start: int) -> Idle:
    """The idle instances left out of a layout that remain once ``profile`` is put at
    ``start``: those it overlaps are gone (the twin there taken, the others destroyed)."""
    if not idle:
        return idle
    slots = set(geo.profile(profile).slots(start))  # type: ignore[union-attr]
    return tuple(i for i in idle
                 if not slots & set(geo.profile(i[0]).slots(i[1])))  # type: ignore[union-attr]


def free_compute_milli(geo: Geometry, sig: Signature) -> int:
    """The compute share no busy instance holds, in milli of the GPU."""
    busy = sum(geo.profile(n).compute_slices for n, _, b in sig if b)  # type: ignore[union-attr]
    return (geo.compute_slices - busy) * 1000 // geo.compute_slices


def commit(layout: Layout, profile: str, start: Optional[int]) -> Tuple[planner.Plan, Layout]:
    """The real plan on the real layout, and the layout once it ran with a job on the instance.
    ``start`` None: where the agent's planner puts it (a placement by hand leaves it open), as
    the plan says."""
    plan = planner.plan(layout, profile, start=start, destroy_idle=True)
    base = layout.without(plan.destroy)
    gi = max((i.gi_id for i in layout.instances), default=0) + 1
    p = plan.profile
    made = Instance(gi_id=gi, profile=p.name, start=plan.start, size=p.size,
                    compute_slices=p.compute_slices, busy=True, memory_mib=p.memory_mib)
    return plan, Layout(layout.geometry, base.instances + (made,))
