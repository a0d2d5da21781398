"""The placement core on small fleets whose right answers can be worked out by hand."""

from __future__ import annotations

import pytest

from remote_agent.gpu.models import model
from remote_agent.mig import planner
from remote_agent.mig.layout import Layout

from fractui.sched import Gpu, Host, Placer, Request, TypicalClass, host_frag, typical_classes
from fractui.sched.mig import profile_for, profile_for_fraction

A100 = model("A100-80GB").geometry()
A30 = model("A30").geometry()


def plain(name: str, n: int = 2, cpu: int = 32000, ram: int = 65536, gpu: str = "T4") -> Host:
    return Host(name, cpu, ram, [Gpu(gpu, 16384) for _ in range(n)])


def migh(name: str, n: int = 1, cpu: int = 32000, ram: int = 65536) -> Host:
    return Host(name, cpu, ram, [Gpu("A100-80GB", 81920, layout=Layout(A100)) for _ in range(n)])


@pytest.mark.parametrize("f,want", [(0.1, "1g.10gb"), (0.125, "1g.10gb"), (0.14, "1g.20gb"),
                                    (0.25, "2g.20gb"), (0.27, "3g.40gb"), (0.47, "4g.40gb"),
                                    (0.58, "7g.80gb"), (1.0, "7g.80gb")])
def test_fraction_to_profile_follows_design_rule(f, want):
    assert profile_for_fraction(A100, f).name == want


def test_fraction_on_a30_uses_four_slices():
    assert profile_for_fraction(A30, 0.25).name == "1g.6gb"
    assert profile_for_fraction(A30, 0.3).name == "2g.12gb"


def test_request_forms_and_whole_gpus():
    assert profile_for(Request("w", gpus=1), A100).name == "7g.80gb"
    assert profile_for(Request("m", memory_gib=15), A100).name == "1g.20gb"
    assert profile_for(Request("s", gpu=0.5, isolation="share"), A100) is None
    with pytest.raises(ValueError, match="one of gpu"):
        Request("x", gpu=0.5, gpus=1)
    with pytest.raises(ValueError, match="fraction below 1"):
        Request("x", gpu=1.5)
    with pytest.raises(ValueError, match="isolation"):
        Request("x", isolation="bogus")
    with pytest.raises(ValueError, match="unknown policy"):
        Placer([], policy="worst")


def test_best_fit_takes_the_tightest_gpu():
    h = plain("a")
    h.gpus[0].free_milli, h.gpus[1].free_milli = 900, 400
    p = Placer([h], "best-fit").schedule(Request("j", gpu=0.3))
    assert p.gpus == (1,) and h.gpus[1].free_milli == 100


def test_whole_gpus_need_free_gpus_and_cpu_ram_are_counted():
    h = plain("a", n=2, cpu=8000, ram=1000)
    placer = Placer([h], "fgd")
    assert placer.schedule(Request("s", gpu=0.5, cpu_milli=1000)) is not None
    assert placer.schedule(Request("w", gpus=2)) is None  # one GPU is shared now
    assert placer.schedule(Request("w1", gpus=1, cpu_milli=7000)) is not None
    assert placer.schedule(Request("c", cpu_milli=1)) is None  # CPU is all used
    assert (h.cpu_free, h.memory_free) == (0, 1000)
    assert placer.schedule(Request("r", memory_mib=2000)) is None


def test_mig_request_gets_the_planners_plan():
    h = migh("m")
    placer = Placer([h], "fractui")
    before = h.gpus[0].layout
    p = placer.place(Request("j", mig="3g.40gb"))
    assert p.plans[0] == planner.plan(before, "3g.40gb", destroy_idle=True)
    placer.commit(p)
    inst = h.gpus[0].layout.instances
    assert [(i.profile, i.busy) for i in inst] == [("3g.40gb", True)]
    assert placer.schedule(Request("k", gpu=0.5)).plans[0].profile.name == "4g.40gb"
    assert placer.schedule(Request("l", gpu=0.1)) is None  # 7 of 7 compute slices used


def test_filters_and_isolation():
    hosts = [plain("t4", gpu="T4"), plain("v100", gpu="V100"), migh("mig")]
    placer = Placer(hosts, "best-fit")
    assert placer.schedule(Request("a", gpu=0.5, models=frozenset({"V100"}))).host == "v100"
    assert placer.schedule(Request("b", gpu=0.5, hosts=frozenset({"t4"}))).host == "t4"
    assert placer.schedule(Request("c", gpu=0.5, isolation="mig")).host == "mig"
    p = placer.schedule(Request("d", gpu=0.2, isolation="share"))
    assert p.host != "mig" and p.plans == (None,)
    assert placer.schedule(Request("e", gpu=0.5, hosts=frozenset({"nowhere"}))) is None


