"""What the screen shows, as plain data: hosts, GPUs and the blocks of each GPU's slice map.

Pure: host statuses (from the fleet) and store jobs in, frozen lines out. Lines are values, so
two equal lines render the same and the slice map caches rendered lines by their hash; a host
that did not change yields equal lines and costs nothing to draw again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

from fractui.sched.health import unhealthy
from fractui.sched.mig_change import free_runs, placement_layout, unfit_run
from fractui.fleet.host import HostStatus
from fractui.sched.cordons import marks, summary
from fractui.sched.fleetview import (ACTIVE_AGENT_STATES, booked_layout, jobs_by_host,
                                     mps_layer, not_started, unshown)
from fractui.store.model import PENDING, Cordon, Job, ModeHold, StaleCopy
from fractui.tui.typed import Clocked, Typed
from remote_agent.gpu.models import ALIASES, model as model_facts

# Block kinds: what holds a part of a GPU.
JOB = "job"  # a job of the agent (its store job known or not)
IDLE = "idle"  # a MIG instance no job holds
OTHER = "other"  # memory or an instance used by processes outside fractui
PLACING = "placing"  # decided, not yet there: an instance being created, a share being launched
SIMULATED = "simulated"  # the demo's simulated load: no process behind it
GHOST = "ghost"  # placement mode: where the job being placed would go

_SHORT = {full: alias for alias, full in ALIASES.items()}


def short_model(name: str) -> str:
    """ "NVIDIA A100-SXM4-80GB" -> "A100-80GB": what fits a row and an admin says."""
    return _SHORT.get(name) or name.replace("NVIDIA ", "").replace("GeForce ", "")


def memory_slices(gpu: dict) -> int:
    """A MIG GPU's memory slices (8, or 4 on A30), from the model facts; for a model we do not
    know, the extent of its instances, at least 8."""
    try:
        slices = model_facts(gpu.get("name", "")).memory_slices
    except ValueError:
        slices = 0
    ends = [i["start"] + i["size"] for i in gpu.get("instances") or ()]
    return slices or max([8] + ends)


@dataclass(frozen=True)
class Block:
    """A part of one GPU: ``start`` and ``size`` are fractions of the GPU (MIG: its slices)."""

    start: float
    size: float
    kind: str
    label: str = ""
    """The MIG profile, or for a share the job's name."""
    team: Optional[str] = None
    queue: Optional[str] = None
    job: Optional[str] = None
    """``host/agent-id``, with the store's ``#id`` when the store knows it."""


@dataclass(frozen=True)
class GpuLine:
    host: str
    index: int
    model: str
    mig: bool
    slices: int
    """Memory slices of a MIG GPU; 0 without MIG."""
    memory_mib: int
    used_mib: int
    util: Optional[int]
    util_note: Optional[str]
    blocks: tuple[Block, ...]
    stale: bool = False
    """The host is not connected: this is its last known state."""
    unhealthy: Optional[str] = None
    """Why the GPU is unhealthy (fractui.sched.health), if it is."""
    out_of_service: Optional[str] = None
    """cordoned, draining or drained (its own cordon, else its host's); None: in service."""
    unfit: tuple[int, ...] = ()
    """A MIG GPU's free memory slices in which no profile can be made now, as placement
    books the GPU (mig_change.unfit_run): free, but of no use until an instance beside them
    goes. The map draws them apart from the free slices a profile can use."""

    @property
    def allocated(self) -> float:
        """The held fraction of the GPU (jobs, instances in use, outside processes)."""
        return min(1.0, sum(b.size for b in self.blocks if b.kind != IDLE))

    def text(self) -> str:
        """What a filter matches against."""
        words = [self.host, "gpu%d" % self.index, self.model, "mig" if self.mig else "share"]
        if self.unhealthy:
            words += ["unhealthy", self.unhealthy]
        for b in self.blocks:
            words += [b.label, b.team or "", b.queue or "", b.job or "", b.kind]
        return " ".join(words + [self.out_of_service or ""])


@dataclass(frozen=True)
class HostLine:
    name: str
    state: str
    error: Optional[str]
    gpus: int
    jobs: int
    simulated: bool = False
    unhealthy: tuple[tuple[int, str], ...] = ()
    """(GPU index, why) of each unhealthy GPU of the host."""
    out_of_service: Optional[str] = None
    """The host as a whole: cordoned, draining or drained; None: in service."""


@dataclass(frozen=True)
class GpuGroupLine:
    """Compact mode: several GPUs of one host side by side on one line."""

    gpus: tuple[GpuLine, ...]


