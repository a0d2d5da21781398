"""MIG geometry and layouts as plain data, shared by the planner, the agent and the fleet side.

A GPU's geometry is what NVML says is possible (profiles, placement starts, counts, the compute
budget); a layout is what exists now. Both are immutable so a plan can name the exact layout it
was made against.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple


@dataclass(frozen=True)
class Profile:
    """One GPU-instance profile: where it may start, how much it takes, how many may exist."""

    name: str  # e.g. "3g.40gb"
    profile_id: int  # the id NVML uses for placements and creation
    compute_slices: int
    size: int  # memory slices occupied, starting at a placement start
    starts: Tuple[int, ...]
    max_instances: int
    memory_mib: int = 0

    def slots(self, start: int) -> range:
        return range(start, start + self.size)


@dataclass(frozen=True)
class Geometry:
    """The MIG rules of one GPU model."""

    model: str
    memory_slices: int
    compute_slices: int
    profiles: Tuple[Profile, ...]

    def profile(self, name: str) -> Optional[Profile]:
        for p in self.profiles:
            if p.name == name:
                return p
        return None

    def profile_by_id(self, profile_id: int) -> Optional[Profile]:
        for p in self.profiles:
            if p.profile_id == profile_id:
                return p
        return None

    def by_size(self) -> Tuple[Profile, ...]:
        """Profiles largest first: the order in which keeping room matters most."""
        return tuple(sorted(self.profiles,
                            key=lambda p: (-p.size, -p.compute_slices, p.profile_id)))


@dataclass(frozen=True)
class Instance:
    """A GPU instance as it exists on a GPU (with its compute instance, when it has one)."""

    gi_id: int
    profile: str
    start: int
    size: int
    compute_slices: int
    uuid: Optional[str] = None  # "MIG-..." once it has a compute instance
    busy: bool = False
    pids: Tuple[int, ...] = ()
    memory_mib: int = 0
    # the uuids of the instances a rolled-back change made it again in place of (as its
    # agent links them: made_again.MadeAgain.marked), so that its words name them, wherever
    # they are said
    remade_of: Tuple[str, ...] = ()

    def slots(self) -> range:
        return range(self.start, self.start + self.size)

    def label(self) -> str:
        """The instance in words (``named``), with the uuids it was made again in place of."""
        return named(self.profile, self.start, self.uuid or "gi %d" % self.gi_id,
                     self.remade_of)

    @property
    def placed(self) -> Tuple[str, int, bool]:
        """What the instance holds of its GPU, whatever ids the GPU gave it: its profile, its
        start, and whether it has its compute instance (a GPU instance without one holds its
        slots, and no job can use it)."""
        return self.profile, self.start, self.uuid is not None


def named(profile: Any, start: Any, ident: Any, remade_of: Iterable[str] = ()) -> str:
    """An instance in words, the agent's and the admin side's alike: its profile, start and
    uuid (``ident``), and the uuids of the instances a rolled-back change made it again in
    place of (``remade_of``, made_again.MadeAgain), so that a retry naming one of those finds
    it in the words too."""
    remade = ", ".join(remade_of)
    return "%s at slot %s (%s%s)" % (profile, start, ident, ", made again in place of %s by a "
                                     "rolled-back change" % remade if remade else "")


def placements(instances: Iterable[Instance]) -> Counter:
    """What instances hold a GPU: ``Instance.placed`` of each."""
    return Counter(i.placed for i in instances)


def placed_words(placed: Tuple[str, int, bool]) -> str:
    profile, start, whole = placed
    return "%s at slot %d%s" % (profile, start, "" if whole else " without its compute instance")


VERSION_DIGITS = 12  # of a layout's version: lowercase hex, as sha1's hexdigest writes it


@dataclass(frozen=True)
class Layout:
    """The instances on one MIG GPU, with the geometry that rules them."""

    geometry: Geometry
    instances: Tuple[Instance, ...] = ()

    @property
    def version(self) -> str:
        """A short digest of what is placed where: equal versions mean the same layout.

        Derived, never stored, so it stays right across agent restarts and changes made by
        other tools (nvidia-smi) alike. The ids the GPU gives its instances are not part of it:
        an idle instance a rolled-back change made again has new ones, and a plan made before
        is as true of it (``Instance.placed``). Busy-ness is not part of it either: a plan
        re-checks that at apply."""
        parts = sorted("%s@%d%s" % (profile, start, "" if whole else "-")
                       for profile, start, whole in (i.placed for i in self.instances))
        return hashlib.sha1(";".join(parts).encode()).hexdigest()[:VERSION_DIGITS]

    def used_slots(self) -> set:
        used = set()
        for inst in self.instances:
            used.update(inst.slots())
        return used

    def compute_used(self) -> int:
        return sum(i.compute_slices for i in self.instances)

    def count(self, profile_name: str) -> int:
        return sum(1 for i in self.instances if i.profile == profile_name)

    def without(self, gone: Tuple[Instance, ...]) -> "Layout":
        ids = {i.gi_id for i in gone}
        return Layout(self.geometry, tuple(i for i in self.instances if i.gi_id not in ids))

    def with_instance(self, profile: Profile, start: int) -> "Layout":
        placed = Instance(gi_id=-1, profile=profile.name, start=start, size=profile.size,
                          compute_slices=profile.compute_slices)
        return Layout(self.geometry, self.instances + (placed,))


def changed(before: Iterable[Instance], now: Iterable[Instance]) -> str:
    """What differs between two layouts' instances, in words, slot by slot ("2g.20gb at slot 4
    gone, 1g.10gb at slot 0 made"); empty where they hold the same."""
    was, is_ = placements(before), placements(now)

    def in_order(placed: Counter) -> list:
        return sorted(placed.elements(), key=lambda k: (k[1], k[0], k[2]))
    return ", ".join(["%s gone" % placed_words(k) for k in in_order(was - is_)] +
                     ["%s made" % placed_words(k) for k in in_order(is_ - was)])


