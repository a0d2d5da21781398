"""Flexible GPUs: the placer turns an idle MIG-capable GPU's MIG mode on for a request that asks
for MIG, or off for one that asks for shares, when nothing as it is fits; never a GPU with work
on it. The flip is in the placement, its description and the placer's own state after commit,
and the memos stay right across flips (a fresh placer on the same state answers the same)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remote_agent.gpu.models import model
from remote_agent.mig.layout import Layout

from fractui.sched import POLICIES, Gpu, Host, Placer, Request, typical_classes
from fractui.sched.fleetview import HostView, _decided_mode, build_hosts
from fractui.sched.model import MILLI, Placement

A100 = model("A100-80GB").geometry()
MEM = model("A100-80GB").memory_mib


def flex(on: bool = False) -> Gpu:
    return Gpu("A100-80GB", MEM, layout=Layout(A100) if on else None, mig_geometry=A100)


def host(name: str, *gpus: Gpu, cpu: int = 64000) -> Host:
    return Host(name, cpu, 262144, list(gpus))


def fixed_mig() -> Gpu:
    return Gpu("A100-80GB", MEM, layout=Layout(A100))


def test_a_mig_request_turns_an_idle_gpus_mig_on_when_nothing_else_fits():
    h = host("a", flex(), flex())
    placer = Placer([h], "fractui")
    p = placer.place(Request("m", gpu=0.3, isolation="mig"))
    assert p.modes == (True,) and p.plans[0].profile.name == "3g.40gb"
    assert "MIG on, then create 3g.40gb at slot %d" % p.plans[0].start in p.describe()
    placer.commit(p)
    g = h.gpus[p.gpus[0]]
    assert g.mig and [i.profile for i in g.layout.instances] == ["3g.40gb"]
    assert g.layout.instances[0].busy and g.free_milli == 4 * MILLI // 7
    # the next one fits the GPU just turned on: no second flip
    q = placer.schedule(Request("n", mig="2g.20gb"))
    assert q.modes == () and q.gpus == p.gpus and "MIG" not in q.describe()


def test_a_mig_request_takes_room_on_a_mig_gpu_before_flipping_an_idle_one():
    for mig_gpu in (fixed_mig(), flex(on=True)):
        hosts = [host("a", flex(), flex()), host("b", mig_gpu)]
        p = Placer(hosts, "fractui").place(Request("m", gpu=0.3, isolation="mig"))
        assert p.host == "b" and p.modes == ()


def test_a_share_request_turns_an_idle_gpus_mig_off():
    g = flex(on=True)
    g.layout = g.layout.with_instance(A100.profile("3g.40gb"), 4)  # an idle instance: still idle
    h = host("a", g)
    placer = Placer([h], "fractui")
    p = placer.place(Request("s", gpu=0.4, isolation="share"))
    assert p.modes == (False,) and p.plans == (None,) and p.milli == (400,)
    assert p.describe() == "s -> a gpu0: MIG off, then 400/1000 share"
    placer.commit(p)
    assert h.gpus[0].layout is None and h.gpus[0].free_milli == 600


def test_a_gpu_put_idle_in_the_other_mode_is_the_same_for_a_commit_and_a_decision():
    """One rule (``Gpu.idle_in``) for the placer's committed flip and for a flip a decision
    not yet launched will make, as a pass books it."""
    assert flex().idle_in(True) == (Layout(A100), MILLI, ())
    assert flex(on=True).idle_in(False) == (None, MILLI, ())
    with pytest.raises(ValueError, match="fixed MIG mode"):
        fixed_mig().idle_in(False)
    decided = flex(on=True)
    decided.free_milli = 0  # what a pass reads before it books the decision's flip
    _decided_mode(decided, False)
    assert (decided.layout, decided.free_milli, decided.idle_instances) == flex(
        on=True).idle_in(False)
    h = host("a", flex(on=True))
    placer = Placer([h], "fractui")
    placer.commit(placer.place(Request("s", gpu=0.4, isolation="share")))
    assert (h.gpus[0].layout, h.gpus[0].free_milli) == (None, MILLI - 400)


def test_only_idle_gpus_flip():
    used_share = flex()
    used_share.free_milli = 700
    busy_mig = flex(on=True)
    placer = Placer([host("a", used_share, busy_mig)], "fractui")
    placer.schedule(Request("m0", mig="7g.80gb"))  # busy_mig is now full and busy
    assert placer.place(Request("m", gpu=0.3, isolation="mig")) is None
    assert placer.place(Request("s", gpu=0.8, isolation="share")) is None
    assert placer.place(Request("s", gpu=0.3, isolation="share")).modes == ()


def test_commit_refuses_a_mode_change_on_a_gpu_with_work_on_it():
    h = host("a", flex())
    placer = Placer([h], "fractui")
    p = placer.place(Request("m", mig="1g.10gb"))
    placer.schedule(Request("s", gpu=0.2))  # the GPU now holds a share
    with pytest.raises(ValueError, match="not an idle flexible GPU"):
        placer.commit(p)


def test_a_request_that_takes_either_never_flips():
    """'any' fits an idle GPU in either mode, so it takes GPUs as they are (docs/decisions.md)."""
    h = host("a", flex(on=True))
    p = Placer([h], "fractui").place(Request("x", gpu=0.3))
    assert p.modes == () and p.plans[0].profile.name == "3g.40gb"


def test_whole_gpus_flip_as_many_as_needed():
    h = host("a", flex(), flex(on=True), flex())
    p = Placer([h], "fractui").place(Request("w", gpus=2, isolation="share"))
    assert p.gpus == (0, 2) and p.modes == ()
    p = Placer([host("a", flex(), flex(on=True))], "fractui").place(
        Request("w", gpus=2, isolation="share"))
    assert p.gpus == (0, 1) and p.modes == (None, False)


def test_a_layout_of_another_geometry_than_the_gpus_is_refused():
    g = Gpu("A30", 24576, layout=Layout(model("A30").geometry()), mig_geometry=A100)
    with pytest.raises(ValueError, match="gpu0 of a: its MIG layout is of NVIDIA A30, its "
                                         "mig_geometry of NVIDIA A100"):
        Placer([host("a", g)])


@st.composite
def fleets(draw):
    def gpu():
        kind = draw(st.sampled_from(["off", "on", "mig", "T4"]))
        if kind == "T4":
            return Gpu("T4", 16384)
        return fixed_mig() if kind == "mig" else flex(on=kind == "on")
    return [host("h%d" % i, *[gpu() for _ in range(draw(st.integers(1, 4)))],
                 cpu=draw(st.sampled_from([8000, 64000])))
            for i in range(draw(st.integers(1, 3)))]


@st.composite
def streams(draw):
    out = []
    for i in range(draw(st.integers(1, 25))):
        form = draw(st.sampled_from(["gpu", "mig", "gpus"]))
        iso = draw(st.sampled_from(["any", "mig", "share"]))
        kw = dict(name="r%d" % i, cpu_milli=draw(st.sampled_from([0, 2000, 6000])))
        if form == "gpu":
            kw.update(gpu=draw(st.sampled_from([0.1, 0.3, 0.5, 0.8])), isolation=iso)
        elif form == "mig":
            kw["mig"] = draw(st.sampled_from(["1g.10gb", "3g.40gb", "7g.80gb"]))
        else:
            kw.update(gpus=draw(st.integers(1, 2)), isolation="mig" if iso == "mig" else iso)
        out.append(Request(**kw))
    return out


def _answer(p):
    return p and (p.host, p.gpus, p.milli, p.modes,
                  tuple(x and (x.profile.name, x.start) for x in p.plans))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), streams(), st.sampled_from(POLICIES), st.integers(0, 3))
def test_memos_stay_right_across_flips(hosts, stream, policy, seed):
    """After every commit, flips included, the placer answers as a fresh one on the same state
    would; a flip only ever touches an idle flexible GPU, and what it leaves is consistent."""
    classes = typical_classes(stream)
    placer = Placer(hosts, policy, classes, seed=seed)
    for r in stream:
        fresh = Placer(copy.deepcopy(hosts), policy, classes, seed=seed)
        p = placer.place(r)
        assert _answer(p) == _answer(fresh.place(r))
        if p is None:
            continue
        before = copy.deepcopy(hosts[p.host_index].gpus)
        placer.commit(p)
        for k, (g, mode) in enumerate(zip(p.gpus, p.modes or (None,) * len(p.gpus))):
            was, now = before[g], hosts[p.host_index].gpus[g]
            if mode is not None:
                assert was.mig_geometry is not None and was.free_milli == MILLI
                assert not (was.layout and any(i.busy for i in was.layout.instances))
                assert now.mig == mode
            assert (p.plans[k] is not None) == now.mig
            if r.isolation == "mig" or r.mig:
                assert now.mig
            if r.isolation == "share":
                assert not now.mig


def test_a_slice_on_a_flexible_gpu_counts_what_it_holds_beyond_the_ask():
    """On hosts with flexible GPUs the score weighs a slice's rounding against a share."""
    from fractui.sched.place import _gpu_kind, _rounding, options
    kinds = (_gpu_kind("a", 0, flex(on=True)), _gpu_kind("a", 1, flex()))
    keys = ((), MILLI)
    lost = {r.name: [_rounding(kinds, keys, r, o) for o in options(kinds, keys, r)]
            for r in (Request("f", gpu=0.3), Request("w", gpus=1), Request("m", mig="3g.40gb"),
                      Request("g", memory_gib=30))}
    held = MILLI - 4 * MILLI // 7  # 3g.40gb: 3 of 7 compute slices
    assert lost == {"f": [held - 300, 0], "w": [0], "m": [0], "g": [held - 375, 0]}



