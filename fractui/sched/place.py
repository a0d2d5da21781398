"""Placement: one request in, the best feasible (host, GPUs, slice) out, fleet-wide.

Policies (``POLICIES``): ``first-fit``, ``best-fit`` and ``fgd`` as the FGD simulator scores them
(Weng et al., ATC '23), and ``fractui``: FGD's fragmentation descent on a measure that also counts
idle GPUs the host's CPU cannot back and weighs each request class by how scarce its GPUs are
(``Placer._host_frag``, ``scarcity_weighted``). Every score is a function of one host's state, so
it is cached per host and per request class and recomputed only for the host a decision touched;
identical hosts (most of a fresh fleet) share one memo entry, and the memos are bounded
(``memo_limit``). The memos that name no host (``Memos``) may outlive the placer: the scheduler
keeps them across passes, so a pass whose mix of requests did not change scores nothing it
scored before. A decision does not scan the fleet: per request class the hosts are ranked
(``ranking.Ranking``) and only those changed since that class last asked are scored again. Within
one placer, a request placed again before any commit is answered from the last answer. Ties go to
a fixed per-seed random host order, as in the simulator. Pure: no I/O,
no clock, deterministic for a fleet and a seed.

A flexible GPU (``Gpu.mig_geometry`` set) serves MIG slices or memory shares as its MIG mode is
now; a request that asks for one of them and fits no GPU as it is may change an idle flexible
GPU's mode (``Placement.modes``). F_n counts an idle flexible GPU as usable in either mode.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Dict, Hashable, List, Optional, Sequence, Tuple, Union

from remote_agent.mig.layout import Geometry, Layout

from fractui.sched import mig, topology
from fractui.sched.model import MILLI, Gpu, Host, Placement, Request
from fractui.sched.ranking import Ranking

POLICIES = ("first-fit", "best-fit", "fgd", "fractui")
MAX_SPEC_CPU = 128_000  # the simulator's normalisation: 128 cores, 8 GPUs
MAX_SPEC_GPU = 8 * MILLI
LEVELS = 100  # integer score grain, as the simulator truncates FGD's score
MEMO_LIMIT = 200_000  # entries a memo holds before it is cleared: a long-running placer is bounded

# model, memory MiB, MIG geometry when MIG is on; a flexible GPU (its MIG mode may change while
# it is idle) has its geometry in either mode and a fourth item, True: its key says the mode
GpuKind = Union[Tuple[str, int, Optional[Geometry]], Tuple[str, int, Geometry, bool]]
GpuKey = Hashable  # free milli without MIG, the layout's signature with MIG


@dataclass(frozen=True)
class TypicalClass:
    """One kind of request the fleet should stay able to host, and how often it comes."""

    request: Request
    weight: float


@dataclass(frozen=True)
class Option:
    """One way to put a request on one host: GPU i gets share milli[i] or profile[i] at start[i]."""

    gpus: Tuple[int, ...]
    milli: Tuple[int, ...]
    profiles: Tuple[Optional[str], ...]
    starts: Tuple[int, ...]
    keys_after: Tuple[GpuKey, ...]  # the whole host's GPU keys once it ran
    link: Optional[str] = None  # the slowest link among its GPUs, where the host's are known
    modes: Tuple[Optional[bool], ...] = ()  # MIG turned on/off first per GPU (empty: no change)


def class_key(req: Request) -> tuple:
    """What a host's score for ``req`` depends on (not its name, RAM or host filter). Atomic
    items only (the models sorted, not a frozenset): the memo keys that hold it are then left
    alone by the garbage collector (``Memos``)."""
    return (req.cpu_milli, req.gpu, req.mig, req.memory_gib, req.gpus,
            tuple(sorted(req.models)), req.isolation)


def typical_classes(requests: Sequence[Request], coverage: float = 0.95
                    ) -> Tuple[TypicalClass, ...]:
    """FGD's target workload: the most frequent request classes covering ``coverage`` of the
    requests, weights renormalised to sum to 1."""
    counts = Counter(class_key(r) for r in requests)
    first: Dict[tuple, Request] = {}
    for r in requests:
        first.setdefault(class_key(r), r)
    kept: List[Tuple[tuple, int]] = []
    covered = 0
    for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        if covered >= coverage * len(requests):
            break
        kept.append((key, n))
        covered += n
    return tuple(TypicalClass(first[k], n / covered) for k, n in kept)


def _share(kind: GpuKind, req: Request) -> int:
    return req.share_milli(kind[0], kind[1])


def _mig_on(kind: GpuKind, key: GpuKey) -> bool:
    """Whether the GPU serves MIG slices now: a fixed GPU by its kind, a flexible one by its key."""
    return kind[2] is not None and (len(kind) < 4 or type(key) is tuple)


def _flipped(kind: GpuKind, key: GpuKey) -> Optional[GpuKey]:
    """A flexible GPU's key once its MIG mode is changed, if it is idle; None otherwise."""
    if len(kind) < 4 or _idle(kind, key) != MILLI:
        return None
    return MILLI if type(key) is tuple else ()


