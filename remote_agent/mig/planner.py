"""The MIG planner: a layout and a wanted profile in, a plan (or a reason why not) out.

Pure: no NVML, no I/O, so the agent, the fleet-wide placement core and the TUI's preview all run
the very same rules. To give profile P a home it uses a free placement; if there is none and the
caller allows it, it destroys idle instances that make room — never an instance with processes.
Among valid choices it keeps the largest profiles placeable afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import List, Optional, Sequence, Tuple

from remote_agent.mig.layout import Instance, Layout, Profile
from remote_agent.text import count


class PlanError(Exception):
    """No plan exists. ``kind`` is stable for callers; the message is for people."""

    def __init__(self, kind: str, message: str, busy: Sequence[Instance] = (),
                 destroyable: Sequence[Instance] = ()):
        super().__init__(message)
        self.kind = kind  # unknown_profile | bad_start | busy | no_room | needs_destroy
        self.busy = tuple(busy)
        self.destroyable = tuple(destroyable)


@dataclass(frozen=True)
class Plan:
    """Destroy these idle instances, then create ``profile`` at ``start``."""

    profile: Profile
    start: int
    destroy: Tuple[Instance, ...]
    layout_version: str

    def describe(self) -> str:
        """The plan in words (each instance it destroys with the uuids it was made again in
        place of: ``Instance.label``)."""
        steps = ["destroy idle %s" % i.label() for i in self.destroy]
        steps.append("create %s at slot %d" % (self.profile.name, self.start))
        return "; ".join(steps) + "; no running job touched"


def refusal(layout: Layout, profile: Profile, start: int) -> Optional[str]:
    """Why ``profile`` cannot be created at ``start`` on this layout, or None if it can."""
    geo = layout.geometry
    if start not in profile.starts:
        return "slot %d is not a placement of %s (it may start at %s)" % (
            start, profile.name, ", ".join(map(str, profile.starts)))
    wanted = set(profile.slots(start))
    for inst in layout.instances:
        if wanted & set(inst.slots()):
            return "slots %d-%d overlap %s" % (start, start + profile.size - 1, inst.label())
    if layout.count(profile.name) >= profile.max_instances:
        return "this GPU allows at most %s" % count(profile.max_instances,
                                                     "%s instance" % profile.name)
    used = layout.compute_used()
    if used + profile.compute_slices > geo.compute_slices:
        return "%s needs %s and %d of %d are in use" % (
            profile.name, count(profile.compute_slices, "compute slice"), used,
            geo.compute_slices)
    return None


def room(layout: Layout) -> Tuple[int, ...]:
    """How many placements stay open for each profile, largest profiles first: what a choice
    should keep high so that big requests still fit later."""
    return tuple(sum(1 for s in p.starts if refusal(layout, p, s) is None)
                 for p in layout.geometry.by_size())


def plan(layout: Layout, profile_name: str, start: Optional[int] = None,
         destroy_idle: bool = False) -> Plan:
    """The best way to create ``profile_name`` on this layout, at ``start`` if one is given."""
    geo = layout.geometry
    profile = geo.profile(profile_name)
    if profile is None:
        raise PlanError("unknown_profile", "%s has no MIG profile %r; it offers %s" % (
            geo.model, profile_name, ", ".join(p.name for p in geo.profiles)))
    if start is not None and start not in profile.starts:
        raise PlanError("bad_start", refusal(layout, profile, start) or "bad start")
    starts = (start,) if start is not None else profile.starts

    free = [s for s in starts if refusal(layout, profile, s) is None]
    if free:
        best = max(free, key=lambda s: (room(layout.with_instance(profile, s)), s))
        return Plan(profile, best, (), layout.version)

    options: List[Tuple[Tuple[int, ...], int]] = []  # (instances to destroy as gi ids, start)
    busy_in_way: List[Instance] = []
    for s in starts:
        found = _room_by_destroying(layout, profile, s, busy_in_way)
        if found is not None:
            options.append((tuple(i.gi_id for i in found), s))
    if not options:
        raise _no_room(layout, profile, starts, busy_in_way)

    def cost(option: Tuple[Tuple[int, ...], int]) -> tuple:
        gone = tuple(i for i in layout.instances if i.gi_id in option[0])
        after = layout.without(gone).with_instance(profile, option[1])
        return (len(gone), sum(i.size for i in gone), tuple(-r for r in room(after)), -option[1])

    ids, best = min(options, key=cost)
    victims = tuple(i for i in layout.instances if i.gi_id in ids)
    if not destroy_idle:
        raise PlanError(
            "needs_destroy",
            "no free placement for %s on this GPU; destroying idle %s would make room" % (
                profile.name, " and ".join(i.label() for i in victims)),
            destroyable=victims)
    return Plan(profile, best, victims, layout.version)


def _room_by_destroying(layout: Layout, profile: Profile, start: int,
                        busy_in_way: List[Instance]) -> Optional[Tuple[Instance, ...]]:
    """The fewest idle instances whose removal lets ``profile`` start at ``start``."""
    wanted = set(profile.slots(start))
    forced = tuple(i for i in layout.instances if wanted & set(i.slots()))
    blockers = [i for i in forced if i.busy]
    if blockers:
        busy_in_way.extend(b for b in blockers if b not in busy_in_way)
        return None
    if any(i.profile == profile.name for i in forced):
        return None  # replacing an idle instance with its twin changes nothing
    base = layout.without(forced)
    if refusal(base, profile, start) is None:
        return forced
    # Still short of an instance count or compute slices: free the fewest more idle instances.
    others = [i for i in base.instances if not i.busy and i.profile != profile.name]
    for k in range(1, len(others) + 1):
        for extra in combinations(others, k):
            if refusal(base.without(extra), profile, start) is None:
                return forced + extra
    return None


def _no_room(layout: Layout, profile: Profile, starts: Sequence[int],
             busy_in_way: Sequence[Instance]) -> PlanError:
    if busy_in_way:
        return PlanError("busy", "cannot place %s: busy instance %s in the way; a busy instance "
                         "(held by a job, or with processes) is never destroyed" % (
                             profile.name, " and ".join(busy_label(i) for i in busy_in_way)),
                         busy=busy_in_way)
    reasons = "; ".join("slot %d: %s" % (s, refusal(layout, profile, s)) for s in starts)
    twins = [i for i in layout.instances if i.profile == profile.name and not i.busy]
    hint = "; idle %s already exists and can be used as it is" % twins[0].label() if twins else ""
    return PlanError("no_room", "no room for %s on this GPU (%s)%s" % (profile.name, reasons, hint))


def busy_label(inst: Instance) -> str:
    """An instance in use, with its processes where they are known."""
    if inst.pids:
        return "%s, pid %s" % (inst.label(), ", ".join(map(str, inst.pids)))
    return inst.label()