def test_on_a_fixed_fleet_of_both_modes_a_request_for_either_weighs_the_rounding_up():
    """One GPU in MIG mode, one without. Half a GPU takes 4g.40gb (4/7 of the compute) on the
    MIG one, leaving 3/7 that neither class here fits; on the other it leaves half, which the
    halves fit: by FGD's measure alone the slice looks a little better (the whole GPUs lose
    3/7 there against 1/2), counting the 1/14 rounded up, the share is."""
    classes = typical_classes([Request("w%d" % k, cpu_milli=1000, gpus=1) for k in range(9)]
                              + [Request("h", cpu_milli=1000, gpu=0.5)])
    placer = Placer([host("a", fixed_mig()), host("b", Gpu("A100-80GB", MEM))], "fractui",
                    classes)
    p = placer.place(Request("r", cpu_milli=1000, gpu=0.5))
    assert p is not None and p.host == "b" and p.plans == (None,), p.describe()


def test_a_placement_that_no_longer_fits_one_of_its_gpus_changes_none_of_them():
    h = host("a", Gpu("A100-80GB", MEM), Gpu("A100-80GB", MEM))
    placer = Placer([h], "fractui")
    both = placer.place(Request("two", gpus=2))
    placer.commit(Placement("other", "a", 0, gpus=(1,), milli=(500,), plans=(None,)))
    with pytest.raises(ValueError, match="no longer fits gpu1"):
        placer.commit(both)
    assert [g.free_milli for g in h.gpus] == [MILLI, 500]
    assert placer.place(Request("half", gpu=0.5)) is not None  # and the placer goes on