def _idle(kind: GpuKind, key: GpuKey) -> int:
    geo = kind[2]
    if geo is None or type(key) is int:  # no MIG now (a flexible GPU's key says)
        return key  # type: ignore[return-value]
    return mig.free_compute_milli(geo, key)  # type: ignore[arg-type]


def _take(kind: GpuKind, key: GpuKey, req: Request
          ) -> Optional[Tuple[int, Optional[str], int, GpuKey]]:
    """``req`` on one GPU: (share, profile, start, key after), or None if it does not fit."""
    geo = kind[2]
    if not _mig_on(kind, key):
        s = _share(kind, req)
        if not s or key < s:  # type: ignore[operator]
            return None
        return s, None, -1, key - s  # type: ignore[operator]
    if req.models and kind[0] not in req.models:
        return None
    prof = mig.profile_for(req, geo)  # type: ignore[arg-type]
    if prof is None:
        return None
    start = mig.best_start(geo, key, prof.name)  # type: ignore[arg-type]
    if start is None:
        return None
    return 0, prof.name, start, mig.after(geo, key, prof.name, start)  # type: ignore[arg-type]


def _flip_take(kind: GpuKind, key: GpuKey, req: Request
               ) -> Optional[Tuple[int, Optional[str], int, GpuKey, Optional[bool]]]:
    """``req`` on one idle flexible GPU once its MIG mode is changed (the 5th item: MIG on), or
    None if it is not one or ``req`` does not fit it then either."""
    other = _flipped(kind, key)
    t = None if other is None else _take(kind, other, req)
    return None if t is None else t + (type(other) is tuple,)


def options(kinds: Tuple[GpuKind, ...], keys: Tuple[GpuKey, ...], req: Request,
            shares: Optional[Tuple[int, ...]] = None, links: topology.Links = (),
            flip: bool = False) -> List[Option]:
    """Every way ``req`` fits a host's GPUs: one option per usable GPU for a slice, for k whole
    GPUs, of each model the host has k usable of, the k that share the fastest link (``links``,
    the host's; unknown: the first k), one GPU-less option for CPU only. ``shares``: its share
    of each GPU, when none has MIG (integer comparisons only). ``flip``: an idle flexible GPU
    may also be used with its MIG mode changed (options then say so in ``modes``); a GPU that
    fits as it is is used as it is for whole GPUs. A job's GPUs are of one model: its slot
    books one size of memory on each, and its processes expect GPUs alike."""
    if not req.gpu_count:
        return [Option((), (), (), (), keys)]
    taken: List[Tuple[int, tuple]] = []
    alike: Dict[Tuple[str, int], int] = {}  # usable GPUs of each model (and memory) so far
    # the first k usable GPUs are the whole answer only where every GPU is of one model
    enough = req.gpus if req.gpus and not links and all(k[:2] == kinds[0][:2] for k in kinds) else 0
    for i, (kind, key) in enumerate(zip(kinds, keys)):
        if shares is None:
            t = _take(kind, key, req)
        else:
            s = shares[i]
            t = (s, None, -1, key - s) if s and key >= s else None  # type: ignore[operator]
        if flip and (t is None or not req.gpus):
            f = _flip_take(kind, key, req)
            if f is not None:
                if t is not None:
                    taken.append((i, t + (None,)))
                t = f
        if t is not None:
            taken.append((i, t if len(t) == 5 else t + (None,)))
            alike[kind[:2]] = alike.get(kind[:2], 0) + 1
            if len(taken) == enough:
                break
    if req.gpus:
        return [_whole([(i, t) for i, t in taken if kinds[i][:2] == model], keys, req.gpus,
                       links) for model, n in alike.items() if n >= req.gpus]
    return [Option((i,), (t[0],), (t[1],), (t[2],), keys[:i] + (t[3],) + keys[i + 1:],
                   modes=_modes((t[4],)))
            for i, t in taken]