Line = Union[HostLine, GpuLine, GpuGroupLine]


def gpus_of(line: Line) -> tuple[GpuLine, ...]:
    """The GPUs a line of the map draws: a compact line's several, a GPU line's one, a host
    line's none."""
    return line.gpus if isinstance(line, GpuGroupLine) else (
        (line,) if isinstance(line, GpuLine) else ())


@dataclass(frozen=True)
class StoreView:
    """One read of the store: its active jobs (and its uid, to match agent keys)."""

    uid: str
    jobs: tuple[Job, ...] = ()
    holder: Optional[str] = None
    """Who holds the scheduler lease: who carries out decisions now (None: no one)."""
    cordons: tuple[Cordon, ...] = ()
    """Hosts and GPUs out of service."""
    held: Mapping[str, ModeHold] = field(default_factory=dict)
    """GPUs (by UUID) the lease holder holds back from MIG mode changes now, a change of theirs
    having failed, and until when."""
    trouble: Optional[str] = None
    """What fails the lease holder's scheduling passes, while they fail."""
    ended: Optional[tuple[Job, ...]] = None
    """The newest ended jobs (as ``fractui jobs --all``), read only while a view shows them
    (the jobs view's ``a``): a job that failed can be found after it left the map; never
    drawn. None: not read this time."""
    stale: tuple[StaleCopy, ...] = ()
    """Copies of a lost host's jobs, which the lease holder stops once it reaches the host
    again (what the jobs view says of one)."""
    last_lines: Mapping[int, str] = field(default_factory=dict)
    """The failed jobs' last lines of output kept (of those read: the ended), by job, only
    of those whose output the reader may read (intents.last_lines): its reason says it."""

    def job(self, job_id: Optional[int]) -> Optional[Job]:
        """Job ``job_id`` as this read has it, active or ended (where the ended were read)."""
        return next((j for j in self.jobs + (self.ended or ()) if j.id == job_id), None)


@dataclass
class HostView:
    header: HostLine
    gpus: tuple[GpuLine, ...]


def host_view(status: HostStatus, by_key: dict[str, Job], placed: Sequence[Job],
              simulated: frozenset[str] = frozenset()) -> HostView:
    """One host's lines from its status, the store jobs matched by agent key, and the store's
    placed-but-not-running jobs on it. ``simulated``: agent pids of the demo's simulated load."""
    snapshot = status.snapshot or {}
    live = [j for j in status.jobs.values() if j.get("state") in ACTIVE_AGENT_STATES]
    stale = status.state not in ("online", "degraded")
    now = snapshot.get("time") or 0.0
    gpus = tuple(_gpu_line(status.name, g, live, by_key, placed, stale, simulated, now)
                 for g in snapshot.get("gpus") or ())
    header = HostLine(status.name, status.state, status.error, len(gpus), len(live),
                      bool(simulated), tuple((g.index, g.unhealthy) for g in gpus if g.unhealthy))
    return HostView(header, gpus)


def _owner(agent_job: dict, host: str, by_key: dict[str, Job]) -> dict:
    job = by_key.get(agent_job.get("key") or "")
    ref = "%s/%s" % (host, agent_job.get("id"))
    if job is None:
        return {"team": None, "queue": None, "job": ref}
    return {"team": job.team, "queue": job.queue, "job": "#%d %s" % (job.id, ref)}


