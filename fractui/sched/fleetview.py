"""The live fleet as the placement core sees it: agents' snapshots and job records, plus the
store's decisions not yet launched, turned into ``Host``/``Gpu`` records. Pure: data in, data out.

Booked is what jobs hold, not what they use: a memory share books its MiB whether or not the job
has allocated them yet, a MIG instance held by a job is busy even while its process starts,
and before the host's snapshot shows it (job records come at once, snapshots each tick).
MIG instances that are idle and held by no job are left out of the layout, so the planner may
reuse their slots, and listed apart (``Gpu.idle_instances``), so that a request of their
profile that packs as well at one of them is put there: the agent takes an idle instance of the
same profile at the same start as it is, and destroys idle ones in the way (``destroy_idle``);
it never touches one with processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import (AbstractSet, Any, Collection, Dict, FrozenSet, Iterable, List, Mapping,
                    Optional, Sequence, Tuple)

from remote_agent import MODE_DESTROY_IDLE, MODE_RESET
from remote_agent.gpu.models import mig_geometry as geometry
from remote_agent.gpu.models import model as gpu_model
from remote_agent.gpu.models import short_name
from remote_agent.mig.layout import Geometry, Instance, Layout, misfit
from remote_agent.mig.planner import PlanError

from fractui.sched import mig
from fractui.sched.model import MILLI, Gpu, Host, Request
from fractui.sched.quota import charge, charged_by_gpu
from fractui.store.model import PENDING, PLACED, RUNNING, Job

USABLE = ("online", "degraded")
ACTIVE_AGENT_STATES = ("starting", "running")
FLIP_FEATURES = (MODE_RESET, MODE_DESTROY_IDLE)  # what a mode change before a launch asks


def seen_state(job: Job, record: Optional[Mapping[str, Any]]) -> str:
    """The state every view draws ``job`` in, given its agent's record of it (by its key;
    None: none): running once the agent reports it starting or running, though the store has it
    placed (or, in a read from before, pending) until the lease holder records the launch;
    else the store's. One rule, so the map, the GPU view, the jobs view and the job screen
    never tell one job two ways."""
    if job.state in (PENDING, PLACED) and record is not None \
            and record.get("state") in ACTIVE_AGENT_STATES:
        return RUNNING
    return job.state


def held_why(record: Mapping[str, Any]) -> str:
    """Why the agent holds a start it cannot read, in its words (``starting`` with a reason:
    its folder left unread and none of its processes found, it keeps its slice until an
    admin mends the folder; docs/decisions.md); "" for any other record."""
    return record.get("reason") or "" if record.get("state") == "starting" else ""


def not_started(jobs: Iterable[Job], records: Iterable[Mapping[str, Any]],
                store_uid: str) -> List[Job]:
    """Of the store's ``jobs`` on one host, those decided there (placed, a move's held target)
    that its agent (its job ``records``) does not run yet (``seen_state``): drawn placing,
    their room booked from the decision."""
    by_key = {r.get("key"): r for r in records}
    return [j for j in jobs if seen_state(j, by_key.get(j.key(store_uid))) == PLACED]


def flips_modes(hello: Optional[Mapping[str, Any]]) -> bool:
    """Whether a host's agent can make the MIG mode change a launch asks first (``mig.set_mode``
    with ``reset`` and ``destroy_idle``), by its hello's ``features``. An agent that does not
    list them (older than them: one baked into a job image) answers INVALID_PARAMS to such a
    call, so its GPUs are offered no change: their jobs take them in the mode they are in."""
    return lists(hello, *FLIP_FEATURES)


def lists(hello: Optional[Mapping[str, Any]], *features: str) -> bool:
    """Whether a host's agent lists every one of ``features`` in its hello (docs/protocol.md):
    only then may a client ask for them."""
    listed = (hello or {}).get("features")
    return isinstance(listed, list) and all(f in listed for f in features)


@dataclass
class HostView:
    """One host as the fleet last saw it (a HostStatus's data, without its locks)."""

    name: str
    state: str
    hello: Optional[Dict[str, Any]] = None
    snapshot: Optional[Dict[str, Any]] = None
    jobs: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # agent job id -> record
    mode_fixed: bool = False  # its config pins its GPUs' MIG modes (mig_mode = "fixed")
    no_flip: FrozenSet[str] = frozenset()
    """Its GPUs (UUIDs) offered no MIG mode change now: a change of theirs failed lately
    (fractui.scheduler.backoff)."""

    @classmethod
    def of(cls, status: Any, mode_fixed: bool = False,
           no_flip: AbstractSet[str] = frozenset()) -> "HostView":
        """A HostStatus's data as it is now (fractui.fleet.host; any object with its fields);
        ``no_flip``: GPUs held back from mode changes, of any host (this one's are kept)."""
        view = cls(status.name, status.state, status.hello, status.snapshot, dict(status.jobs),
                   mode_fixed)
        if no_flip:
            view.no_flip = frozenset(g.get("uuid") for g in view.gpu_records()) & frozenset(
                no_flip)
        return view

    def by_key(self) -> Dict[str, Dict[str, Any]]:
        return {j["key"]: j for j in self.jobs.values() if j.get("key")}

    def gpu_records(self) -> List[Dict[str, Any]]:
        return list((self.snapshot or {}).get("gpus") or (self.hello or {}).get("gpus") or [])

    def model(self, gpus: Sequence[int]) -> Optional[str]:
        """The model of these GPUs as the host names it (several: joined by " + ")."""
        names = {g.get("index"): g.get("name") for g in self.gpu_records()}
        found = sorted({str(names[i]) for i in gpus if names.get(i)})
        return " + ".join(found) or None


def job_memory_mib(job: Mapping[str, Any], gpus: Mapping[Any, Mapping[str, Any]]
                   ) -> Optional[int]:
    """A running job's GPU memory in use, from its host's snapshot: its MIG instance's memory,
    or on shared GPUs the memory of its processes on each of its GPUs (the agent's ``pid`` for
    it, and those the snapshot says are the job's: its workers). None when the snapshot does
    not show its GPU."""
    shown = [gpus[i] for i in job.get("gpus") or () if i in gpus]
    if not shown:
        return None
    if job.get("instance"):
        return sum(int(inst.get("memory_used_mib") or 0) for g in shown
                   for inst in g.get("instances") or () if inst.get("uuid") == job["instance"])
    return sum(int(p.get("used_mib") or 0) for g in shown for p in g.get("processes") or ()
               if p.get("pid") == job.get("pid") or (p.get("job") and p["job"] == job.get("id")))


def job_memory_cap_mib(job: Mapping[str, Any], gpu: Mapping[str, Any]) -> Optional[int]:
    """What a job's cap allows it on one of its GPUs (``gpu``, a snapshot's record): its MIG
    instance's memory, or its memory share (the agent record's ``memory_mib``, per GPU). None
    when the record names neither (an instance the snapshot does not show)."""
    if job.get("instance"):
        return next((int(inst.get("memory_mib") or 0) for inst in gpu.get("instances") or ()
                     if inst.get("uuid") == job["instance"]), None)
    share = job.get("memory_mib")
    return int(share) if share is not None else None


# What a host could ever hold, as ``facts`` keeps it: the fields placement reads of an idle host.
_HOST_FACTS = ("cpus", "memory_mib", "links", "features")
_GPU_FACTS = ("index", "uuid", "name", "memory_mib", "mig_capable", "mig_mode", "mig_pending")


def facts(view: HostView) -> Dict[str, Any]:
    """A host's lasting facts (CPUs, RAM, GPUs and their MIG modes), without what runs on it:
    they change only when its hardware or MIG modes do, so they can be kept and compared."""
    hello = view.hello or {}
    out: Dict[str, Any] = {k: hello.get(k) for k in _HOST_FACTS}
    out["mig_changes"] = (hello.get("privileges") or {}).get("mig_changes", True)
    # the config's pin of its modes (mig_mode = "fixed"), the lease holder's: a config of no
    # hosts, whose submit judges by these facts, has none to read
    out["mig_mode_fixed"] = view.mode_fixed
    out["gpus"] = [_gpu_facts(g) for g in view.gpu_records()]
    return out


def _gpu_facts(rec: Mapping[str, Any]) -> Dict[str, Any]:
    """A GPU's lasting facts, with the profile sizes its agent reported where they can be true."""
    out = {k: rec.get(k) for k in _GPU_FACTS}
    sizes = reported_sizes(rec, _model_geometry(rec))
    if sizes:
        out["mig_profile_mib"] = dict(sizes)
    return out


def signature(view: HostView) -> tuple:
    """What a scheduling pass reads of a host, and nothing else: its state, its lasting facts,
    its MIG instances and which are busy, the thousandths of each GPU processes outside fractui
    use beside shares, and its agent's job records (state, key, where they run). Two views with
    equal signatures build equal hosts (``build_hosts``); a snapshot that moves only utilisation
    or the memory fractui's jobs use leaves it equal, so it wakes no pass."""
    gpus = tuple((tuple(g.get(k) for k in _GPU_FACTS), gpu_geometry(g), g.get("layout_version"),
                  tuple((i.get("uuid"), i.get("gi_id"), i.get("profile"), i.get("start"),
                         i.get("size"), bool(i.get("busy"))) for i in g.get("instances") or ()),
                  _idle_for_mode(g), outside_milli(g))
                 for g in view.gpu_records())
    hello = view.hello or {}
    jobs = tuple(sorted((k, str(j.get("state")), str(j.get("key")), str(j.get("gpus")),
                         str(j.get("instance")), str(j.get("memory_mib")))
                        for k, j in view.jobs.items()))
    mig_changes = (hello.get("privileges") or {}).get("mig_changes", True)
    return (view.state, tuple(hello.get(k) for k in _HOST_FACTS), mig_changes, gpus, jobs,
            view.mode_fixed, tuple(sorted(view.no_flip)))


def idle_view(name: str, host_facts: Dict[str, Any], settled: bool = True) -> HostView:
    """The host as it would be with nothing running on it: what it could ever hold — each GPU
    in the MIG mode it has once a pending change took effect (a live GPU whose change is
    pending takes no new work, ``_gpu``; idle and settled it would), or with ``settled``
    False as a pass sees it until then: in the mode it has now, its change still pending, so
    it takes nothing and is offered no change (``_idle_for_mode``), pinned host or not."""
    hello = {k: host_facts.get(k) for k in _HOST_FACTS}
    hello["privileges"] = {"mig_changes": host_facts.get("mig_changes", True)}
    gpus = [dict(g, instances=[], mig_mode=_settled(g) if settled else g.get("mig_mode"),
                 mig_pending=_settled(g))
            for g in host_facts.get("gpus") or []]
    return HostView(name, "online", hello, {"gpus": gpus}, {})


def _settled(gpu: Dict[str, Any]) -> Any:
    """A GPU's MIG mode once its pending change, if any, took effect."""
    pending = gpu.get("mig_pending")
    return gpu.get("mig_mode") if pending is None else pending


def gpu_geometry(rec: Mapping[str, Any]) -> Optional[Geometry]:
    """The MIG geometry of a GPU as its agent reports it: its model's, each profile's memory as
    NVML states it on that GPU where the agent says (``mig_profile_mib``; the model table only
    estimates it for most models, above what NVML reports, so a slice chosen by memory could
    otherwise hold less than its job asked for)."""
    geo = _model_geometry(rec)
    sizes = reported_sizes(rec, geo)
    return _with_memory(geo, sizes) if sizes else geo


def _model_geometry(rec: Mapping[str, Any]) -> Optional[Geometry]:
    name = rec.get("name")
    return geometry(name) if isinstance(name, str) else None


def reported_sizes(rec: Mapping[str, Any], geo: Optional[Geometry]
                   ) -> Tuple[Tuple[str, int], ...]:
    """The profile sizes an agent reported that can be true: of a profile of the GPU's model
    (``geo``; none without one), a whole number of MiB above 0 and no more than the GPU's
    memory; the rest is left to the model's table (a hostile or broken agent cannot make a
    slice look larger than its GPU)."""
    sizes = rec.get("mig_profile_mib")
    memory = rec.get("memory_mib")
    if geo is None or not isinstance(sizes, dict) or type(memory) is not int:
        return ()
    return tuple((p.name, sizes[p.name]) for p in geo.profiles
                 if type(sizes.get(p.name)) is int and 0 < sizes[p.name] <= memory)


@lru_cache(maxsize=256)
def _with_memory(geo: Geometry, sizes: Tuple[Tuple[str, int], ...]) -> Geometry:
    found = dict(sizes)
    return replace(geo, profiles=tuple(replace(p, memory_mib=found.get(p.name, p.memory_mib))
                                       for p in geo.profiles))


def model_name(name: str) -> str:
    """The short name queues filter on ("A100-80GB"), or NVML's name for other models."""
    return short_name(name) or name


def request_of(job: Job) -> Request:
    """The placement core's request for a store job: its queue's portion at submit time."""
    r = job.request
    gpus = int(r.get("gpus") or 0)
    isolation = r.get("isolation") or "any"
    if gpus > 1:
        isolation = "share"  # an agent starts a job on one MIG instance, never several
    return Request(name=str(job.id), cpu_milli=int(round(float(r.get("cpus") or 0) * 1000)),
                   memory_mib=int(round(float(r.get("memory") or 0) * 1024)),
                   gpu=float(r.get("gpu") or 0.0), mig=r.get("mig") or None,
                   memory_gib=float(r.get("memory_gib") or 0.0), gpus=gpus,
                   models=frozenset(r.get("gpu_models") or ()),
                   hosts=frozenset(r.get("hosts") or ()), isolation=isolation)


def share_mib(req: Request, memory_mib: int, milli: int) -> int:
    """The MiB a share of ``milli`` of a GPU of ``memory_mib`` books: exactly what was asked
    for memory_gib requests, the whole GPU for whole GPUs, else the fraction rounded down."""
    if req.gpus:
        return memory_mib
    if req.memory_gib:
        return int(math.ceil(req.memory_gib * 1024))
    return memory_mib * milli // MILLI


def build_hosts(views: Iterable[HostView], store_jobs: Iterable[Job], store_uid: str,
                leave_out: Collection[str] = ()) -> List[Host]:
    """The placement core's fleet: every usable host, with what its jobs book taken away.

    ``leave_out``: agent keys of jobs to treat as gone (a preemption being considered)."""
    on_host = jobs_by_host(store_jobs)
    hosts = []
    for view in views:
        if view.state not in USABLE or not view.hello:
            continue
        hosts.append(_host(view, on_host.get(view.name, []), store_uid, set(leave_out)))
    return hosts


class HostCache:
    """``build_hosts`` across passes: each host is built again only when what it is built from
    changed — its view (the same objects as last time, else an equal ``signature``) or the
    store's jobs on it — and handed out as a copy, since a placer changes the hosts it is
    given as it commits."""

    def __init__(self) -> None:
        # host -> (its view, the signature, the store jobs on it, the host built from them)
        self._built: Dict[str, Tuple[HostView, tuple, tuple, Host]] = {}

    def update(self, views: Iterable[HostView], store_jobs: Iterable[Job],
               store_uid: str) -> bool:
        """Brings the hosts up to ``views`` and the store's jobs; returns whether any host
        changed (built again, come, gone or moved in the views' order) since the last call."""
        on_host = jobs_by_host(store_jobs)
        built: Dict[str, Tuple[HostView, tuple, tuple, Host]] = {}
        changed = False
        for view in views:
            if view.state not in USABLE or not view.hello:
                continue
            jobs = on_host.get(view.name, [])
            mine = tuple((j.id, j.attempt, j.state, j.slot) for j in jobs)
            last = self._built.get(view.name)
            if last is not None and last[2] == mine and _same_objects(last[0], view):
                sig = last[1]
            else:
                sig = signature(view)
            if last is None or last[2] != mine or last[1] != sig:
                host, changed = _host(view, jobs, store_uid, set()), True
            else:
                host = last[3]
            built[view.name] = (view, sig, mine, host)
        changed = changed or list(built) != list(self._built)
        self._built = built
        return changed

    def copies(self) -> List[Host]:
        """The hosts as last updated, each a copy: a placer changes the hosts it is given as
        it commits."""
        return [_copy(b[3]) for b in self._built.values()]


def _same_objects(a: HostView, b: HostView) -> bool:
    """Whether two views hold the very same records, or job records equal to them (a host's
    session replaces a record when news comes, never changes one in place; records compare
    by identity first, so this costs one C loop per host)."""
    return a.state == b.state and a.hello is b.hello and a.snapshot is b.snapshot and \
        a.jobs == b.jobs and a.mode_fixed == b.mode_fixed and a.no_flip == b.no_flip


def _copy(host: Host) -> Host:
    return Host(host.name, host.cpu_milli, host.memory_mib,
                [Gpu(g.model, g.memory_mib, g.free_milli, g.layout, g.mig_geometry, g.mode_reset,
                     g.idle_instances) for g in host.gpus],
                host.cpu_free, host.memory_free, host.links)


def jobs_by_host(store_jobs: Iterable[Job]) -> Dict[str, List[Job]]:
    """The store's jobs by the host whose room they hold; a job moving by hand holds its
    target too, as the decision it becomes (its next attempt placed there, by that key), so
    no placement takes the room while it stops."""
    on_host: Dict[str, List[Job]] = {}
    for job in store_jobs:
        for holder in job.holding():
            on_host.setdefault(holder.slot.host, []).append(holder)  # type: ignore[union-attr]
    return on_host


def held_by_gpu(store_jobs: Iterable[Job]) -> Dict[Tuple[str, int], float]:
    """GPUs charged on each (host, GPU) by the room the store's jobs hold, as ``jobs_by_host``
    lays them: a job moving by hand its target's too, so a view of held room (the metrics'
    allocation, the GPUs' time's idle) never reads the target free while the move holds it."""
    return charged_by_gpu(j.slot for jobs in jobs_by_host(store_jobs).values() for j in jobs)


def _host(view: HostView, jobs: List[Job], store_uid: str, leave_out: set) -> Host:
    hello = view.hello or {}
    mig_ok = (hello.get("privileges") or {}).get("mig_changes", True)
    agent = {k: j for k, j in view.by_key().items()
             if j.get("state") in ACTIVE_AGENT_STATES and k not in leave_out}
    gpus = [_gpu(rec, mig_ok, agent.values()) for rec in view.gpu_records()]
    if mig_ok and not view.mode_fixed and flips_modes(hello):
        for gpu, rec in zip(gpus, view.gpu_records()):
            if rec.get("uuid") not in view.no_flip:
                _may_flip(gpu, rec, agent.values())
    # a pod's CPU quota may be fractional (1.5): booked in milli-CPUs
    host = Host(view.name, int(round(float(hello.get("cpus") or 0) * 1000)),
                int(hello.get("memory_mib") or 0), gpus, links=host_links(hello, len(gpus)))
    for job in jobs:
        key = job.key(store_uid)
        if key in leave_out:
            continue
        req = request_of(job)
        host.cpu_free -= req.cpu_milli
        host.memory_free -= req.memory_mib
        if key not in agent:  # decided, not yet running: book its slot from the decision
            _book_decision(host, job)
        assert job.slot is not None
        for g in job.slot.gpus:  # a GPU the store has a job on keeps its mode
            if 0 <= g < len(host.gpus):
                host.gpus[g].mig_geometry = None
    return host


def host_links(hello: Mapping[str, Any], count: int) -> Tuple[Tuple[str, ...], ...]:
    """The hello's link matrix for a host of ``count`` GPUs; empty (unknown) where the agent
    reports none (an older agent, an NVML error: ``links_error``) or one of another shape."""
    raw = hello.get("links")
    if not isinstance(raw, list) or len(raw) != count or not all(
            isinstance(row, list) and len(row) == count
            and all(isinstance(x, str) for x in row) for row in raw):
        return ()
    return tuple(tuple(row) for row in raw)


def _idle_for_mode(rec: Mapping[str, Any]) -> bool:
    """Whether a GPU, as its agent reports it, could have its MIG mode changed now: its
    processes known and none (anyone's: a process outside fractui counts), no instance busy,
    no mode change pending. Idle instances do not count: the change destroys them first."""
    return ("processes" in rec and not rec.get("processes")
            and rec.get("mig_pending", rec.get("mig_mode")) == rec.get("mig_mode")
            and not any(i.get("busy") for i in rec.get("instances") or ()))


def _may_flip(gpu: Gpu, rec: Mapping[str, Any], agent_jobs: Iterable[Dict[str, Any]]) -> None:
    """Offers the placer a MIG mode change on an idle GPU its agent reports MIG-capable (a
    model that has MIG may not, e.g. in a VM), of a known geometry, not degraded by a change
    that failed, that no agent job holds (``Gpu.mig_geometry``; ``mode_reset`` from its
    model's facts)."""
    index = rec.get("index")
    if not rec.get("mig_capable") or rec.get("degraded") or not _idle_for_mode(rec) or any(
            index in (j.get("gpus") or []) for j in agent_jobs):
        return
    geo = gpu_geometry(rec)
    if geo is not None:
        gpu.mig_geometry = geo
        gpu.mode_reset = gpu_model(rec.get("name") or "").mode_reset


def _gpu(rec: Mapping[str, Any], mig_ok: bool, agent_jobs: Iterable[Dict[str, Any]]) -> Gpu:
    index, memory = rec.get("index"), int(rec.get("memory_mib") or 0)
    name = model_name(rec.get("name") or "")
    mine = [j for j in agent_jobs if index in (j.get("gpus") or [])]
    if any(bool(j.get("instance") or j.get("mig")) != bool(rec.get("mig_mode")) for j in mine):
        # a job on a MIG instance (or one it is being given: ``mig``) of a GPU the snapshot has
        # with MIG off, or the other way: the snapshot predates the mode change before that
        # job's launch (job news come at once, snapshots each tick); what is free there is
        # known when the next one comes
        return Gpu(name, memory, free_milli=0)
    if rec.get("mig_mode"):
        full = gpu_layout(rec, mine)
        if full is None or not mig_ok or rec.get("mig_pending") is False:
            return Gpu(name, memory, free_milli=0)  # MIG we cannot change: nothing to give
        layout = Layout(full.geometry, tuple(i for i in full.instances if i.busy))
        idle = tuple(sorted((i.profile, i.start) for i in full.instances if not i.busy))
        return Gpu(name, memory, free_milli=_free_compute(layout), layout=layout,
                   idle_instances=idle)
    if rec.get("mig_pending"):  # MIG comes on at the next reset, which new work would block
        return Gpu(name, memory, free_milli=0)
    if not memory:
        return Gpu(name, memory, free_milli=0)
    booked = sum(int(j.get("memory_mib") or 0) for j in mine)
    free = max(0, memory - booked) * MILLI // memory
    return Gpu(name, memory, free_milli=max(0, free - outside_milli(rec)))


def outside_mib(rec: Mapping[str, Any]) -> int:
    """GPU memory that processes outside fractui use beside shares (someone's own program, a
    display server), as the agent's snapshot tells them apart (a process record's ``job`` null;
    on a MIG instance a process makes the instance busy instead). The agent refuses a share
    that does not fit beside them; counted here, the scheduler does not offer it. An agent that
    does not tell (no ``job`` key) counts nothing here: it still refuses. The jobs' own MPS
    server (``service`` "mps") is not counted, as the agent does not count it."""
    return sum(int(p.get("used_mib") or 0) for p in rec.get("processes") or ()
               if isinstance(p, dict) and "job" in p and p["job"] is None
               and p.get("instance") is None and not mps_layer(p))


def mps_layer(proc: Mapping[str, Any]) -> bool:
    """Whether a snapshot's process is the jobs' MPS server, as its agent tells: memory read as
    neither a job's nor anyone else's (the agent's ``caps.mps_server`` says what it is)."""
    return proc.get("service") == "mps"


def outside_use(views: Iterable[HostView]) -> List[Tuple[str, int, int]]:
    """(host, GPU index, MiB) of each GPU in service on which processes outside fractui use
    memory beside shares: a job that finds no room is told, since it may fit once they end."""
    found = []
    for view in views:
        if view.state in USABLE and view.hello:
            for rec in view.gpu_records():
                mib = outside_mib(rec)
                if mib:
                    found.append((view.name, int(rec.get("index") or 0), mib))
    return found


def outside_milli(rec: Mapping[str, Any]) -> int:
    """``outside_mib`` in thousandths of the GPU, rounded up: what placement takes from a
    share's room, and what the host's signature holds, so that others' memory moving within a
    thousandth wakes no pass."""
    memory = int(rec.get("memory_mib") or 0)
    return math.ceil(outside_mib(rec) * MILLI / memory) if memory else 0


def gpu_layout(rec: Mapping[str, Any], agent_jobs: Iterable[Dict[str, Any]]
               ) -> Optional[Layout]:
    """A MIG GPU's layout as placement books it (``booked_layout``), or None: the GPU is given
    nothing."""
    booked = booked_layout(rec, agent_jobs)
    return None if booked is None else booked.layout


@dataclass(frozen=True)
class Booked:
    """A MIG GPU as placement books it, and as the map and the GPU view draw it."""

    layout: Layout
    making: Dict[int, Mapping[str, Any]]
    """By GI id, the record of each job whose instance the snapshot does not show yet, booked
    where its launch makes it: an idle twin the snapshot shows there, or one it makes (its
    GI id not the snapshot's). The snapshot's idle instances in their way are not in
    ``layout`` (the launch destroys them)."""
    made: Tuple[Instance, ...]
    """Those of ``making`` the snapshot does not have at all (their launches make them)."""


def booked_layout(rec: Mapping[str, Any], agent_jobs: Iterable[Dict[str, Any]]
                  ) -> Optional[Booked]:
    """A MIG GPU's layout as its agent sees it, every instance a job holds marked busy, and
    the instance of each job whose record is newer than the snapshot booked where its launch
    makes it (``book_launch``); None for a GPU without MIG, of a model fractui does not know, whose
    instances no GPU of its model could hold (a broken agent's record), or whose job records
    and snapshot cannot both be read (until the next snapshot): the GPU is given nothing.
    ``agent_jobs``: the agent's live job records (of any GPU of the host)."""
    geo = gpu_geometry(rec) if rec.get("mig_mode") else None
    if geo is None or misfit(geo, rec.get("instances") or []) is not None:
        return None
    mine = [j for j in agent_jobs if rec.get("index") in (j.get("gpus") or [])]
    held = {j.get("instance") for j in mine} - {None}  # (a record naming none holds none)
    base = tuple(
        Instance(gi_id=int(i["gi_id"]), profile=i["profile"], start=i["start"], size=i["size"],
                 compute_slices=_compute(geo, i["profile"]), uuid=i.get("uuid"),
                 busy=bool(i.get("busy")) or i.get("uuid") in held,
                 remade_of=tuple(i.get("remade_of") or ()))
        for i in rec.get("instances") or [])
    layout = Layout(geo, base)
    making: Dict[int, Mapping[str, Any]] = {}
    for job in unshown(rec, mine):
        booked = book_launch(layout, job.get("mig"))
        if booked is None:
            return None
        layout, gi = booked
        making[gi] = job
    shown = {i.gi_id for i in base}
    return Booked(layout, making, tuple(i for i in layout.instances
                                        if i.gi_id in making and i.gi_id not in shown))


def unshown(rec: Mapping[str, Any], records: Iterable[Mapping[str, Any]]
            ) -> List[Mapping[str, Any]]:
    """Of an agent's live job ``records``, those on GPU ``rec`` whose instance its snapshot does
    not show yet (none named, or one it does not list): job news come at once, snapshots each
    tick. Cheap, so that a view asks ``booked_layout`` only where one is."""
    shown = {i.get("uuid") for i in rec.get("instances") or () if i.get("uuid")}
    return [j for j in records if rec.get("index") in (j.get("gpus") or [])
            and j.get("instance") not in shown]


def book_launch(layout: Layout, launched: Any) -> Optional[Tuple[Layout, int]]:
    """``layout`` with the instance of a job its snapshot does not show yet, held, and that
    instance's GI id: the agent tells a launch's record at once and its snapshot at the next
    tick, and a pass between the two that read the snapshot alone would place a second slice
    there (refused by the agent: "busy instance ... in the way"). The record's ``mig`` says
    where its launch makes it, or takes an idle twin there (marked busy), destroying idle
    instances in its way. None where the record does not say (a launch onto an instance named
    by uuid), or the snapshot has a busy instance there (one of its own profile too: another
    job's, or one with processes, which the agent never gives a launch): what the GPU holds
    is known once the next snapshot comes."""
    asked = launched if isinstance(launched, dict) else {}
    profile, start = asked.get("profile"), asked.get("start")
    if not isinstance(profile, str) or type(start) is not int:
        return None
    twin = next((i for i in layout.instances if (i.profile, i.start) == (profile, start)
                 and not i.busy), None)  # (a busy one is in its way: the agent refuses it)
    if twin is not None:
        return Layout(layout.geometry, tuple(replace(i, busy=True) if i is twin else i
                                             for i in layout.instances)), twin.gi_id
    try:
        after = mig.commit(layout, profile, start)[1]
    except PlanError:
        return None
    return after, after.instances[-1].gi_id  # (commit adds the one it makes last)


def _compute(geo: Geometry, profile: str) -> int:
    p = geo.profile(profile)
    return p.compute_slices if p is not None else geo.compute_slices


def _free_compute(layout: Layout) -> int:
    geo = layout.geometry
    return (geo.compute_slices - layout.compute_used()) * MILLI // geo.compute_slices


def _book_decision(host: Host, job: Job) -> None:
    slot = job.slot
    assert slot is not None
    req = request_of(job)
    for g in slot.gpus:
        if not 0 <= g < len(host.gpus):
            continue
        gpu = host.gpus[g]
        _decided_mode(gpu, slot.profile is not None)
        if gpu.layout is not None and slot.profile:
            start = slot.start if slot.start is not None else mig.launch_start(
                gpu.layout.geometry, mig.signature(gpu.layout), gpu.idle_instances,
                slot.profile)  # left open (by hand): where its launch completes it
            if start is None:
                continue  # no room for it: its launch will be refused and requeued
            try:
                plan, layout = mig.commit(gpu.layout, slot.profile, start)
            except PlanError:
                continue  # it cannot go there: as above
            gpu.idle_instances = mig.idle_after(layout.geometry, gpu.idle_instances,
                                                slot.profile, plan.start)
            gpu.layout, gpu.free_milli = layout, _free_compute(layout)
        elif gpu.layout is None and gpu.memory_mib:
            mib = slot.memory_mib or share_mib(req, gpu.memory_mib, req.milli)
            gpu.free_milli = max(0, gpu.free_milli - math.ceil(mib * MILLI / gpu.memory_mib))


def _decided_mode(gpu: Gpu, mig: bool) -> None:
    """A GPU whose MIG mode a decision not yet launched changes (its launch changes it
    first) is booked as it will be: empty, in that mode."""
    if gpu.mig == mig or gpu.mig_geometry is None:
        return  # the mode it has, or one that cannot change: a launch there is refused
    gpu.layout, gpu.free_milli, gpu.idle_instances = gpu.idle_in(mig)


def placement_charge(host: Host, gpus: Sequence[int], profile: Optional[str],
                     share: Optional[int]) -> float:
    """``quota.charge`` of a slot on the placement core's host."""
    return charge(profile, share, [(host.gpus[g].memory_mib, _charged_geometry(
        host.gpus[g], profile)) for g in gpus])


def _charged_geometry(gpu: Gpu, profile: Optional[str]) -> Optional[Geometry]:
    """The MIG geometry a slot on ``gpu`` is charged by: its layout's, or, for a slice on a
    GPU whose MIG mode the slot turns on, its model's; none for a share."""
    if profile is None:
        return None
    return gpu.layout.geometry if gpu.layout is not None else gpu.mig_geometry


def record_charge(records: Sequence[Mapping[str, Any]], gpus: Sequence[int],
                  profile: Optional[str], share: Optional[int]) -> float:
    """``quota.charge`` of a slot on GPUs as agents report them (a snapshot's GPU records, or
    the inventory's): a slice by its model's geometry (the GPU's MIG mode may be turned on
    for it), a share by its memory."""
    return charge(profile, share, [(int(records[g].get("memory_mib") or 0),
                                    gpu_geometry(records[g]) if profile else None)
                                   for g in gpus])