def _whole(taken: List[Tuple[int, tuple]], keys: Tuple[GpuKey, ...], k: int,
           links: topology.Links) -> Option:
    """k whole GPUs of ``taken`` (usable ones of one model): those sharing the fastest link
    (unknown: the first k)."""
    link = None
    if links:
        chosen = set(topology.pick(links, [i for i, _ in taken], k))
        taken = [(i, t) for i, t in taken if i in chosen]
        link = topology.slowest(links, [i for i, _ in taken])
    else:
        taken = taken[:k]
    after = list(keys)
    for i, t in taken:
        after[i] = t[3]
    return Option(tuple(i for i, _ in taken), tuple(t[0] for _, t in taken),
                  tuple(t[1] for _, t in taken), tuple(t[2] for _, t in taken),
                  tuple(after), link=link, modes=_modes(tuple(t[4] for _, t in taken)))


def _modes(modes: Tuple[Optional[bool], ...]) -> Tuple[Optional[bool], ...]:
    """Per-GPU mode changes, or () when there are none (as on a fleet without flexible GPUs)."""
    return modes if any(m is not None for m in modes) else ()


def host_frag(kinds: Tuple[GpuKind, ...], cpu_free: int, keys: Tuple[GpuKey, ...],
              classes: Sequence[TypicalClass]) -> float:
    """FGD's node fragmentation F_n: per typical class, the idle GPU milli it could not use here
    (all of it if the host cannot take the class at all), weighted by the class's frequency."""
    idle = [_idle(k, key) for k, key in zip(kinds, keys)]
    idle_sum = sum(idle)
    total = 0.0
    for cls in classes:
        r = cls.request
        need = r.gpu_count
        if not need or cpu_free < r.cpu_milli:
            total += cls.weight * idle_sum
            continue
        fit = 0
        frag = 0
        for kind, key, i in zip(kinds, keys, idle):
            # an idle flexible GPU serves a class in either MIG mode
            if _take(kind, key, r) is None and _flip_take(kind, key, r) is None:
                frag += i
            else:
                fit += 1
        total += cls.weight * (frag if fit >= need else idle_sum)
    return total


def _prepare(kinds: Tuple[GpuKind, ...], classes: Sequence[TypicalClass]) -> list:
    """Per class (weight, CPU, GPUs needed, its share of each GPU) for a host without MIG GPUs,
    so its F_n is integer comparisons only; [] for a host with MIG GPUs (planner needed)."""
    if any(k[2] is not None for k in kinds):
        return []
    return [(c.weight, c.request.cpu_milli, c.request.gpu_count,
             tuple(_share(k, c.request) for k in kinds)) for c in classes]


def _shared_frag(prep: list, cpu_free: int, keys: Tuple[int, ...]) -> float:
    """``host_frag`` for a host without MIG GPUs: the hot path of every decision."""
    idle_sum = sum(keys)
    total = 0.0
    for w, cpu, need, shares in prep:
        if not need or cpu_free < cpu:
            total += w * idle_sum
            continue
        fit = frag = 0
        for s, key in zip(shares, keys):
            if s and key >= s:
                fit += 1
            else:
                frag += key
        total += w * (frag if fit >= need else idle_sum)
    return total


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _fresh(kind: GpuKind) -> GpuKey:
    """An idle GPU's key: its whole share without MIG, no instances with MIG."""
    return MILLI if kind[2] is None else ()


