"""A MIG request reuses an idle instance of its profile where that packs as well as the
planner's start: the placer knows each GPU's idle instances (``Gpu.idle_instances``, filled by
fleetview), moves a slice onto an idle twin only where the planner's room ties, the preview says
so, and the launch takes the twin as it is."""

from __future__ import annotations

import copy
from typing import Sequence, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remote_agent.gpu.models import model
from remote_agent.mig import planner
from remote_agent.mig.layout import Instance, Layout

from fractui.config import QueueConfig
from fractui.sched import POLICIES, Gpu, Host, Placer, Request
from fractui.sched.fleetview import HostView, build_hosts
from fractui.sched.manual import Unfit, complete
from fractui.sched.place import Memos
from fractui.sched.preview import candidates
from fractui.store.model import Job, Slot
from tests import localfleet

local_fleet = localfleet.local_fleet
A100 = model("A100-80GB").geometry()
A100_NAME = "NVIDIA A100-SXM4-80GB"


def a100(busy: Sequence[Tuple[str, int]] = (), idle: Sequence[Tuple[str, int]] = ()) -> Host:
    """A host with one A100-80GB in MIG mode: ``busy`` instances held by jobs, ``idle`` ones
    held by none."""
    insts = []
    for k, (name, start) in enumerate(busy):
        p = A100.profile(name)
        insts.append(Instance(gi_id=k, profile=name, start=start, size=p.size,
                              compute_slices=p.compute_slices, busy=True))
    gpu = Gpu("A100-80GB", 81920, layout=Layout(A100, tuple(insts)),
              idle_instances=tuple(idle))
    return Host("a", 32000, 65536, [gpu])


def start_of(placer: Placer, profile: str) -> int:
    p = placer.schedule(Request("j", mig=profile))
    assert p is not None
    return p.plans[0].start


def test_a_slice_takes_the_start_of_an_idle_twin_where_it_packs_as_well():
    # a job holds the 3g.40gb at 4: a 2g.20gb at 0 or at 2 leaves the same room, and the
    # planner takes 2; an idle 2g.20gb sits at 0
    assert start_of(Placer([a100([("3g.40gb", 4)])]), "2g.20gb") == 2
    h = a100([("3g.40gb", 4)], [("2g.20gb", 0)])
    placer = Placer([h])
    assert start_of(placer, "2g.20gb") == 0
    assert h.gpus[0].idle_instances == ()  # taken: a job holds it now
    assert start_of(placer, "2g.20gb") == 2  # the next one goes where the planner says


def test_a_placement_says_it_reuses_the_idle_twin_and_changes_nothing():
    h = a100([("3g.40gb", 4)], [("2g.20gb", 0)])
    placer = Placer([h])
    taken, made = (placer.schedule(Request(name, mig="2g.20gb")) for name in ("j", "k"))
    assert taken.describe() == "j -> a gpu0: reuse the idle 2g.20gb at slot 0; no MIG change"
    assert made.describe() == "k -> a gpu0: create 2g.20gb at slot 2; no running job touched"


def test_an_idle_twin_that_packs_worse_is_not_taken():
    # a 3g.40gb at 0 leaves no room for a 4g.40gb, at 4 it does: the planner's 4 stays, and
    # the idle one at 0, out of its way, stays listed
    h = a100(idle=[("3g.40gb", 0)])
    assert start_of(Placer([h]), "3g.40gb") == 4
    assert h.gpus[0].idle_instances == (("3g.40gb", 0),)


def test_an_idle_instance_in_the_way_is_listed_no_more_once_a_slice_goes_there():
    h = a100([("3g.40gb", 4)], [("1g.10gb", 2)])  # destroyed by a 2g.20gb at 2
    assert start_of(Placer([h]), "2g.20gb") == 2
    assert h.gpus[0].idle_instances == ()


def test_the_gpu_is_the_policys_only_the_start_moves():
    """Two GPUs alike in state, the second with an idle twin: the slice goes to the GPU the
    policy picks (the first, of GPUs alike), at the planner's start there."""
    busy = Instance(gi_id=0, profile="3g.40gb", start=4, size=4, compute_slices=3, busy=True)
    gpus = [Gpu("A100-80GB", 81920, layout=Layout(A100, (busy,))) for _ in range(2)]
    gpus[1].idle_instances = (("2g.20gb", 0),)
    p = Placer([Host("a", 32000, 65536, gpus)]).schedule(Request("j", mig="2g.20gb"))
    assert (p.gpus, p.plans[0].start) == ((0,), 2)


def test_memos_kept_across_placers_give_each_gpu_its_own_start():
    """A placer's memos (kept across passes) hold the planner's start; the twin's is chosen on
    the host as it is, so a GPU state seen before without the twin answers right with it."""
    memos = Memos()
    assert start_of(Placer([a100([("3g.40gb", 4)])], memos=memos), "2g.20gb") == 2
    assert start_of(Placer([a100([("3g.40gb", 4)], [("2g.20gb", 0)])], memos=memos),
                    "2g.20gb") == 0
    assert start_of(Placer([a100([("3g.40gb", 4)], [("1g.10gb", 0)])], memos=memos),
                    "2g.20gb") == 2  # an idle instance of another profile is no twin