def _gpu_line(host: str, gpu: dict, live: list[dict], by_key: dict[str, Job],
              placed: Sequence[Job], stale: bool, simulated: frozenset[str],
              now: float) -> GpuLine:
    index = gpu.get("index", 0)
    memory = max(1, int(gpu.get("memory_mib") or 1))
    on_gpu = [j for j in live if index in (j.get("gpus") or ())]
    waiting = [j for j in placed if j.slot is not None and index in j.slot.gpus]
    blocks: list[Block] = []
    unfit: tuple[int, ...] = ()
    if gpu.get("mig_mode"):
        slices = memory_slices(gpu)
        by_instance = {j.get("instance"): j for j in on_gpu if j.get("instance")}
        # a job whose instance the snapshot does not show yet: drawn being made where
        # placement books it (an idle twin there its own, idle ones in its way gone)
        full = booked_layout(gpu, on_gpu)
        booked = full if unshown(gpu, on_gpu) else None
        making = booked.making if booked is not None else {}
        kept = None if booked is None else {i.gi_id for i in booked.layout.instances}
        taken = set()
        for inst in gpu.get("instances") or ():
            if kept is not None and inst.get("gi_id") not in kept:
                continue
            start, size = inst["start"] / slices, inst["size"] / slices
            taken.add(inst["start"])
            job = by_instance.get(inst.get("uuid"))
            made_for = making.get(inst.get("gi_id"))
            if made_for is not None:
                blocks.append(Block(start, size, PLACING, inst["profile"],
                                    **_owner(made_for, host, by_key)))
            elif inst.get("uuid") is None:  # a GPU instance still without its compute instance
                blocks.append(Block(start, size, PLACING, inst["profile"]))
            elif job is not None:
                blocks.append(Block(start, size, JOB, inst["profile"],
                                    **_owner(job, host, by_key)))
            elif inst.get("busy"):
                pids = {str(p) for p in inst.get("pids") or ()}
                kind = SIMULATED if pids and pids <= simulated else OTHER
                blocks.append(Block(start, size, kind, inst["profile"]))
            else:
                blocks.append(Block(start, size, IDLE, inst["profile"]))
        for made in booked.made if booked is not None else ():
            blocks.append(Block(made.start / slices, made.size / slices, PLACING, made.profile,
                                **_owner(making[made.gi_id], host, by_key)))
        # a job placed there, not started yet: where placement books it (its slot's start,
        # or its launch's where it left one open); the free slices no profile can use then,
        # as the GPU view's free rows say them (none fits)
        layout, starts = placement_layout(full, waiting)
        for job in waiting:
            slot = job.slot
            start = starts.get(job.id, slot.start)
            if slot.profile and start is not None and start not in taken:
                size = _profile_size(gpu, slot.profile) or 1
                blocks.append(Block(start / slices, size / slices, PLACING, slot.profile,
                                    job.team, job.queue, "#%d" % job.id))
        unfit = tuple(s for a, b in (free_runs(gpu, layout) if layout is not None else ())
                      if unfit_run(layout, a, b) is not None for s in range(a, b + 1))
    else:
        slices = 0
        at = 0.0
        job_pids = set()
        for job in sorted(on_gpu, key=lambda j: (j.get("created_at") or 0, j.get("id"))):
            size = (job.get("memory_mib") or 0) / memory
            job_pids.add(job.get("pid"))
            blocks.append(Block(at, size, JOB, job.get("name") or "",
                                **_owner(job, host, by_key)))
            at += size
        for job in waiting:
            if job.slot.memory_mib:
                size = job.slot.memory_mib / memory
                blocks.append(Block(at, size, PLACING, job.name, job.team, job.queue,
                                    "#%d" % job.id))
                at += size
        # a job's other processes (its workers) are its own where the agent says whose each is;
        # the jobs' MPS server is not drawn as anyone else's, as placement does not count it
        outside = [p for p in gpu.get("processes") or ()
                   if p.get("pid") not in job_pids and not p.get("job") and not mps_layer(p)]
        for kind in (SIMULATED, OTHER):
            used = sum(p.get("used_mib") or 0 for p in outside
                       if (str(p.get("pid")) in simulated) == (kind == SIMULATED))
            if used:
                blocks.append(Block(at, used / memory, kind, kind))
                at += used / memory
    return GpuLine(host=host, index=index, model=short_model(gpu.get("name", "?")),
                   mig=bool(gpu.get("mig_mode")), slices=slices, memory_mib=memory,
                   used_mib=int(gpu.get("memory_used_mib") or 0),
                   util=gpu.get("utilization_gpu"), util_note=gpu.get("utilization_note"),
                   blocks=tuple(blocks), stale=stale, unhealthy=unhealthy(gpu, now),
                   unfit=unfit)


def with_ghost(lines: Sequence[Line], host: str, gpus: Sequence[int], profile: Optional[str],
               start: Optional[int], memory_mib: Optional[int], label: str
               ) -> tuple[list[Line], int]:
    """The map's lines with a ghost block where a job would go (a MIG profile at a start, or a
    share after what the GPU holds now), and the index of the first line that shows it (-1 if
    none is shown, e.g. filtered out)."""
    def ghostly(g: GpuLine) -> GpuLine:
        if g.host != host or g.index not in gpus:
            return g
        if g.mig and profile is not None and start is not None:
            size = _profile_size({"name": g.model}, profile) or 1
            block = Block(start / g.slices, size / g.slices, GHOST, profile)
        else:
            share = (memory_mib or g.memory_mib) / g.memory_mib
            at = min(1.0, sum(b.size for b in g.blocks if b.kind != IDLE))
            block = Block(at, min(share, max(0.0, 1.0 - at)) or share, GHOST, label)
        return dataclasses.replace(g, blocks=g.blocks + (block,))

    out: list[Line] = []
    first = -1
    for i, line in enumerate(lines):
        if isinstance(line, GpuLine):
            new: Line = ghostly(line)
        elif isinstance(line, GpuGroupLine):
            new = GpuGroupLine(tuple(ghostly(g) for g in line.gpus))
        else:
            new = line
        if new is not line and new != line and first < 0:
            first = i
        out.append(new)
    return out, first