def _fresh_milli(kind: GpuKind, req: Request) -> int:
    """The milli one request of this class holds on an idle GPU of this kind (0: none fits); on
    a flexible GPU, in the MIG mode where it holds least."""
    held = [MILLI - _idle(kind, t[3]) for t in (
        _take(kind, key, req) for key in ((MILLI, ()) if len(kind) > 3 else (_fresh(kind),)))
        if t is not None]
    return min(held, default=0)


def scarcity_weighted(classes: Sequence[TypicalClass], gpus: Counter
                      ) -> Tuple[TypicalClass, ...]:
    """Each GPU class's weight divided by q², q the share of the fleet's GPUs (``gpus``: how
    many of each kind) it can use at all, then renormalised: a class limited to a few GPU models
    loses more per GPU another class takes there, and is likelier to find them taken. Classes
    that can use every GPU, or none, keep q = 1."""
    total = sum(gpus.values())
    out = []
    for c in classes:
        usable = sum(n for k, n in gpus.items() if _fresh_milli(k, c.request))
        q = usable / total if c.request.gpu_count and usable else 1.0
        out.append((c, c.weight / (q * q)))
    norm = sum(w for _, w in out)
    return tuple(TypicalClass(c.request, w / norm) for c, w in out) if norm else tuple(classes)


def cpu_per_gpu(classes: Sequence[TypicalClass], gpus: Counter, fleet_ratio: float = math.inf
                ) -> Tuple[float, float]:
    """(weight, CPU milli per GPU milli) of the classes that take GPUs, over the fleet's GPUs
    (``gpus``: how many of each kind) they can use: how much CPU an idle GPU needs to stay usable
    to the mix. (0, 0) when no class takes a GPU or needs CPU. The CPU of the classes without a
    GPU counts too when the whole mix needs more CPU per GPU milli than the fleet has
    (``fleet_ratio``): CPU then runs out before the GPUs do, and every core a CPU-only job takes
    beside an idle GPU is one a GPU job will miss; otherwise CPU-only work fits in the CPU that
    GPU work leaves."""
    weight = cpu = milli = other = 0.0
    for c in classes:
        r = c.request
        if not r.gpu_count:
            other += c.weight * r.cpu_milli
            continue
        held = [(_fresh_milli(k, r), n) for k, n in gpus.items()]
        n_usable = sum(n for m, n in held if m)
        if not n_usable:
            continue
        weight += c.weight
        cpu += c.weight * r.cpu_milli
        milli += c.weight * r.gpu_count * sum(m * n for m, n in held) / n_usable
    if not cpu or not milli:
        return (0.0, 0.0)
    whole = (cpu + other) / milli
    return (weight, whole if whole > fleet_ratio else cpu / milli)


@dataclass
class Memos:
    """A placer's scores of a host *kind* in a given state (GPU kinds, free CPU, GPU keys) per
    request class, and its F_n: pure functions of those and of the policy and the weighted class
    mix (``basis``), so they stay right for any fleet and any pass with the same basis. A placer
    given one with another basis clears it first. Keys and scores are tuples of plain values
    (``_packed``), which CPython's garbage collector stops tracking once it has seen them: memos
    of a large fleet hold hundreds of thousands, and each full collection walked them all."""

    basis: tuple = ()
    kind_ids: Dict[tuple, int] = field(default_factory=dict)  # interned: cheap memo keys
    memo: Dict[tuple, object] = field(default_factory=dict)
    frag: Dict[tuple, float] = field(default_factory=dict)
    prep: Dict[int, list] = field(default_factory=dict)
    shares: Dict[tuple, Tuple[int, ...]] = field(default_factory=dict)

    def based_on(self, basis: tuple) -> "Memos":
        if basis != self.basis:
            self.basis = basis
            for memo in (self.memo, self.frag, self.prep, self.shares):
                memo.clear()
        return self


