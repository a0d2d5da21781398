"""Random fleets (MIG and shared GPUs mixed) and random request streams, under every policy:
a placement never overcommits CPU, RAM, GPU shares or MIG geometry, respects the request's
filters, is refused only when nothing fits, and is the same for the same fleet and seed."""

from __future__ import annotations

import copy
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remote_agent.gpu.models import model
from remote_agent.mig import planner
from remote_agent.mig.layout import Layout

from fractui.sched import POLICIES, Gpu, Host, Placer, Request, typical_classes
from fractui.sched.mig import profile_for

GEOS = {"A100-80GB": model("A100-80GB").geometry(), "A30": model("A30").geometry()}
PLAIN = {"T4": 16384, "L4": 23034}


@st.composite
def gpus(draw):
    name = draw(st.sampled_from(sorted(GEOS) + sorted(PLAIN)))
    if name in GEOS:
        return Gpu(name, model(name).memory_mib, layout=Layout(GEOS[name]))
    return Gpu(name, PLAIN[name])


@st.composite
def fleets(draw):
    n = draw(st.integers(1, 4))
    return [Host("h%d" % i, draw(st.sampled_from([4000, 16000, 64000])),
                 draw(st.sampled_from([8192, 65536])), draw(st.lists(gpus(), max_size=4)))
            for i in range(n)]


@st.composite
def requests(draw, i):
    form = draw(st.sampled_from(["gpu", "mig", "memory_gib", "gpus", "cpu"]))
    kw = dict(name="r%d" % i, cpu_milli=draw(st.sampled_from([0, 1000, 4000, 12000])),
              memory_mib=draw(st.sampled_from([0, 1024, 16384])),
              models=draw(st.sampled_from([frozenset(), frozenset({"T4"}),
                                           frozenset({"A100-80GB", "L4"})])),
              hosts=draw(st.sampled_from([frozenset(), frozenset({"h0", "h2"})])))
    if form == "gpu":
        kw["gpu"] = draw(st.sampled_from([0.05, 0.14, 0.25, 0.3, 0.47, 0.5, 0.81]))
        kw["isolation"] = draw(st.sampled_from(["any", "mig", "share"]))
    elif form == "mig":
        kw["mig"] = draw(st.sampled_from(["1g.10gb", "2g.20gb", "3g.40gb", "1g.6gb", "4g.24gb"]))
    elif form == "memory_gib":
        kw["memory_gib"] = draw(st.sampled_from([2, 10, 20, 40]))
    elif form == "gpus":
        kw["gpus"] = draw(st.integers(1, 3))
    return Request(**kw)


@st.composite
def streams(draw):
    n = draw(st.integers(1, 25))
    return [draw(requests(i)) for i in range(n)]


def fits_somewhere(hosts, req) -> bool:
    """An independent, brute-force answer: does any host take ``req`` now? (A job's GPUs are
    of one model: they are counted by model.)"""
    for h in hosts:
        if h.cpu_free < req.cpu_milli or h.memory_free < req.memory_mib:
            continue
        if req.hosts and h.name not in req.hosts:
            continue
        usable: Counter = Counter()
        for g in h.gpus:
            if req.models and g.model not in req.models:
                continue
            if g.layout is None:
                need = req.share_milli(g.model, g.memory_mib)
                usable[g.model, g.memory_mib] += bool(need) and g.free_milli >= need
            else:
                prof = profile_for(req, g.layout.geometry)
                if prof is not None:
                    try:
                        planner.plan(g.layout, prof.name, destroy_idle=True)
                        usable[g.model, g.memory_mib] += 1
                    except planner.PlanError:
                        pass
        if max(usable.values(), default=0) >= req.gpu_count:
            return True
    return False


def check_host(h: Host, placed) -> None:
    assert 0 <= h.cpu_free == h.cpu_milli - sum(r.cpu_milli for r in placed)
    assert 0 <= h.memory_free == h.memory_mib - sum(r.memory_mib for r in placed)
    for g in h.gpus:
        assert 0 <= g.free_milli <= 1000
        if g.layout is None:
            continue
        geo, seen = g.layout.geometry, set()
        for inst in g.layout.instances:
            prof = geo.profile(inst.profile)
            assert inst.start in prof.starts
            assert not seen & set(inst.slots())
            seen |= set(inst.slots())
            assert max(inst.slots()) < geo.memory_slices
        for name, n in Counter(i.profile for i in g.layout.instances).items():
            assert n <= geo.profile(name).max_instances
        assert g.layout.compute_used() <= geo.compute_slices


def run(hosts, stream, policy, seed):
    placer = Placer(hosts, policy, typical_classes(stream), seed=seed)
    placed = {h.name: [] for h in hosts}
    out = []
    for req in stream:
        before = copy.deepcopy(hosts)
        p = placer.schedule(req)
        out.append(None if p is None else (p.host, p.gpus, p.milli,
                                           tuple(x and (x.profile.name, x.start) for x in p.plans)))
        if p is None:
            assert not fits_somewhere(before, req), req
            continue
        h = next(x for x in hosts if x.name == p.host)
        placed[h.name].append(req)
        assert len(p.gpus) == req.gpu_count == len(set(p.gpus))
        assert not req.hosts or h.name in req.hosts
        for g, m, plan in zip(p.gpus, p.milli, p.plans):
            gpu = h.gpus[g]
            assert not req.models or gpu.model in req.models
            if plan is None:
                assert req.isolation != "mig" and not req.mig
                assert m == req.share_milli(gpu.model, gpu.memory_mib) > 0
            else:
                assert req.isolation != "share"
                assert plan.profile == profile_for(req, gpu.layout.geometry)
                assert all(not i.busy for i in plan.destroy)
        for x in hosts:
            check_host(x, placed[x.name])
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), streams(), st.sampled_from(POLICIES), st.integers(0, 3))
def test_placements_never_overcommit_and_respect_filters(hosts, stream, policy, seed):
    run(hosts, stream, policy, seed)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), streams(), st.sampled_from(POLICIES), st.integers(0, 3))
def test_same_fleet_and_seed_same_placements(hosts, stream, policy, seed):
    twin = copy.deepcopy(hosts)
    assert run(hosts, stream, policy, seed) == run(twin, stream, policy, seed)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=8), st.integers(0, 64000),
       st.lists(requests(0), min_size=1, max_size=6))
def test_shared_gpu_fast_path_matches_the_general_fragmentation(free, cpu, reqs):
    from fractui.sched.place import _prepare, _shared_frag, host_frag
    kinds = tuple(("T4", 16384, None) for _ in free)
    classes = typical_classes(reqs, coverage=1.0)
    keys = tuple(free)
    assert _shared_frag(_prepare(kinds, classes), cpu, keys) == \
        host_frag(kinds, cpu, keys, classes)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(PLAIN)), st.integers(0, 1000)), max_size=8),
       requests(0))
def test_options_with_shares_known_match_the_general_path(gpus_, req):
    from fractui.sched.place import _share, options
    kinds = tuple((name, PLAIN[name], None) for name, _ in gpus_)
    keys = tuple(free for _, free in gpus_)
    shares = tuple(_share(k, req) for k in kinds)
    assert options(kinds, keys, req, shares) == options(kinds, keys, req)