def _profile_size(gpu: dict, profile: str) -> Optional[int]:
    try:
        geo = model_facts(gpu.get("name", "")).geometry()
    except ValueError:
        return None
    return next((p.size for p in geo.profiles if p.name == profile), None)


@dataclass(frozen=True)
class Totals:
    """The header's fleet totals."""

    hosts: int
    states: tuple[tuple[str, int], ...]
    gpus: int
    allocated: float
    """Mean held fraction over every GPU seen."""
    running: int
    pending: int
    out_of_service: tuple[str, ...] = ()
    """What is out of service, hosts and GPUs apart ("1 host drained"; cordons.summary)."""
    out_of_service_brief: tuple[str, ...] = ()
    """The same, the cordons in each state alone ("1 drained"): a header with no room for
    the words above says these rather than cut them off."""


@dataclass(frozen=True)
class Order:
    """An order of the map's GPUs (``o`` cycles them): ``measure`` of a GPU, highest first;
    None for the config's order of hosts and the agent's of GPUs."""

    name: str
    """As the header says it, e.g. "busiest first (util)"."""
    measure: Optional[Callable[[GpuLine], Optional[float]]] = None
    """None for a GPU it has no measure of: such GPUs go last, as do hosts with none."""


def _measured(of: Callable[[GpuLine], Optional[float]]) -> Callable[[GpuLine], Optional[float]]:
    """``of`` on a GPU whose host answers; none on one whose host does not (its figures are
    its last known ones, not a measure of now)."""
    return lambda g: None if g.stale else of(g)


ORDERS = (
    Order("hosts as configured"),
    Order("busiest first (util)", _measured(lambda g: g.util)),
    Order("most memory used first", _measured(lambda g: g.used_mib)),
    Order("most free room first", _measured(lambda g: 1.0 - g.allocated)),
)
"""The orders ``o`` goes through, in turn. Utilisation is what NVML reports per GPU; a MIG GPU
has none (NVML gives none for MIG), so it goes last. Memory used is the agent's figure for the
whole GPU; free room what no job, instance or process holds (``GpuLine.allocated``)."""


def after(order: Order) -> Order:
    """The order ``o`` goes to from ``order`` (the first after the last)."""
    return ORDERS[(ORDERS.index(order) + 1) % len(ORDERS)]


def ordered(views: Sequence[HostView], order: Order) -> list[HostView]:
    """``views`` with their GPUs in ``order`` (highest measure first, GPUs with none last, in
    the agent's order), and the hosts by their first GPU's measure (those with none last, in
    the config's order): the busiest GPU of the fleet is the map's first. Pure: what is drawn,
    reordered."""
    measure = order.measure
    if measure is None:
        return list(views)

    def key(g: GpuLine) -> tuple[bool, float]:
        m = measure(g)
        return (m is None, -(m or 0.0))

    out = [HostView(v.header, tuple(sorted(v.gpus, key=key))) for v in views]
    return sorted(out, key=lambda v: key(v.gpus[0]) if v.gpus else (True, 0.0))


def unmeasured(views: Iterable[HostView], order: Order) -> int:
    """How many GPUs ``order`` has no measure of (they are last)."""
    measure = order.measure
    return 0 if measure is None else sum(1 for v in views for g in v.gpus
                                          if measure(g) is None)


