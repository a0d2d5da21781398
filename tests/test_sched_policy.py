"""fractui's own policy (what it sees that FGD does not) and the placer's bounded memos."""

from __future__ import annotations

import gc
import random
from collections import Counter

import pytest

from remote_agent.gpu.models import model
from remote_agent.mig.layout import Layout

from fractui.sched import Gpu, Host, Placer, Request, TypicalClass, typical_classes
from fractui.sched.place import Memos, cpu_per_gpu, scarcity_weighted

A100 = model("A100-80GB").geometry()
WHOLE = TypicalClass(Request("w", cpu_milli=10000, gpus=1), 1.0)


def plain(name: str, n: int, cpu: int, gpu: str = "T4") -> Host:
    return Host(name, cpu, 1 << 20, [Gpu(gpu, 16384) for _ in range(n)])


def two_hosts():
    # after a 10-core CPU-only job both hosts still fit one more whole-GPU job, so FGD sees no
    # difference; on "tight" the CPU left could back only 1.5 of its 2 idle GPUs
    return [plain("roomy", 2, 40000), plain("tight", 2, 25000)]


def test_fractui_keeps_idle_gpus_backed_by_cpu():
    for seed in range(12):
        placer = Placer(two_hosts(), "fractui", [WHOLE], seed=seed)
        assert placer.schedule(Request("c", cpu_milli=10000)).host == "roomy"


def test_fgd_alone_cannot_tell_the_two_hosts_apart():
    picks = {Placer(two_hosts(), "fgd", [WHOLE], seed=s).schedule(
        Request("c", cpu_milli=10000)).host for s in range(12)}
    assert picks == {"roomy", "tight"}  # a tie, broken by the seeded host order


def test_cpu_per_gpu_is_the_mix_of_gpu_classes_and_of_all_when_cpu_binds():
    half = TypicalClass(Request("s", cpu_milli=2000, gpu=0.5), 0.25)
    cpu_only = TypicalClass(Request("c", cpu_milli=64000), 0.25)
    whole = TypicalClass(Request("w", cpu_milli=10000, gpus=1), 0.5)
    gpus = Counter({("T4", 16384, None): 4})
    weight, ratio = cpu_per_gpu([half, cpu_only, whole], gpus)
    assert weight == 0.75
    assert ratio == pytest.approx((0.25 * 2000 + 0.5 * 10000) / (0.25 * 500 + 0.5 * 1000))
    assert cpu_per_gpu([cpu_only], gpus) == (0.0, 0.0)
    # a fleet with less CPU per GPU milli than the whole mix needs: CPU-only work counts too
    whole_mix = (0.25 * 2000 + 0.25 * 64000 + 0.5 * 10000) / (0.25 * 500 + 0.5 * 1000)
    assert cpu_per_gpu([half, cpu_only, whole], gpus, whole_mix - 1) == (0.75, whole_mix)
    assert cpu_per_gpu([half, cpu_only, whole], gpus, whole_mix + 1) == (0.75, ratio)


def _cpu_bound(cpu_host_cores: int):
    """A host with two idle GPUs and 40 cores, one whose GPUs are taken with 20 cores left, and
    optionally a CPU-only host; the mix: whole GPUs with 10 cores, and CPU-only jobs of 40."""
    hosts = [plain("idle", 2, 40000), plain("full", 2, 40000)]
    hosts[1].cpu_free = 20000
    for g in hosts[1].gpus:
        g.free_milli = 0
    if cpu_host_cores:
        hosts.append(Host("cpu", cpu_host_cores * 1000, 1 << 20, []))
    mix = [TypicalClass(Request("w", cpu_milli=10000, gpus=1), 0.5),
           TypicalClass(Request("c", cpu_milli=40000), 0.5)]
    return hosts, mix


def test_when_cpu_runs_out_first_cpu_only_work_keeps_off_idle_gpus():
    """The mix needs 50 cores per GPU (10 for the GPU job, 40 for the CPU-only one that comes
    as often), the fleet has 20: a CPU-only job beside idle GPUs takes CPU a GPU job will miss,
    so it goes where the GPUs are taken, whatever the seed."""
    for seed in range(12):
        hosts, mix = _cpu_bound(0)
        placer = Placer(hosts, "fractui", mix, seed=seed)
        assert placer.schedule(Request("c", cpu_milli=10000)).host == "full"


def test_with_cpu_to_spare_cpu_only_work_is_not_kept_off_idle_gpus():
    """The same mix on a fleet with a big CPU host: CPU-only work fits in the CPU GPU work
    leaves, an idle GPU needs only its own jobs' 10 cores, and the idle host's 30 cores left
    still back both GPUs: the hosts tie, the seeded host order decides."""
    picks = set()
    for seed in range(12):
        hosts, mix = _cpu_bound(1000)
        placer = Placer(hosts, "fractui", mix, seed=seed)
        picks.add(placer.schedule(Request("c", cpu_milli=10000)).host)
    assert {"idle", "full"} <= picks


def test_scarce_classes_weigh_more_by_the_square_of_their_share():
    t4_only = TypicalClass(Request("t", gpus=1, models=frozenset({"T4"})), 0.5)
    anywhere = TypicalClass(Request("a", gpus=1), 0.5)
    gpus = Counter({("T4", 16384, None): 1, ("V100", 16384, None): 3})
    got = scarcity_weighted([t4_only, anywhere], gpus)
    assert [c.request.name for c in got] == ["t", "a"]
    assert got[0].weight / got[1].weight == pytest.approx(16.0)  # q = 1/4
    assert sum(c.weight for c in got) == pytest.approx(1.0)
    assert scarcity_weighted([anywhere], gpus)[0].weight == pytest.approx(1.0)