class LayoutsSeen:
    """The instances of the layouts an agent read lately, by version: a version is a digest,
    and a plan pinned to one the GPU no longer has is refused saying what changed since."""

    def __init__(self, keep: int = 256):
        self.keep = keep
        self._seen: "OrderedDict[str, Tuple[Instance, ...]]" = OrderedDict()
        self._lock = threading.Lock()

    def saw(self, layout: Layout) -> None:
        with self._lock:
            self._seen[layout.version] = layout.instances
            self._seen.move_to_end(layout.version)
            while len(self._seen) > self.keep:
                self._seen.popitem(last=False)

    def get(self, version: str) -> Optional[Tuple[Instance, ...]]:
        with self._lock:
            return self._seen.get(version)


def misfit(geo: Geometry, instances: Iterable[Mapping[str, Any]]) -> Optional[str]:
    """Why instance records as an agent reports them (``profile``, ``start``, ``size``) cannot
    all be on one GPU of ``geo``, or None: each must be of a profile of the model, of its size,
    at one of its starts, on no other's memory slices (which keeps their compute within the
    GPU's). A real GPU's never misfit; a broken or hostile agent's, or a model table that NVML
    disagrees with, may."""
    held: Dict[int, str] = {}
    for i in instances:
        where = "%s at slot %s" % (i["profile"], i["start"])
        p = geo.profile(i["profile"])
        if p is None:
            return "%s: %s has no such profile" % (where, geo.model)
        if i["size"] != p.size:
            return "%s: %d memory slices, where %s takes %d" % (where, i["size"], p.name, p.size)
        if i["start"] not in p.starts:
            return "%s: %s starts only at %s" % (where, p.name,
                                                 ", ".join(str(s) for s in p.starts))
        other = next((held[s] for s in p.slots(i["start"]) if s in held), None)
        if other is not None:
            return "%s: on the memory slices of %s" % (where, other)
        held.update(dict.fromkeys(p.slots(i["start"]), where))
    return None