PROFILES = [p.name for p in A100.by_size()]


@st.composite
def a100_states(draw) -> Gpu:
    """An A100-80GB whose instances (made as the planner allows, in a drawn order) are held by
    jobs or idle, each drawn."""
    layout, idle = Layout(A100), []
    for name in draw(st.lists(st.sampled_from(PROFILES), max_size=10)):
        profile = A100.profile(name)
        start = draw(st.sampled_from(profile.starts))
        if planner.refusal(layout, profile, start) is None:
            made = Instance(gi_id=len(layout.instances), profile=name, start=start,
                            size=profile.size, compute_slices=profile.compute_slices,
                            busy=True)
            layout = Layout(A100, layout.instances + (made,))
            if draw(st.integers(0, 2)):  # idle: kept out of the layout the placer sees
                idle.append((name, start))
    held = tuple(i for i in layout.instances if (i.profile, i.start) not in idle)
    return Gpu("A100-80GB", 81920, layout=Layout(A100, held), idle_instances=tuple(idle))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(a100_states(), min_size=1, max_size=4), st.data(), st.sampled_from(POLICIES))
def test_idle_twins_move_only_the_start_and_leave_the_same_room(gpus, data, policy):
    """Against the same fleet with its idle instances unlisted, step by step: the same GPU, a
    start that leaves the same planner room, and it is an idle twin's exactly when the
    placement says it reuses one; the idle instances left never overlap a held one."""
    twins = sorted({name for g in gpus for name, _ in g.idle_instances})
    asks = data.draw(st.lists(st.sampled_from(twins) if twins else st.sampled_from(PROFILES),
                              min_size=1, max_size=8) | st.lists(st.sampled_from(PROFILES),
                                                                 min_size=1, max_size=8))
    hosts = [Host("a", 64000, 262144, gpus)]
    placer = Placer(hosts, policy)
    for n, profile in enumerate(asks):
        req = Request("r%d" % n, mig=profile)
        blind_hosts = copy.deepcopy(hosts)
        for g in blind_hosts[0].gpus:
            g.idle_instances = ()
        blind = Placer(blind_hosts, policy).schedule(req)
        idle = {k: g.idle_instances for k, g in enumerate(hosts[0].gpus)}
        layouts = {k: g.layout for k, g in enumerate(hosts[0].gpus)}
        p = placer.schedule(req)
        assert (p is None) == (blind is None)
        if p is None:
            continue
        assert p.gpus == blind.gpus
        g, plan, base = p.gpus[0], p.plans[0], blind.plans[0]
        room = [planner.room(layouts[g].with_instance(x.profile, x.start)) for x in (plan, base)]
        assert room[0] == room[1]
        twin = (profile, plan.start) in idle[g]
        assert plan.start == base.start or twin
        assert p.reused == ((True,) if twin else ())
        for k, gpu in enumerate(hosts[0].gpus):
            held = {s for i in gpu.layout.instances for s in i.slots()}
            for name, start in gpu.idle_instances:
                assert not held & set(A100.profile(name).slots(start)), (k, name, start)


def a100_view() -> HostView:
    """A host as its agent reports it: one A100-80GB in MIG mode, a 3g.40gb at 4 a job holds
    (idle while its process starts), an idle 2g.20gb at 0 no job holds, and a 1g.10gb at 2
    with someone's process."""
    instances = [
        {"gi_id": 1, "profile": "3g.40gb", "start": 4, "size": 4, "uuid": "MIG-held",
         "busy": False},
        {"gi_id": 2, "profile": "2g.20gb", "start": 0, "size": 2, "uuid": "MIG-idle",
         "busy": False},
        {"gi_id": 3, "profile": "1g.10gb", "start": 2, "size": 1, "uuid": "MIG-used",
         "busy": True}]
    rec = {"index": 0, "uuid": "GPU-0", "name": A100_NAME, "memory_mib": 81920,
           "mig_mode": True, "mig_pending": True, "mig_capable": True, "processes": [],
           "instances": instances}
    hello = {"cpus": 32, "memory_mib": 65536, "gpus": [rec],
             "privileges": {"mig_changes": True}}
    job = {"key": "k1", "state": "running", "gpus": [0], "instance": "MIG-held"}
    return HostView("a", "online", hello, {"gpus": [rec]}, {"1": job})


def test_fleetview_lists_the_idle_instances_no_job_holds():
    gpu = build_hosts([a100_view()], [], "uid")[0].gpus[0]
    assert gpu.idle_instances == (("2g.20gb", 0),)
    assert sorted((i.profile, i.start) for i in gpu.layout.instances) == [
        ("1g.10gb", 2), ("3g.40gb", 4)]