def _fleet(rng: random.Random):
    hosts = []
    for i in range(6):
        if i % 3 == 2:
            gpus = [Gpu("A100-80GB", 81920, layout=Layout(A100)) for _ in range(2)]
        else:
            gpus = [Gpu(rng.choice(["T4", "V100"]), 16384) for _ in range(rng.choice([2, 4]))]
        hosts.append(Host("h%d" % i, rng.choice([16000, 64000]), 1 << 20, gpus))
    return hosts


def _stream(rng: random.Random):
    out = []
    for k in range(120):
        form = rng.random()
        kw = dict(name="r%d" % k, cpu_milli=rng.choice([0, 1000, 4000, 8000]))
        if form < 0.5:
            kw["gpu"] = rng.choice([0.1, 0.25, 0.3, 0.47, 0.81])
        elif form < 0.8:
            kw["gpus"] = rng.choice([1, 2])
        elif form < 0.9:
            kw["models"] = frozenset({"T4"})
            kw["gpus"] = 1
        out.append(Request(**kw))
    return out


@pytest.mark.parametrize("policy", ["fgd", "fractui"])
def test_memos_stay_under_their_cap_and_decisions_do_not_change(policy):
    stream = _stream(random.Random(7))
    classes = typical_classes(stream)
    big = Placer(_fleet(random.Random(3)), policy, classes, seed=1)
    tiny = Placer(_fleet(random.Random(3)), policy, classes, seed=1, memo_limit=3)
    for req in stream:
        a, b = big.schedule(req), tiny.schedule(req)
        assert (a and (a.host, a.gpus, a.milli, a.plans)) == (b and (b.host, b.gpus, b.milli,
                                                                    b.plans))
        assert max(len(tiny._memo), len(tiny._frag), len(tiny._shares)) <= 3
        assert all(len(c) <= 3 for c in tiny._cache)
    assert len(big._memo) > 3  # the cap, not a small workload, kept the tiny one small


@pytest.mark.parametrize("policy", ["fgd", "fractui"])
def test_memos_kept_across_placers_change_no_decision(policy):
    """The scheduler keeps a placer's memos from pass to pass: a placer given memos an earlier
    one filled (same classes) places exactly as a fresh one, and memos of another class mix
    are cleared rather than reused."""
    stream = _stream(random.Random(11))
    classes = typical_classes(stream)
    memos = Memos()
    first = Placer(_fleet(random.Random(5)), policy, classes, seed=2, memos=memos)
    for req in stream[: len(stream) // 2]:
        first.schedule(req)
    assert memos.memo and memos.frag  # the first pass filled them
    kept = Placer(_fleet(random.Random(5)), policy, classes, seed=2, memos=memos)
    fresh = Placer(_fleet(random.Random(5)), policy, classes, seed=2)
    for req in stream:
        a, b = kept.schedule(req), fresh.schedule(req)
        assert (a and (a.host, a.gpus, a.milli, a.plans)) == (b and (b.host, b.gpus, b.milli,
                                                                    b.plans))
    before = dict(memos.frag)
    Placer(_fleet(random.Random(5)), policy, classes[:1], seed=2, memos=memos)
    assert before and not memos.frag  # another mix: nothing of the old one is read


@pytest.mark.parametrize("policy", ["fgd", "fractui"])
def test_the_memos_hold_nothing_the_garbage_collector_must_walk(policy):
    """Memos of a large fleet hold hundreds of thousands of entries: each that keeps an object
    (an Option, a frozenset of models) tracked is walked by every full collection, which made
    single decisions take half a second at 50,000 GPUs. Plain tuples are left alone once seen."""
    # GPUs without MIG and a flexible one, turned to MIG by the first request: memo keys of
    # free milli, of MIG layouts and of a mode change
    fleet = [h for h in _fleet(random.Random(4)) if not h.gpus[0].layout] + [
        Host("flex", 64000, 1 << 20, [Gpu("A100-80GB", 81920, mig_geometry=A100)])]
    stream = [Request("m", cpu_milli=1000, gpu=0.3, isolation="mig")] + _stream(random.Random(9))
    memos = Memos()
    placer = Placer(fleet, policy, typical_classes(stream), seed=3, memos=memos)
    placed = [placer.schedule(r) for r in stream]
    assert placed[0] is not None and placed[0].modes  # the flexible GPU was turned on for it
    assert any(p and p.plans[0] for p in placed) and any(p and not p.plans for p in placed)
    for _ in range(4):  # a tuple is let go once what it holds is: one level of nesting a pass
        gc.collect()
    held = [memos.memo, memos.frag, memos.shares] + placer._cache
    items = [x for memo in held for kv in memo.items() for x in kv]
    assert len(items) > 100 and any(isinstance(x, tuple) and len(x) == 8 for x in items)
    assert [x for x in items if gc.is_tracked(x)] == []


def test_a_request_placed_again_before_a_commit_gets_the_same_answer_and_its_own_name():
    placer = Placer(two_hosts(), "fractui", [WHOLE])
    a = placer.place(Request("a", cpu_milli=10000, gpus=1))
    b = placer.place(Request("b", cpu_milli=10000, gpus=1))
    assert a is not None and b is not None
    assert (b.request, b.host, b.gpus) == ("b", a.host, a.gpus)
    placer.commit(b)
    # the same answer again would name b's GPU, now taken: commit would refuse it
    placer.commit(placer.place(Request("c", cpu_milli=10000, gpus=1)))
    assert placer.place(Request("d", cpu_milli=10000, gpus=1)) is not None  # one GPU is left