def _a100_view(mig_mode: bool, job: dict) -> HostView:
    """One A100 whose snapshot says MIG is ``mig_mode``, and one running job of ours on it."""
    rec = {"index": 0, "uuid": "GPU-0", "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920,
           "mig_capable": True, "mig_mode": mig_mode, "mig_pending": mig_mode, "processes": []}
    hello = {"cpus": 32, "memory_mib": 1 << 18, "gpus": [rec],
             "features": ["mig.set_mode.reset", "mig.set_mode.destroy_idle"]}
    return HostView("gpu-a", "online", hello, {"gpus": [rec]},
                    {"j1": dict(job, id="j1", key="k1", state="running", gpus=[0])})


@pytest.mark.parametrize("mig_mode, job", [
    (False, {"instance": "MIG-1", "memory_mib": 40960}),  # MIG turned on for it, not yet seen
    (False, {"instance": None, "memory_mib": None,  # ... its instance still being made
             "mig": {"profile": "3g.40gb", "start": 4}}),
    (True, {"instance": None, "memory_mib": 10240}),  # MIG turned off for it, not yet seen
])
def test_a_gpu_whose_snapshot_predates_its_jobs_mode_change_offers_nothing(mig_mode, job):
    """The agent tells a job's launch at once and its snapshot at the next tick: a pass between
    the two sees a job of one mode on a GPU of the other. Read as the snapshot says, the GPU
    would offer room of the wrong mode (a share beside a MIG instance), and the launch there
    would be refused for a GPU in use; it offers nothing until the next snapshot comes."""
    host = build_hosts([_a100_view(mig_mode, job)], [], "uid")[0]
    assert (host.gpus[0].free_milli, host.gpus[0].mig_geometry) == (0, None)
    placer = Placer([host], "fractui")
    assert placer.place(Request("s", memory_gib=10, isolation="share")) is None
    assert placer.place(Request("m", mig="3g.40gb")) is None