def _rounding(kinds: Tuple[GpuKind, ...], keys: Tuple[GpuKey, ...], req: Request,
              o: Option) -> int:
    """The compute milli the MIG slices of option ``o`` hold beyond the share ``req`` asked
    for (0 for an exact profile: it asked for the slice)."""
    if req.mig:
        return 0
    lost = 0
    for g, prof in zip(o.gpus, o.profiles):
        if prof:
            kind = kinds[g]
            asked = MILLI if req.gpus or not kind[1] else req.milli if req.gpu else math.ceil(
                req.memory_gib * 1024 * MILLI / kind[1])
            lost += max(0, _idle(kind, keys[g]) - _idle(kind, o.keys_after[g]) - asked)
    return lost


def takes_idle(host: Host, n: int, req: Request) -> bool:
    """Whether ``req`` fits GPU ``n`` of ``host`` once it is idle (its model, its memory, its
    MIG mode and whether that may change): where room that frees up could ever go to it."""
    return _fresh_milli(_gpu_kind(host.name, n, host.gpus[n]), req) > 0


def _gpu_kind(host: str, n: int, g: Gpu) -> GpuKind:
    """A GPU's kind as the memos key it: a flexible GPU's geometry is part of it in either
    mode, its key says which mode it is in."""
    geo = g.mig_geometry
    if geo is None:
        return g.model, g.memory_mib, g.layout.geometry if g.layout else None
    if g.layout is not None and g.layout.geometry != geo:
        raise ValueError("gpu%d of %s: its MIG layout is of %s, its mig_geometry of %s"
                         % (n, host, g.layout.geometry.model, geo.model))
    return g.model, g.memory_mib, geo, True


def _layout_for(gpu: Gpu, mode: Optional[bool]) -> Layout:
    """The layout a MIG plan is made on: an empty one on a GPU whose MIG is turned on first."""
    return Layout(gpu.mig_geometry) if mode else gpu.layout  # type: ignore[arg-type,return-value]


def _start(gpu: Gpu, profile: str, start: int, mode: Optional[bool]) -> int:
    """The start a slice takes on ``gpu``: the planner's, or that of an idle twin that packs as
    well (``mig.reuse_start``). Chosen after the scores, which it leaves as they are: the host
    and GPU are the policy's, only a start that ties moves. A GPU whose mode changes first
    has no instance left to reuse."""
    if not gpu.idle_instances or mode is not None or gpu.layout is None:
        return start
    layout = gpu.layout
    return mig.reuse_start(layout.geometry, mig.signature(layout), gpu.idle_instances, profile,
                           start)


def _packed(res: Optional[Tuple[object, Option]]) -> Optional[tuple]:
    """A (score, option) as the memos hold it: one tuple of plain values, no object."""
    if res is None:
        return None
    score, o = res
    return (score, o.gpus, o.milli, o.profiles, o.starts, o.keys_after, o.link, o.modes)


def _option(res: tuple) -> Option:
    """The option of a ``_packed`` score."""
    return Option(*res[1:])


def _same_request(req: Request) -> tuple:
    """What a placement depends on of a request: all of it but its name."""
    return (class_key(req), req.memory_mib, req.hosts)


