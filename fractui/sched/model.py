"""The placement core's data: hosts with CPU, RAM and GPUs, and the requests placed onto them.

Plain mutable records on purpose: the placer updates one host per decision and keeps its caches
keyed by the host's state, so a decision never rescans or copies the fleet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import FrozenSet, List, Optional, Tuple

from remote_agent.mig.layout import Geometry, Layout
from remote_agent.mig.planner import Plan

MILLI = 1000  # a whole GPU, in the unit shares are counted in
ISOLATIONS = ("any", "mig", "share")


@dataclass
class Gpu:
    """One GPU. ``layout`` set means MIG mode is on; otherwise jobs take memory shares of it.

    ``free_milli`` is the share left on a GPU without MIG; on a MIG GPU it is the compute share
    its instances leave unused (for reports), while the layout is what placement obeys.

    ``mig_geometry`` set: a MIG-capable GPU whose MIG mode the placer may change while it is idle
    (its layout, when MIG is on, is of this geometry); None: its mode is fixed. ``mode_reset``:
    changing its mode needs a GPU reset (shown to people; the placer does not weigh it).

    ``idle_instances``: (profile, start) of each MIG instance the GPU has that no job holds,
    left out of ``layout`` (its slots read as free): a request of that profile that packs as
    well at one of them takes it as it is, with no MIG change (``sched.mig.reuse_start``).
    """

    model: str
    memory_mib: int = 0
    free_milli: int = MILLI
    layout: Optional[Layout] = None
    mig_geometry: Optional[Geometry] = None
    mode_reset: bool = False
    idle_instances: Tuple[Tuple[str, int], ...] = ()

    @property
    def mig(self) -> bool:
        return self.layout is not None

    def idle_in(self, mig: bool) -> Tuple[Optional[Layout], int, Tuple[Tuple[str, int], ...]]:
        """The (layout, free_milli, idle_instances) this flexible GPU has once put idle in MIG
        mode ``mig``: empty, all of it free, no idle instance (the change destroys them first).
        One rule for a flip the placer commits and for one a decision not yet launched will
        make (fractui.sched.fleetview)."""
        if self.mig_geometry is None:
            raise ValueError("a GPU of fixed MIG mode (%s) is not put in another" % self.model)
        return (Layout(self.mig_geometry) if mig else None), MILLI, ()


@dataclass
class Host:
    name: str
    cpu_milli: int
    memory_mib: int
    gpus: List[Gpu] = field(default_factory=list)
    cpu_free: int = -1  # -1: all of it (filled in below)
    memory_free: int = -1
    # how each GPU reaches each other (the agent's hello.links: "NV12", "NVSWITCH", "PHB", ...,
    # "X" for itself); empty: unknown, and a multi-GPU job takes the first free GPUs
    links: Tuple[Tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.cpu_free < 0:
            self.cpu_free = self.cpu_milli
        if self.memory_free < 0:
            self.memory_free = self.memory_mib

    @property
    def models(self) -> FrozenSet[str]:
        return frozenset(g.model for g in self.gpus)


@dataclass(frozen=True)
class Request:
    """What one job asks for. The GPU part takes one form at most: ``gpu`` (a fraction of one
    GPU, 0 < f < 1), ``mig`` (an exact profile), ``memory_gib`` (GPU memory) or ``gpus`` (whole
    GPUs); none of them is a CPU-only job."""

    name: str
    cpu_milli: int = 0
    memory_mib: int = 0
    gpu: float = 0.0
    mig: Optional[str] = None
    memory_gib: float = 0.0
    gpus: int = 0
    models: FrozenSet[str] = frozenset()  # allowed GPU models; empty: any
    hosts: FrozenSet[str] = frozenset()  # allowed hosts; empty: any
    isolation: str = "any"  # "mig": MIG slices only, "share": memory shares only

    def __post_init__(self) -> None:
        forms = [n for n, v in (("gpu", self.gpu), ("mig", self.mig),
                                ("memory_gib", self.memory_gib), ("gpus", self.gpus)) if v]
        if len(forms) > 1:
            raise ValueError("request %s: give one of gpu, mig, memory_gib, gpus; got %s"
                             % (self.name, ", ".join(forms)))
        if not 0 <= self.gpu < 1:
            raise ValueError("request %s: gpu = %r must be a fraction below 1 (use gpus = k "
                             "for whole GPUs)" % (self.name, self.gpu))
        if self.gpus < 0 or self.cpu_milli < 0 or self.memory_mib < 0 or self.memory_gib < 0:
            raise ValueError("request %s: negative amount" % self.name)
        if self.isolation not in ISOLATIONS:
            raise ValueError("request %s: isolation %r is not one of %s"
                             % (self.name, self.isolation, ", ".join(ISOLATIONS)))
        if self.mig and self.isolation == "share":
            raise ValueError("request %s: mig = %r needs a MIG GPU, isolation is 'share'"
                             % (self.name, self.mig))

    @property
    def gpu_count(self) -> int:
        """GPUs the request spans: k for whole GPUs, 1 for any slice, 0 for CPU only."""
        if self.gpus:
            return self.gpus
        return 1 if (self.gpu or self.mig or self.memory_gib) else 0

    @property
    def milli(self) -> int:
        """The share of each GPU it takes on a GPU without MIG (memory_gib needs the GPU's size,
        see ``share_milli``)."""
        if self.gpus:
            return MILLI
        return math.ceil(round(self.gpu * MILLI, 6))

    def share_milli(self, model: str, memory_mib: int) -> int:
        """Its share of a GPU of this model and size without MIG, in milli (0: it cannot take a
        share of it: a MIG-only request, a model it does not allow, or too little memory)."""
        if self.mig or self.isolation == "mig" or (self.models and model not in self.models):
            return 0
        if self.memory_gib:
            if not memory_mib or self.memory_gib * 1024 > memory_mib:
                return 0
            return max(1, math.ceil(round(self.memory_gib * 1024 * MILLI / memory_mib, 6)))
        return self.milli


@dataclass(frozen=True)
class Placement:
    """Where a request goes: a host, its GPUs, and per GPU the share (no MIG) or the MIG plan,
    and whether the GPU's MIG mode is turned on (True) or off (False) first (``modes``, aligned
    with ``gpus``; empty or None: no change)."""

    request: str
    host: str
    host_index: int
    cpu_milli: int = 0
    memory_mib: int = 0
    gpus: Tuple[int, ...] = ()
    milli: Tuple[int, ...] = ()  # share taken on each GPU without MIG (0 on MIG GPUs)
    plans: Tuple[Optional[Plan], ...] = ()  # the planner's plan on each MIG GPU (None: no MIG)
    link: Optional[str] = None  # the slowest link among its GPUs ("NV12", "PHB"); None: unknown
    modes: Tuple[Optional[bool], ...] = ()  # MIG turned on/off first on each GPU (None: kept)
    reused: Tuple[bool, ...] = ()  # the slice on each GPU is an idle instance taken as it is

    def describe(self) -> str:
        parts = []
        for k, (g, m, p) in enumerate(zip(self.gpus, self.milli, self.plans)):
            mode = self.modes[k] if k < len(self.modes) else None
            first = "" if mode is None else "MIG %s, then " % ("on" if mode else "off")
            if p and k < len(self.reused) and self.reused[k]:
                what = "reuse the idle %s at slot %d; no MIG change" % (p.profile.name, p.start)
            else:
                what = p.describe() if p else "%d/1000 share" % m
            parts.append("gpu%d: %s%s" % (g, first, what))
        over = " (linked by %s)" % self.link if self.link else ""
        return "%s -> %s%s%s" % (self.request, self.host,
                                 (" " + "; ".join(parts)) if parts else "", over)