def test_first_fit_follows_the_seeded_host_order_and_is_deterministic():
    def run(seed):
        hosts = [plain("h%d" % i) for i in range(6)]
        placer = Placer(hosts, "first-fit", seed=seed)
        return [placer.schedule(Request("j%d" % k, gpu=0.6)).host for k in range(8)]
    assert run(1) == run(1)
    assert len({tuple(run(s)) for s in range(5)}) > 1


def test_host_frag_counts_idle_gpu_a_class_cannot_use():
    h = plain("a")
    keys = (1000, 300)
    kinds = tuple((g.model, g.memory_mib, None) for g in h.gpus)
    half = TypicalClass(Request("s", gpu=0.5, cpu_milli=1000), 1.0)
    assert host_frag(kinds, 32000, keys, [half]) == 300
    assert host_frag(kinds, 500, keys, [half]) == 1300  # too little CPU: all idle is lost
    cpu_only = TypicalClass(Request("c", cpu_milli=1000), 1.0)
    assert host_frag(kinds, 32000, keys, [cpu_only]) == 1300


def test_fgd_avoids_fragmenting_and_classes_cover_95_percent():
    reqs = [Request("s%d" % i, gpu=0.5) for i in range(19)] + [Request("w", gpus=1)]
    classes = typical_classes(reqs)
    assert [round(c.weight, 2) for c in classes] == [1.0]
    h = plain("a")
    h.gpus[0].free_milli = 500  # a half-used GPU and a free one
    p = Placer([h], "fgd", classes).schedule(Request("j", gpu=0.5))
    assert p.gpus == (0,)  # filling the half-used GPU leaves a whole one for the next half


def test_hosts_kept_across_passes_are_rebuilt_only_where_their_host_changed():
    import dataclasses

    from fractui.sched.fleetview import HostCache, HostView, build_hosts
    from fractui.tui.sample import UID, sample_fleet

    fleet = sample_fleet(32, per_host=8)
    views = [HostView.of(s) for s in fleet.statuses]
    jobs = list(fleet.store.jobs)
    cache = HostCache()
    assert cache.update(views, jobs, UID)  # every host is new
    first = cache.copies()
    assert first == build_hosts(views, jobs, UID)
    Placer(first, "first-fit").schedule(Request("j", gpus=1))  # a placer changes what it is given
    assert not cache.update(views, jobs, UID)
    again = cache.copies()
    assert again == build_hosts(views, jobs, UID)  # copies: the commit above left no trace
    # a job ended: its agent's record says so (a new record, as a session replaces it) and the
    # store has it done: that host is built anew, as build_hosts builds it
    host = next(v for v in views if any(r["memory_mib"] for r in v.jobs.values()))
    job_id, rec = next((k, r) for k, r in host.jobs.items() if r["memory_mib"])  # a share
    ended = dataclasses.replace(host, jobs=dict(host.jobs, **{job_id: dict(rec, state="exited")}))
    views = [ended if v is host else v for v in views]
    jobs = [j for j in jobs if j.key(UID) != rec["key"]]
    assert cache.update(views, jobs, UID)
    now = cache.copies()
    assert now == build_hosts(views, jobs, UID) and now != again
    # a snapshot that moves only utilisation is a new object with an equal signature: kept
    busier = dataclasses.replace(ended, snapshot=dict(ended.snapshot, time=1.0))
    views = [busier if v is ended else v for v in views]
    assert not cache.update(views, jobs, UID) and cache.copies() == now
    # a host gone, or the same hosts in another order, is a change
    assert cache.update(views[1:], jobs, UID) and cache.update(views, jobs, UID)
    assert cache.update(views[::-1], jobs, UID) and cache.copies() == build_hosts(
        views[::-1], jobs, UID)