@dataclass
class FleetModel:
    """Every host's view, kept by name in config order; rebuilt per host as updates arrive."""

    order: list[str]
    hosts: dict[str, HostView] = field(default_factory=dict)
    store: Optional[StoreView] = None
    _on_host: dict[str, tuple[Job, ...]] = field(default_factory=dict)
    """The store's jobs that hold (or are about to hold) a slice of each host."""
    _marks: dict[str, dict[Optional[int], str]] = field(default_factory=dict)
    """host -> (GPU index, None for the host) -> cordoned, draining or drained."""

    def set_store(self, view: StoreView) -> list[str]:
        """A new read of the store; returns the hosts whose jobs or cordons in it changed, the
        only ones whose lines it can change (a job on a host has a slot there)."""
        new = {host: tuple(jobs) for host, jobs in jobs_by_host(view.jobs).items()}
        marked: dict[str, dict[Optional[int], str]] = {}
        for (host, gpu), state in marks(view.cordons, view.jobs).items():
            marked.setdefault(host, {})[gpu] = state
        old, self._on_host, self.store = self._on_host, new, view
        was, self._marks = self._marks, marked
        return [h for h in set(old) | set(new) | set(was) | set(marked)
                if old.get(h) != new.get(h) or was.get(h) != marked.get(h)]

    def out_of_service(self, host: str) -> dict[Optional[int], str]:
        """The host's own cordon (key None) and its GPUs' (by index), each's state."""
        return dict(self._marks.get(host, {}))

    def update(self, status: HostStatus, simulated: frozenset[str] = frozenset()) -> bool:
        """Rebuilds one host; returns whether its lines changed."""
        jobs = self._on_host.get(status.name, ())
        by_key = {j.key(self.store.uid): j for j in jobs} if self.store else {}
        placed = not_started(jobs, status.jobs.values(), self.store.uid) if self.store else []
        view = host_view(status, by_key, placed, simulated)
        marked = self._marks.get(status.name)
        if marked:
            view = HostView(dataclasses.replace(view.header, out_of_service=marked.get(None)),
                            tuple(dataclasses.replace(g, out_of_service=marked.get(
                                g.index, marked.get(None))) for g in view.gpus))
        old = self.hosts.get(status.name)
        self.hosts[status.name] = view
        if status.name not in self.order:
            self.order.append(status.name)
        return old is None or old.header != view.header or old.gpus != view.gpus

    def totals(self) -> Totals:
        views = [self.hosts[n] for n in self.order if n in self.hosts]
        states: dict[str, int] = {}
        for v in views:
            states[v.header.state] = states.get(v.header.state, 0) + 1
        gpus = [g for v in views for g in v.gpus]
        allocated = sum(g.allocated for g in gpus) / len(gpus) if gpus else 0.0
        pending = sum(1 for j in self.store.jobs if j.state == PENDING) if self.store else 0
        store = self.store
        out, brief = ((summary(store.cordons, store.jobs), summary(store.cordons, store.jobs,
                                                                    apart=False))
                      if store else ([], []))
        return Totals(len(views), tuple(sorted(states.items())), len(gpus), allocated,
                      sum(v.header.jobs for v in views), pending, tuple(out), tuple(brief))

    def gpu_rank(self, order: Order) -> dict[tuple[str, int], int]:
        """Each GPU's place in ``order``, (host, index) -> n: what a placement's ``j``/``k``
        go through, as the map draws the GPUs (a filter aside)."""
        views = ordered([self.hosts[n] for n in self.order if n in self.hosts], order)
        return {(g.host, g.index): n for n, g in enumerate(g for v in views for g in v.gpus)}

    def lines(self, pattern: Optional[Clocked] = None, inverse: bool = False,
              per_line: int = 0, order: Order = ORDERS[0]) -> list[Line]:
        """The map's lines: each host, then its GPUs (that match the filter), in ``order``.
        ``per_line`` > 0 is compact mode: that many GPUs share a line."""
        out: list[Line] = []
        for view in ordered([self.hosts[n] for n in self.order if n in self.hosts], order):
            name = view.header.name
            gpus = view.gpus
            if pattern is not None:
                host_hit = pattern.search(name + " " + view.header.state)
                gpus = tuple(g for g in gpus
                             if (pattern.search(g.text()) or host_hit) != inverse)
                if not gpus and host_hit == inverse:
                    continue
            out.append(view.header)
            if per_line > 0:
                out += [GpuGroupLine(gpus[i:i + per_line])
                        for i in range(0, len(gpus), per_line)]
            else:
                out += gpus
        return out


def compile_filter(text: str, before: Optional[Typed] = None) -> tuple[Optional[Typed], bool]:
    """k9s's filter: a case-insensitive regex (``Typed``); a leading ``!`` keeps what does not
    match. ``before``: the filter's pattern till now, kept if it is the same (a pattern found
    too slow stays matched as written)."""
    inverse = text.startswith("!")
    body = text[1:] if inverse else text
    if not body:
        return None, False
    return Typed.again(before, body), inverse