class Placer:
    """The fleet's placement state and decisions. ``place`` decides, ``commit`` records; a
    placement is only ever computed against the current state, so it never overcommits."""

    def __init__(self, hosts: Sequence[Host], policy: str = "fractui",
                 classes: Sequence[TypicalClass] = (), seed: int = 0,
                 memo_limit: int = MEMO_LIMIT, memos: Optional[Memos] = None):
        if policy not in POLICIES:
            raise ValueError("unknown policy %r; known: %s" % (policy, ", ".join(POLICIES)))
        names = [h.name for h in hosts]
        if len(set(names)) != len(names):
            raise ValueError("host names must be unique")
        self.hosts = list(hosts)
        self.policy = policy
        self.classes = tuple(classes)
        order = list(range(len(self.hosts)))
        random.Random(seed).shuffle(order)
        self._order = order  # tie-break: a fixed random host order per seed
        self._ranking = Ranking(order)  # per request class, hosts by (score, tie order)
        self._kinds = [tuple(_gpu_kind(h.name, n, g) for n, g in enumerate(h.gpus))
                       for h in self.hosts]
        self._flexible = any(len(k) > 3 for kinds in self._kinds for k in kinds)
        # the fleet offers a request a MIG slice or a share (flexible GPUs, or GPUs of both
        # modes): rounding up to a profile then counts against a slice in the score
        modes = {g[2] is not None for kinds in self._kinds for g in kinds}
        self._choice = self._flexible or len(modes) == 2
        fleet_gpus = Counter(k for kinds in self._kinds for k in kinds)
        self._weighted = self.classes  # what F_n weighs: the classes, or (fractui) by scarcity
        self._starve = (0.0, 0.0)  # fractui: (weight, CPU per GPU milli) of CPU-starved GPU
        if policy == "fractui":
            self._weighted = scarcity_weighted(self.classes, fleet_gpus)
            gpu_milli = MILLI * sum(fleet_gpus.values())
            self._starve = cpu_per_gpu(self.classes, fleet_gpus, sum(
                h.cpu_milli for h in self.hosts) / gpu_milli if gpu_milli else math.inf)
        memos = (memos or Memos()).based_on((policy, self._weighted, self._starve, self._choice))
        ids = memos.kind_ids
        # a host's links are part of its kind: hosts alike but wired apart place apart
        self._kind_ids = [ids.setdefault((k, h.links) if h.links else k, len(ids))
                          for k, h in zip(self._kinds, self.hosts)]
        self._links = {kid: h.links for kid, h in zip(self._kind_ids, self.hosts)}
        self._alike: Dict[int, bool] = {}  # by kind id: all its GPUs of one kind
        self._plain: Dict[int, bool] = {}  # by kind id: no MIG GPU
        self._mixed: Dict[int, bool] = {}  # by kind id: flexible GPUs (keys of either mode)
        for k, kid in zip(self._kinds, self._kind_ids):
            if kid not in self._alike:
                self._alike[kid] = len(set(k)) <= 1
                self._plain[kid] = all(g[2] is None for g in k)
                self._mixed[kid] = any(len(g) > 3 for g in k)
        self._keys = [self._gpu_keys(h) for h in self.hosts]
        self._cache: List[Dict[tuple, object]] = [{} for _ in self.hosts]
        self._memo = memos.memo
        self._frag = memos.frag
        self._prep = memos.prep
        self._shares = memos.shares
        self._placed: Dict[tuple, Optional[Placement]] = {}  # since the last commit
        self.memo_limit = memo_limit

    @staticmethod
    def _gpu_keys(h: Host) -> Tuple[GpuKey, ...]:
        return tuple(g.free_milli if g.layout is None else mig.signature(g.layout)
                     for g in h.gpus)

    def place(self, req: Request) -> Optional[Placement]:
        """The best feasible placement of ``req`` under the policy, or None if none fits."""
        same = _same_request(req)
        if same in self._placed:  # nothing committed since the same request was placed
            done = self._placed[same]
            return replace(done, request=req.name) if done is not None else None
        done = self._place(req)
        self._placed[same] = done
        return done

    def _place(self, req: Request) -> Optional[Placement]:
        """The best placement on GPUs as they are; failing that, for a request that asks for MIG
        or for shares, the best with an idle flexible GPU's MIG mode changed. A request that
        takes either uses any GPU as it is (it fits an idle one in either mode): see
        docs/decisions.md."""
        ck = class_key(req)
        found = self._best(req, ck, False)
        if found is None and self._flexible and req.gpu_count and (
                req.mig or req.isolation != "any"):
            found = self._best(req, ck + ("flip",), True)
        if found is None:
            return None
        best_i, opt = found
        h = self.hosts[best_i]
        modes = opt.modes or (None,) * len(opt.gpus)
        plans = tuple(mig.commit(_layout_for(h.gpus[g], m), p, _start(h.gpus[g], p, s, m))[0]
                      if p else None
                      for g, p, s, m in zip(opt.gpus, opt.profiles, opt.starts, modes))
        reused = tuple(bool(p) and (p.profile.name, p.start) in h.gpus[g].idle_instances
                       for g, p in zip(opt.gpus, plans))
        return Placement(req.name, h.name, best_i, req.cpu_milli, req.memory_mib, opt.gpus,
                         opt.milli, plans, link=opt.link, modes=opt.modes,
                         reused=reused if any(reused) else ())

    def _best(self, req: Request, ck: tuple, flip: bool) -> Optional[Tuple[int, Option]]:
        """(host index, option) of the best placement under the policy, or None."""
        cpu, mem, allowed = req.cpu_milli, req.memory_mib, req.hosts
        hosts, caches = self.hosts, self._cache

        def evaluate(i: int) -> object:
            if hosts[i].cpu_free < cpu:
                return None
            c = caches[i]
            res = c.get(ck, c)
            if res is c:
                if len(c) >= self.memo_limit:
                    c.clear()
                res = c[ck] = self._evaluate(i, req, ck, flip)
            return res

        if allowed:  # a few named hosts: look at those alone, in tie order
            best = None
            best_i = -1
            for i in self._order:
                h = hosts[i]
                if h.name not in allowed or h.memory_free < mem:
                    continue
                res = evaluate(i)
                if res is not None and (best is None or res[0] > best[0]):  # type: ignore
                    best, best_i = res, i
            return None if best is None else (best_i, _option(best))  # type: ignore[arg-type]
        found = self._ranking.best(ck, evaluate,  # type: ignore[arg-type]
                                   lambda i: hosts[i].memory_free >= mem)
        if found is None:
            return None
        return found, _option(evaluate(found))  # type: ignore[arg-type]  # host unchanged: cached

    def commit(self, p: Placement) -> None:
        """Record a placement made by ``place`` on the current state."""
        h = self.hosts[p.host_index]
        req_cpu, req_mem = p.cpu_milli, p.memory_mib
        if h.cpu_free < req_cpu or h.memory_free < req_mem:
            raise ValueError("placement %s no longer fits %s" % (p.request, h.name))
        for g, mode in zip(p.gpus, p.modes):
            gpu = h.gpus[g]
            if mode is not None and (gpu.mig_geometry is None or gpu.free_milli != MILLI or (
                    gpu.layout is not None and any(i.busy for i in gpu.layout.instances))):
                raise ValueError("placement %s changes the MIG mode of gpu%d of %s, which is "
                                 "not an idle flexible GPU" % (p.request, g, h.name))
        # every GPU's state after it, worked out before any is written: a placement that no
        # longer fits changes nothing
        after = {g: (h.gpus[g].layout, h.gpus[g].free_milli, h.gpus[g].idle_instances)
                 for g in p.gpus}
        for g, mode in zip(p.gpus, p.modes):
            if mode is not None:
                after[g] = h.gpus[g].idle_in(mode)
        for g, m, plan in zip(p.gpus, p.milli, p.plans):
            layout, free, idle = after[g]
            if plan is None:
                if free < m:
                    raise ValueError("placement %s no longer fits gpu%d of %s"
                                     % (p.request, g, h.name))
                after[g] = (layout, free - m, idle)
            else:  # the twin taken, the idle instances in the way gone
                _, layout = mig.commit(layout, plan.profile.name, plan.start)  # type: ignore
                geo = layout.geometry
                after[g] = (layout, mig.free_compute_milli(geo, mig.signature(layout)),
                            mig.idle_after(geo, idle, plan.profile.name, plan.start))
        for g, state in after.items():
            h.gpus[g].layout, h.gpus[g].free_milli, h.gpus[g].idle_instances = state
        h.cpu_free -= req_cpu
        h.memory_free -= req_mem
        self._keys[p.host_index] = self._gpu_keys(h)
        self._cache[p.host_index].clear()
        self._ranking.changed(p.host_index)
        self._placed.clear()

    def schedule(self, req: Request) -> Optional[Placement]:
        """Place and commit in one step."""
        p = self.place(req)
        if p is not None:
            self.commit(p)
        return p

    def _evaluate(self, i: int, req: Request, ck: tuple, flip: bool = False) -> object:
        """(score, option) of the best way to put ``req`` on host i, ``_packed``, or None;
        ``flip``: with an idle flexible GPU's MIG mode changed (``ck`` then says so, for the
        memos)."""
        h = self.hosts[i]
        kid, keys = self._kind_ids[i], self._keys[i]
        mk = (kid, h.cpu_free, keys, ck)
        memo = self._memo
        res = memo.get(mk, memo)
        if res is memo:
            if len(memo) >= self.memo_limit:
                memo.clear()
            res = memo[mk] = _packed(
                self._score(self._kinds[i], kid, h.cpu_free, keys, req, ck, flip))
        return res

    def _host_frag(self, kinds: Tuple[GpuKind, ...], kid: int, cpu_free: int,
                   keys: Tuple[GpuKey, ...]) -> float:
        """F_n of a host in this state. fractui adds what FGD's per-request view misses: idle GPU
        the host's CPU can no longer back at the mix's CPU per GPU (each class alone may still
        fit, but not all of them together) is fragmented for every class that takes GPUs."""
        if self._alike[kid]:  # F_n does not depend on the order of GPUs alike
            if self._mixed[kid]:  # keys of both modes: ints and signatures sort apart
                keys = tuple(sorted(keys, key=lambda x: (type(x) is tuple, x)))
            else:
                keys = tuple(sorted(keys))  # type: ignore[type-var]
        fk = (kid, cpu_free, keys)
        frag = self._frag
        f = frag.get(fk)
        if f is None:
            prep = self._prep.get(kid)
            if prep is None:
                prep = self._prep[kid] = _prepare(kinds, self._weighted)
            if prep:
                f = _shared_frag(prep, cpu_free, keys)  # type: ignore[arg-type]
            else:
                f = host_frag(kinds, cpu_free, keys, self._weighted)
            weight, ratio = self._starve
            if weight:
                idle = sum(_idle(k, x) for k, x in zip(kinds, keys))
                f += weight * max(0.0, idle - cpu_free / ratio)
            if len(frag) >= self.memo_limit:
                frag.clear()
            frag[fk] = f
        return f

    def _score(self, kinds: Tuple[GpuKind, ...], kid: int, cpu_free: int,
               keys: Tuple[GpuKey, ...], req: Request, ck: tuple, flip: bool = False
               ) -> Optional[Tuple[object, Option]]:
        shares = None
        if self._plain[kid]:  # no MIG: its share of each GPU, per class
            sk = (kid, ck)
            shares = self._shares.get(sk)
            if shares is None:
                if len(self._shares) >= self.memo_limit:
                    self._shares.clear()
                shares = self._shares[sk] = tuple(_share(k, req) for k in kinds)
        opts = options(kinds, keys, req, shares, self._links[kid], flip)
        if not opts:
            return None
        if len(opts) > 1:  # a slice on GPUs alike in kind and state: same score, keep the first
            seen: Dict[tuple, Option] = {}
            for o in opts:
                seen.setdefault((kinds[o.gpus[0]], keys[o.gpus[0]], o.modes), o)
            opts = list(seen.values())
        if self.policy == "first-fit":
            return 0, opts[0]
        left = [sum(_idle(kinds[g], o.keys_after[g]) for g in o.gpus) for o in opts]
        if self.policy == "best-fit":
            j = min(range(len(opts)), key=lambda j: (left[j], j))  # the GPU with least left
            idle = sum(_idle(k, x) for k, x in zip(kinds, opts[j].keys_after))
            waste = 0.5 * (cpu_free - req.cpu_milli) / MAX_SPEC_CPU + 0.5 * idle / MAX_SPEC_GPU
            return int((1.0 - waste) * 100), opts[j]
        before = self._host_frag(kinds, kid, cpu_free, keys)
        cpu_after = cpu_free - req.cpu_milli
        deltas = [before - self._host_frag(kinds, kid, cpu_after, o.keys_after) for o in opts]
        if self._choice:  # a slice or a share: what a slice holds beyond the ask is lost too
            deltas = [d - _rounding(kinds, keys, req, o) for d, o in zip(deltas, opts)]
        # integer levels: hosts whose F_n grows by nearly the same amount tie, and the seeded
        # host order spreads them (exact scores cost FGD about a point)
        scores = [int(_sigmoid(d / 1000) * LEVELS) for d in deltas]
        j = max(range(len(opts)), key=lambda j: (scores[j], -j))
        return scores[j], opts[j]