def test_a_pass_on_the_same_inputs_is_the_last_ones_and_any_change_decides_anew():
    """``schedule`` with what earlier passes kept returns the last result for the same
    inputs (a pass with nothing new) and decides again when a job, a host or a refusal
    changed — always what a pass with nothing kept decides."""
    import dataclasses

    from fractui.config import TeamConfig
    from fractui.sched.fleetview import HostView
    from fractui.sched.queueing import Kept, schedule
    from fractui.store.model import Job
    from fractui.tui.sample import QUEUES, UID, sample_fleet

    fleet = sample_fleet(64, per_host=8)
    views = [HostView.of(s) for s in fleet.statuses]
    teams = (TeamConfig("a", quota_gpus=4.0), TeamConfig("b", quota_gpus=0.0))
    jobs = list(fleet.store.jobs) + [
        Job(10_000 + i, QUEUES[i % len(QUEUES)].name, teams[i % 2].name, "w%d" % i, ("x",),
            QUEUES[i % len(QUEUES)].request(), "pending", float(i), 0.0) for i in range(12)]
    kept = Kept()

    def both(views, jobs, refused=None):
        fresh = schedule(views, jobs, QUEUES, teams, UID, refused)
        return schedule(views, jobs, QUEUES, teams, UID, refused, kept), fresh

    first, fresh = both(views, jobs)
    assert first == fresh and first.waiting and first.decisions
    again, fresh = both(views, jobs)
    assert again is first and again == fresh  # nothing new: the last result, not a new pass
    copied, _ = both(views, [dataclasses.replace(j) for j in jobs])  # equal jobs read again
    assert copied is first
    one_more = jobs + [Job(20_000, QUEUES[0].name, "a", "n", ("x",), QUEUES[0].request(),
                           "pending", 99.0, 0.0)]
    changed, fresh = both(views, one_more)
    assert changed is not first and changed == fresh and 20_000 in (
        {d.job for d in changed.decisions} | set(changed.waiting))
    host = first.decisions[0].slot.host
    refused = {first.decisions[0].job: (host,)}
    avoided, fresh = both(views, one_more, refused)
    assert avoided is not changed and avoided == fresh
    fewer = [v for v in views if v.name != host]  # the same jobs and refusals, a host gone
    gone, fresh = both(fewer, one_more, refused)
    assert gone is not avoided and gone == fresh and all(d.slot.host != host
                                                         for d in gone.decisions)


def test_a_request_that_takes_either_is_sought_as_a_share_within_the_quotas_room():
    """``_within_room``: where the best slot charges past what the team may still take, and no
    other GPU model is left to try (test_scheduler has a share placed on another model), a
    request that takes either gets a share of a plain GPU of the model (0.3 charged) where
    its slice (3g: 3/7) is too much; none for whole GPUs, which charge 1 wherever they go."""
    from fractui.sched.queueing import _within_room, slot_of

    placer = Placer([migh("m"), Host("a", 32000, 65536, [Gpu("A100-80GB", 81920)])],
                    "first-fit")
    req = Request("j", gpu=0.3)
    sliced = placer.place(Request("j", gpu=0.3, isolation="mig"))
    assert slot_of(sliced, req, placer).charge == round(3 / 7, 6)
    found = _within_room(req, sliced, placer, placer.place, lambda c: c <= 0.35)
    assert found is not None and found[1].profile is None and found[1].charge == 0.3
    assert _within_room(req, sliced, placer, placer.place, lambda c: c <= 0.2) is None
    whole = Request("w", gpus=1)
    assert _within_room(whole, placer.place(whole), placer, placer.place, lambda c: False) \
        is None


def test_a_mig_job_its_agent_is_starting_books_its_slices_until_its_instance_is_there():
    """The agent records a MIG launch as starting before it makes the instance (its record's
    ``mig``, no ``instance``), and the snapshot shows the instance a tick later. Running by
    its agent's record, the job was no longer booked from its decision, nor from an instance:
    its whole GPU was offered to the next job (the map and the GPU view draw it the job's).
    Booked from its decision now, until the instance is there."""
    from fractui.sched.fleetview import HostView, build_hosts
    from fractui.store.model import PLACED, Job, Slot

    gpus = [{"index": 0, "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920,
             "mig_mode": True, "instances": []}]
    job = Job(id=4, queue="q", team="t", name="j4", argv=("x",), request={}, state=PLACED,
              submitted_at=0.0, updated_at=0.0,
              slot=Slot("gpu-a", (0,), profile="7g.80gb", start=0))
    record = {"id": "j1", "key": job.key("s1"), "gpus": [0], "state": "starting",
              "instance": None, "mig": {"profile": "7g.80gb", "start": 0}}
    for jobs in ({}, {"j1": record}):
        view = HostView("gpu-a", "online", {"cpus": 8, "memory_mib": 64000, "gpus": gpus},
                        {"gpus": gpus}, jobs)
        (gpu,) = build_hosts([view], [job], "s1")[0].gpus
        assert gpu.free_milli == 0, jobs
        assert [(i.profile, i.start, i.busy) for i in gpu.layout.instances] == [
            ("7g.80gb", 0, True)], jobs
    # made: the instance in the snapshot, busy by its record
    made = [dict(gpus[0], instances=[{"gi_id": 1, "profile": "7g.80gb", "start": 0, "size": 8,
                                      "uuid": "MIG-a"}])]
    view = HostView("gpu-a", "online", {"cpus": 8, "memory_mib": 64000, "gpus": made},
                    {"gpus": made}, {"j1": dict(record, state="running", instance="MIG-a")})
    (gpu,) = build_hosts([view], [job], "s1")[0].gpus
    assert gpu.free_milli == 0
    assert [(i.start, i.busy) for i in gpu.layout.instances] == [(0, True)]