def test_a_placement_by_hand_without_a_start_takes_the_idle_twins():
    """``fractui place JOB HOST GPU --profile 2g.20gb``: the start the placer would pick."""
    view = a100_view()
    instances = view.snapshot["gpus"][0]["instances"]
    del instances[2]  # the 1g.10gb at 2 gone: a 2g.20gb at 0 or at 2 leaves the same room
    job = Job(7, "small", None, "j", ("x",), {"mig": "2g.20gb", "isolation": "mig"},
              "decided", 0.0, 0.0, slot=Slot("a", (0,), "2g.20gb"))
    assert complete(job, view, "uid", []).start == 0  # the idle 2g.20gb's
    del instances[1]
    assert complete(job, view, "uid", []).start == 2  # the planner's


def test_a_decision_without_a_start_is_booked_where_its_launch_goes_the_idle_twin():
    """A job placed by hand as 2g.20gb, its start left open, not launched yet: its launch
    takes the idle 2g.20gb at 0 (``complete``, above), so the pass books it there and the
    next 2g.20gb goes to 2. Before, the pass booked it at the planner's 2 and left the twin
    listed idle: the next job was given the twin too, and one of the two launches refused."""
    view = a100_view()
    del view.snapshot["gpus"][0]["instances"][2]
    decided = Job(7, "small", None, "j", ("x",), {"mig": "2g.20gb", "isolation": "mig"},
                  "placed", 0.0, 0.0, slot=Slot("a", (0,), "2g.20gb"))
    gpu = build_hosts([view], [decided], "uid")[0].gpus[0]
    assert gpu.idle_instances == ()
    assert sorted((i.profile, i.start) for i in gpu.layout.instances) == [
        ("2g.20gb", 0), ("3g.40gb", 4)]
    assert start_of(Placer(build_hosts([view], [decided], "uid")), "2g.20gb") == 2


def test_a_placement_by_hand_at_a_start_its_profile_never_has_is_refused_before_it_is_made():
    """``fractui place JOB HOST GPU --profile 1g.10gb --start 63``: refused saying where the
    profile may start, before anything is recorded (the agent refused it at launch, and the
    job failed), with the GPU in MIG mode or turned to it by the launch."""
    view = a100_view()
    for start, profile in ((63, "1g.10gb"), (7, "1g.10gb"), (1, "3g.40gb")):
        job = Job(7, "small", None, "j", ("x",), {"mig": profile, "isolation": "mig"},
                  "decided", 0.0, 0.0, slot=Slot("a", (0,), profile, start))
        with pytest.raises(Unfit) as refused:
            complete(job, view, "uid", [])
        assert str(refused.value).startswith("%s starts only at slot " % profile)
        assert str(refused.value).endswith("on GPU 0 of a (%s), not %d" % (A100_NAME, start))
        off = copy.deepcopy(view)
        off.snapshot["gpus"][0].update(mig_mode=False, instances=[])
        with pytest.raises(Unfit):
            complete(job, off, "uid", [])


SLICE = QueueConfig(name="small", mig="2g.20gb", isolation="mig")
BIG = QueueConfig(name="big", mig="3g.40gb", isolation="mig")


def test_a_job_runs_on_the_idle_twin_as_it_is_and_the_preview_says_so(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [BIG, SLICE])
    big = f.submit("big")
    f.until(lambda: f.states()[big.id] == "running")
    agent = f.fleet.session("gpu-a")
    layout = agent.call("snapshot")["gpus"][0]["instances"]
    assert [(i["profile"], i["start"]) for i in layout] == [("3g.40gb", 4)]
    idle = agent.call("mig.apply", {"gpu": 0, "profile": "2g.20gb", "start": 0})["instance"]
    f.until(lambda: len((next(s for s in f.fleet.statuses() if s.name == "gpu-a").snapshot
                         or {})["gpus"][0]["instances"]) == 2)
    small = f.submit("small")
    views = [HostView(s.name, s.state, s.hello, s.snapshot, dict(s.jobs))
             for s in f.fleet.statuses()]
    found = candidates(views, f.store.jobs(), f.store.uid, small)
    assert [(c.start, c.chosen) for c in found][0] == (0, True)
    assert found[0].plan == ("reuses the idle 2g.20gb at slot 0 (%s) on gpu0 of gpu-a as it "
                             "is; no MIG change" % idle["uuid"])
    f.until(lambda: f.states()[small.id] == "running")
    running = next(j for j in f.agent_jobs()
                   if j["key"] == f.store.get(small.id).key(f.store.uid))
    assert running["instance"] == idle["uuid"]
    now = agent.call("snapshot")["gpus"][0]["instances"]
    assert sorted((i["profile"], i["start"], i["uuid"]) for i in now) == sorted(
        [("3g.40gb", 4, layout[0]["uuid"]), ("2g.20gb", 0, idle["uuid"])])
    assert [e for e in f.store.audit_log() if e.action == "mig"] == []
