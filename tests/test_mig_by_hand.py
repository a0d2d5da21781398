"""MIG by hand: ``fractui mig HOST GPU --destroy INSTANCE`` and ``--mode on|off``, planned (the
pure plan of fractui.sched.mig_change), shown, confirmed, refused with the reason while a job
holds the instance or GPU, applied by the real agent process over its existing RPCs, audited;
and the fake NVML's pending mode changes, which say when a GPU reset is needed."""

from __future__ import annotations

import json
import re

import pytest

from fractui.config import QueueConfig
from fractui.sched.fleetview import booked_layout
from fractui.sched.mig_change import (fits, free_runs, outcome, placement_layout, plan_destroy,
                                     plan_mode)
from fractui.store import Slot
from fractui.terminal import NO_TERMINAL
from fractui.store.model import Job
from remote_agent import FEATURES, MODE_RESET
from remote_agent.gpu import fake_pynvml as nv
from remote_agent.mig import planner
from tests import localfleet

local_fleet = localfleet.local_fleet
SMALL = QueueConfig(name="small", mig="1g.10gb")
IDLE = {"uuid": "MIG-a", "gi_id": 1, "profile": "1g.10gb", "start": 6, "size": 1, "busy": False,
        "pids": []}
BUSY = dict(IDLE, uuid="MIG-b", gi_id=2, start=0, size=4, profile="3g.40gb", busy=True,
            pids=[4242])
A100 = {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "mig_capable": True, "mig_mode": True,
        "mig_pending": True, "instances": [IDLE, BUSY], "processes": [{"pid": 4242}]}


def store_job(id_: int, state: str, slot: Slot) -> Job:
    return Job(id_, "small", "vision", "train", ("x",), {}, state, 0.0, 0.0, slot=slot)


def test_a_destroy_is_planned_on_an_idle_instance_and_refused_naming_what_holds_it():
    ok = plan_destroy("gpu-a", A100, "MIG-a")
    assert ok.refusal is None
    assert ok.text == "destroy idle 1g.10gb at slot 6 (MIG-a) on gpu-a gpu 1; 3g.40gb@0 " \
                      "stays as it is"
    assert (ok.method, ok.params) == ("mig.destroy", {"gpu": 1, "instance": "MIG-a"})
    job = store_job(7, "running", Slot("gpu-a", (1,), "3g.40gb", 0))
    agent = [{"id": "j3", "state": "running", "gpus": [1], "instance": "MIG-b",
              "key": job.key("s1")}]
    held = plan_destroy("gpu-a", A100, "MIG-b", agent, [job], "s1")
    assert held.refusal == "3g.40gb at slot 0 (MIG-b) is held by job 7: stop it first (an " \
                           "instance in use is never destroyed)"
    assert plan_destroy("gpu-a", A100, "MIG-b").refusal == (
        "3g.40gb at slot 0 (MIG-b) has processes (pids 4242): an instance in use is never "
        "destroyed")
    assert plan_destroy("gpu-a", A100, "MIG-z").refusal == (
        "gpu-a gpu 1 has no MIG instance MIG-z, nor one a rolled-back change made again in "
        "its place; it has 1g.10gb at slot 6 (MIG-a), 3g.40gb at slot 0 (MIG-b)")
    assert plan_destroy("gpu-a", dict(A100, mig_mode=False), "MIG-a").refusal == (
        "gpu-a gpu 1 has MIG mode off: it has no MIG instances")


def test_the_admin_sides_plan_words_name_the_uuids_an_instance_was_made_again_in_place_of():
    """An idle instance its agent says a rolled-back change made again (``remade_of``) is
    named so in the words the admin side's planner gives on the snapshot (a plan's steps, a
    refusal, a preview's), as in its agent's: they named its new uuid alone."""
    gpu = dict(A100, instances=[dict(IDLE, remade_of=["MIG-old"])], processes=[])
    booked = booked_layout(gpu, [])
    assert booked is not None
    words = "idle 1g.10gb at slot 6 (MIG-a, made again in place of MIG-old by a rolled-back " \
            "change)"
    with pytest.raises(planner.PlanError, match=re.escape("destroying %s would" % words)):
        planner.plan(booked.layout, "7g.80gb")
    assert planner.plan(booked.layout, "7g.80gb", destroy_idle=True).describe().startswith(
        "destroy %s; create 7g.80gb" % words)


def test_the_picker_judges_each_profile_by_the_agents_planner_on_the_snapshot():
    """Busy 3g.40gb at slot 0 and idle 1g.10gb at slot 6: what fits says where, first; what
    does not says why in a few words (a busy instance in the way, an idle one that would go,
    an idle twin there to use)."""
    booked = booked_layout(A100, [])
    assert booked is not None
    judged = {f.profile.name: f for f in fits(booked.layout)}
    order = [f.profile.name for f in fits(booked.layout)]
    assert order == ["2g.20gb", "1g.20gb", "1g.10gb", "1g.10gb+me", "7g.80gb", "4g.40gb",
                     "3g.40gb"], order
    assert [judged[p].start for p in order[:4]] == [4, 4, 5, 5]
    assert judged["7g.80gb"].why == "no free placement: 3g.40gb busy at slot 0"
    assert judged["4g.40gb"].why == "no free placement: 3g.40gb busy at slot 0"
    assert judged["3g.40gb"].why == "would destroy idle 1g.10gb at slot 6"
    idle7 = dict(A100, instances=[dict(IDLE, profile="7g.80gb", start=0, size=8)])
    judged = {f.profile.name: f for f in fits(booked_layout(idle7, []).layout)}
    assert judged["7g.80gb"].why == "idle 7g.80gb at slot 0 can be used as it is"
    assert judged["1g.10gb"].why == "would destroy idle 7g.80gb at slot 0"
    assert [i.profile for i in judged["1g.10gb"].destroys] == ["7g.80gb"]
    assert all(f.start is None for f in judged.values())


def test_a_placed_job_beside_an_idle_twin_is_booked_where_its_launch_goes():
    """An A100 whose one instance is an idle 3g.40gb at 4, a job placed there as 3g.40gb not
    started yet. Its start left open (``fractui place`` without ``--start``), the GPU view,
    ``N`` and the map booked it at 0, by the planner on the layout with the idle one in it,
    and read 4-7 as idle: placement books it at 4 (the idle instances left out) and its
    launch takes the twin there. Its start given as 4, it booked nothing: the twin stayed
    idle, ``N`` offering it to use as it is."""
    twin = dict(IDLE, uuid="MIG-c", profile="3g.40gb", start=4, size=4)
    gpu = dict(A100, instances=[twin], processes=[])
    for start in (None, 4):
        job = store_job(9, "placed", Slot("gpu-a", (1,), "3g.40gb", start))
        layout, starts = placement_layout(booked_layout(gpu, []), [job])
        assert starts == {9: 4}, (start, starts)
        assert [(i.profile, i.start, i.busy) for i in layout.instances] == [
            ("3g.40gb", 4, True)], (start, layout)
        assert free_runs(gpu, layout) == [(0, 3)], start
        assert {f.profile.name: f.start for f in fits(layout)}["4g.40gb"] == 0, start


def test_a_mode_change_is_planned_on_an_idle_gpu_only():
    idle = dict(A100, instances=[], processes=[])
    off = plan_mode("gpu-a", idle, False)
    assert off.refusal is None and (off.method, off.params) == (
        "mig.set_mode", {"gpu": 1, "enabled": False})
    assert off.text.startswith("turn MIG mode off on gpu-a gpu 1 (NVIDIA A100-SXM4-80GB, MIG "
                               "now on): its jobs then take memory shares")
    assert "or at the next GPU reset, and says which" in off.text
    placed = store_job(9, "placed", Slot("gpu-a", (1,), "1g.10gb", 6))
    assert plan_mode("gpu-a", idle, False, [], [placed], "s1").refusal == (
        "gpu-a gpu 1 is in use by job 9 (placed): MIG mode changes only on an idle GPU (stop "
        "them, or drain it first: fractui drain gpu-a 1)")
    assert plan_mode("gpu-a", dict(idle, instances=[IDLE]), False).refusal == (
        "gpu-a gpu 1 has MIG instances (1g.10gb at slot 6 (MIG-a)): destroy them first "
        "(fractui mig gpu-a 1 --destroy UUID)")
    assert plan_mode("gpu-a", dict(idle, processes=[{"pid": 5}]), False).refusal == (
        "gpu-a gpu 1 has processes (pids 5): MIG mode changes only on an idle GPU")
    assert plan_mode("gpu-a", idle, True).refusal == (
        "gpu-a gpu 1 already has MIG mode on: nothing to change")
    pending = dict(idle, mig_mode=False)
    assert plan_mode("gpu-a", pending, True).refusal == (
        "gpu-a gpu 1 already has MIG mode on pending: it takes effect at the next GPU reset "
        "(fractui mig gpu-a 1 --mode on --reset makes one now, while nothing uses the GPU)")
    reset = plan_mode("gpu-a", pending, True, reset=True)
    assert reset.refusal is None and reset.params == {"gpu": 1, "enabled": True, "reset": True}
    assert reset.text.endswith("or the agent then resets the GPU (only while nothing runs "
                               "there)")
    assert plan_mode("gpu-a", pending, True, reset=True, can_reset=False).refusal == (
        "gpu-a's agent cannot reset a GPU (it is older than mig.set_mode's reset): update it, "
        "or reset the GPU on the host with nothing holding it")
    assert plan_mode("gpu-a", dict(pending, processes=[{"pid": 5}]), True,
                     reset=True).refusal == (
        "gpu-a gpu 1 has processes (pids 5): MIG mode changes only on an idle GPU")
    l4 = {"index": 0, "name": "NVIDIA L4", "mig_capable": False, "mig_mode": False}
    assert plan_mode("gpu-a", l4, True).refusal == "gpu-a gpu 0 (NVIDIA L4) does not support MIG"
    said = outcome(off, {"mig_mode": True, "mig_pending": False, "reset_required": True})
    assert said == "MIG mode off is pending on gpu-a gpu 1: it takes effect after a GPU reset " \
                   "(fractui mig gpu-a 1 --mode off --reset makes one now, while nothing uses " \
                   "the GPU); until then MIG stays on, and nothing new is placed on it"
    assert outcome(off, {"mig_mode": False, "reset_required": False}) == \
        "MIG mode is now off on gpu-a gpu 1"


def test_a_gpu_whose_mig_mode_change_is_pending_takes_no_new_work():
    from fractui.sched.fleetview import HostView, build_hosts, idle_view

    gpus = [{"index": i, "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920,
             "mig_mode": mode, "mig_pending": pending, "instances": []}
            for i, (mode, pending) in enumerate([(False, False), (False, True), (True, False)])]
    view = HostView("gpu-a", "online", {"cpus": 8, "memory_mib": 64000, "gpus": gpus},
                    {"gpus": gpus})
    host = build_hosts([view], [], "s1")[0]
    assert [g.free_milli for g in host.gpus] == [1000, 0, 0]
    # what the host could ever hold (the submit check, a placement by hand) is judged in the
    # mode each GPU has once its change took effect
    facts = {"cpus": 8, "memory_mib": 64000, "gpus": gpus}
    settled = build_hosts([idle_view("gpu-a", facts)], [], "s1")[0]
    assert [(g.mig, g.free_milli) for g in settled.gpus] == [(False, 1000), (True, 1000),
                                                             (False, 1000)]


def test_only_an_idle_mig_capable_gpu_of_a_host_that_does_not_pin_it_may_change_mode():
    from fractui.sched.fleetview import HostView, build_hosts, geometry, signature

    def rec(index, name, mig, **more):
        return dict({"index": index, "name": name, "memory_mib": 81920, "mig_capable": True,
                     "mig_mode": mig, "mig_pending": mig, "instances": [], "processes": []},
                    **more)

    a100, h100, l4 = "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA L4"
    gpus = [rec(0, a100, False),                                  # idle, MIG off
            rec(1, h100, True, instances=[IDLE]),                 # idle instance only
            rec(2, a100, False, processes=[{"pid": 77}]),         # a foreign process
            rec(3, a100, True, instances=[dict(IDLE, busy=True)]),  # a busy instance
            rec(4, a100, False, mig_pending=True),                # a change pending
            rec(5, a100, False),                                  # a job of the agent's
            rec(6, a100, False),                                  # a decision of the store's
            rec(7, l4, False, mig_capable=False),                 # no MIG
            rec(8, a100, False, mig_capable=False),               # MIG not offered (a VM)
            rec(9, a100, False, degraded="a change failed")]      # left degraded
    agent_jobs = {"j1": {"id": "j1", "state": "running", "gpus": [5], "key": "k"}}
    hello = {"cpus": 8, "memory_mib": 64000,  # hello's GPU records tell no processes
             "gpus": [{k: v for k, v in g.items() if k != "processes"} for g in gpus],
             "features": list(FEATURES)}
    decided = store_job(9, "placed", Slot("gpu-a", (6,), None, None, memory_mib=1024))
    view = HostView("gpu-a", "online", hello, {"gpus": gpus}, agent_jobs)
    host = build_hosts([view], [decided], "s1")[0]
    assert [g.mig_geometry is not None for g in host.gpus] == [True, True] + [False] * 8
    assert host.gpus[0].mig_geometry == geometry(a100) and host.gpus[0].mode_reset is True
    assert host.gpus[1].mode_reset is False  # a Hopper changes without a reset
    # the snapshot not yet read (processes unknown): no change offered
    assert [g.mig_geometry for g in build_hosts([HostView("gpu-a", "online", hello)], [],
                                                "s1")[0].gpus] == [None] * 10
    pinned = HostView("gpu-a", "online", hello, {"gpus": gpus}, agent_jobs, mode_fixed=True)
    assert [g.mig_geometry for g in build_hosts([pinned], [decided], "s1")[0].gpus] == \
        [None] * 10
    # an agent whose hello does not say it can (older than the feature: one in a job image)
    # would answer INVALID_PARAMS to mig.set_mode's reset: no change offered on its host
    for features in (None, [], [MODE_RESET], "mig.set_mode.reset mig.set_mode.destroy_idle"):
        older = dict(hello, features=features) if features is not None else {
            k: v for k, v in hello.items() if k != "features"}
        view = HostView("gpu-a", "online", older, {"gpus": gpus}, agent_jobs)
        assert [g.mig_geometry for g in build_hosts([view], [decided], "s1")[0].gpus] == \
            [None] * 10, features
        assert signature(view) != signature(HostView("gpu-a", "online", hello, {"gpus": gpus},
                                                     agent_jobs))  # a pass reads it anew


def test_the_fake_reports_a_mode_change_that_waits_for_a_reset_as_nvml_does():
    nv.sim_open(None, "1xA100-80GB")
    nv.nvmlInit()
    try:
        h = nv.nvmlDeviceGetHandleByIndex(0)
        assert nv.nvmlDeviceSetMigMode(h, nv.NVML_DEVICE_MIG_ENABLE) == nv.NVML_SUCCESS
        assert nv.nvmlDeviceGetMigMode(h) == [1, 1]
        assert nv.nvmlDeviceSetMigMode(h, nv.NVML_DEVICE_MIG_DISABLE) == nv.NVML_SUCCESS
        nv.sim_mode_waits_for_reset(0)
        status = nv.nvmlDeviceSetMigMode(h, nv.NVML_DEVICE_MIG_ENABLE)
        assert status == nv.NVML_ERROR_RESET_REQUIRED  # the activation status, no exception
        assert nv.nvmlDeviceGetMigMode(h) == [0, 1]  # (current, pending)
        # the profiles read as with MIG on (a real GPU answers them with MIG off), but MIG is
        # not on yet: no instance can be made
        info = nv.nvmlDeviceGetGpuInstanceProfileInfo(h, nv.NVML_GPU_INSTANCE_PROFILE_1_SLICE)
        placement = nv.c_nvmlGpuInstancePlacement_t()
        placement.start, placement.size = 0, 1
        with pytest.raises(nv.NVMLError_NotSupported):
            nv.nvmlDeviceCreateGpuInstanceWithPlacement(h, info.id, placement)
        nv.nvmlShutdown()  # nvidia-smi -r is refused while this session holds the GPU
        nv.sim_reset_gpu(0)
        nv.nvmlInit()
        h = nv.nvmlDeviceGetHandleByIndex(0)
        assert nv.nvmlDeviceGetMigMode(h) == [1, 1]
        assert nv.nvmlDeviceSetMigMode(h, nv.NVML_DEVICE_MIG_DISABLE) == \
            nv.NVML_ERROR_RESET_REQUIRED
        assert nv.nvmlDeviceSetMigMode(h, nv.NVML_DEVICE_MIG_ENABLE) == nv.NVML_SUCCESS
        assert nv.nvmlDeviceGetMigMode(h) == [1, 1]  # asked back: nothing pending any more
    finally:
        nv.nvmlShutdown()


def said(done) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def gpu_record(f, index: int, host: str = "gpu-a") -> dict:
    """The GPU as its agent reports it now."""
    return f.fleet.session(host).call("snapshot")["gpus"][index]


def test_destroy_and_mode_by_hand_over_the_real_agent_planned_confirmed_refused_audited(
        local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB:mig,1xA100-80GB"}, [SMALL])
    made = f.fractui("mig", "gpu-a", "0", "1g.10gb", "--yes")
    assert made.returncode == 0, said(made)
    uuid = re.search(r"(MIG-\S+)", made.stdout).group(1)
    slot = gpu_record(f, 0)["instances"][0]["start"]
    assert made.stdout.endswith("created 1g.10gb at slot %d on gpu-a gpu 0: %s\n" % (slot, uuid))
    entry = [e for e in f.store.audit_log() if e.action == "mig"][-1]  # audited as the rest
    assert (entry.why, entry.detail["change"]) == (made.stdout.splitlines()[-1], "create")
    done = f.fractui("mig", "gpu-a", "0", "--destroy", uuid)  # no terminal: not confirmed
    assert done.returncode == 1, said(done)
    assert done.stdout == "destroy idle 1g.10gb at slot %d (%s) on gpu-a gpu 0; the GPU is then " \
                          "empty\n" % (slot, uuid)
    assert done.stderr == "fractui: %s\nfractui: gpu-a: not applied\n" % NO_TERMINAL
    assert [i["uuid"] for i in gpu_record(f, 0)["instances"]] == [uuid]
    done = f.fractui("mig", "gpu-a", "0", "--destroy", uuid, "--yes")
    assert done.returncode == 0, said(done)
    assert done.stdout.endswith("destroyed 1g.10gb at slot %d (%s) on gpu-a gpu 0\n" % (
        slot, uuid))
    assert gpu_record(f, 0)["instances"] == []
    entry = [e for e in f.store.audit_log() if e.action == "mig"][-1]
    assert entry.why == "destroyed 1g.10gb at slot %d (%s) on gpu-a gpu 0" % (slot, uuid)
    assert entry.detail == {"host": "gpu-a", "change": "destroy", "gpu": 0, "instance": uuid}
    assert "@" in entry.actor

    job = f.submit("small")  # a job on an instance: neither it nor the GPU's mode is touched
    f.until(lambda: f.states()[job.id] == "running")
    held = f.store.get(job.id)
    busy = next(i["uuid"] for i in gpu_record(f, held.slot.gpus[0])["instances"])
    index = held.slot.gpus[0]
    done = f.fractui("mig", "gpu-a", str(index), "--destroy", busy, "--yes")
    assert done.returncode == 1, said(done)
    assert done.stderr.startswith("fractui: not changed: 1g.10gb at slot ")
    assert done.stderr.endswith("(%s) is held by job %d: stop it first (an instance in use is "
                                "never destroyed)\n" % (busy, job.id))
    done = f.fractui("mig", "gpu-a", str(index), "--mode", "off", "--yes")
    assert done.returncode == 1, said(done)
    assert "is in use by job %d: MIG mode changes only on an idle GPU" % job.id in done.stderr
    assert f.states()[job.id] == "running" and gpu_record(f, index)["mig_mode"] is True

    other = 1 - index  # the idle GPU: MIG off now, on at once
    if not gpu_record(f, other)["mig_mode"]:
        done = f.fractui("mig", "gpu-a", str(other), "--mode", "on", "--yes")
        assert done.returncode == 0, said(done)
        assert done.stdout.endswith("MIG mode is now on on gpu-a gpu %d\n" % other)
    done = f.fractui("mig", "gpu-a", str(other), "--mode", "off", "--yes")
    assert done.returncode == 0, said(done)
    assert done.stdout.endswith("MIG mode is now off on gpu-a gpu %d\n" % other)
    # a GPU whose mode waits for a reset: said pending, then applied by the reset
    f.fleet.session("gpu-a").call("sim.mode_waits_for_reset", {"gpu": other})
    done = f.fractui("mig", "gpu-a", str(other), "--mode", "on", "--yes", "--json")
    assert done.returncode == 0, said(done)
    assert json.loads(done.stdout) == {"gpu": other, "mig_mode": False, "mig_pending": True,
                                       "reset_required": True, "reset": False,
                                       "changed": True}
    assert [e.why for e in f.store.audit_log() if e.action == "mig"][-1] == (
        "MIG mode on is pending on gpu-a gpu %d: it takes effect after a GPU reset (fractui mig "
        "gpu-a %d --mode on --reset makes one now, while nothing uses the GPU); until then MIG "
        "stays off, and nothing new is placed on it" % (other, other))
    rec = gpu_record(f, other)
    assert (rec["mig_mode"], rec["mig_pending"]) == (False, True)
    done = f.fractui("mig", "gpu-a", str(other), "--mode", "on", "--yes")
    assert done.returncode == 1 and "already has MIG mode on pending" in done.stderr, said(done)
    # as the words say: the agent resets it (stepping out of its own NVML session for it)
    done = f.fractui("mig", "gpu-a", str(other), "--mode", "on", "--reset", "--yes")
    assert done.returncode == 0, said(done)
    assert done.stdout.endswith("MIG mode is now on on gpu-a gpu %d, after a GPU reset (nothing "
                                "ran there)\n" % other)
    rec = gpu_record(f, other)
    assert (rec["mig_mode"], rec["mig_pending"]) == (True, True)
    assert [e.why for e in f.store.audit_log() if e.action == "mig"][-1] == (
        "MIG mode is now on on gpu-a gpu %d, after a GPU reset (nothing ran there)" % other)


def test_a_failed_destroy_is_rolled_back_by_the_agent_and_said(local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [SMALL])
    made = f.fractui("mig", "gpu-a", "0", "3g.40gb", "--yes")
    assert made.returncode == 0, said(made)
    uuid = re.search(r"(MIG-\S+)", made.stdout).group(1)
    before = [(i["profile"], i["start"]) for i in gpu_record(f, 0)["instances"]]
    f.fleet.session("gpu-a").call("sim.fault", {"function": "nvmlGpuInstanceDestroy",
                                                "error": "NVML_ERROR_UNKNOWN"})
    done = f.fractui("mig", "gpu-a", "0", "--destroy", uuid, "--yes")
    assert done.returncode == 1, said(done)
    assert done.stderr.startswith("fractui: gpu-a: "), done.stderr
    assert "rolled back" in done.stderr or "as it was" in done.stderr, done.stderr
    after = gpu_record(f, 0)
    assert [(i["profile"], i["start"]) for i in after["instances"]] == before
    assert "degraded" not in after
    # the instance's making is audited; the destroy, not done, is not
    assert [e.detail["change"] for e in f.store.audit_log() if e.action == "mig"] == ["create"]


def test_a_failed_change_that_left_the_gpu_changed_is_audited_once(local_fleet):
    """The instance's compute instance refused, then its GPU instance not destroyed however
    often asked: the agent says the GPU could NOT be restored and what it holds. That is a
    change of the GPU, and who asked for it is in the audit, once (before, a failure was never
    audited, so who left the GPU so was not known)."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [SMALL])
    session = f.fleet.session("gpu-a")
    session.call("sim.fault", {"function": "nvmlGpuInstanceCreateComputeInstance",
                               "error": "NVML_ERROR_INSUFFICIENT_RESOURCES"})
    session.call("sim.fault", {"function": "nvmlGpuInstanceDestroy",
                               "error": "NVML_ERROR_IN_USE", "count": 1000})
    done = f.fractui("mig", "gpu-a", "0", "3g.40gb", "--yes")
    session.call("sim.clear_faults", {})
    assert done.returncode == 1, said(done)
    assert "could NOT be restored" in done.stderr, done.stderr
    assert [(i["profile"], i["uuid"]) for i in gpu_record(f, 0)["instances"]] == [
        ("3g.40gb", None)]  # a GPU instance without its compute instance
    (entry,) = [e for e in f.store.audit_log() if e.action == "mig"]
    assert entry.why == "gpu-a gpu 0: " + done.stderr[len("fractui: gpu-a: "):].rstrip("\n")
    assert "could NOT be restored" in entry.why and "it now holds 3g.40gb@" in entry.why
    assert entry.detail["change"] == "create" and "@" in entry.actor


@pytest.fixture(scope="module")
def usage_fleet(tmp_path_factory):
    """The fleet the usage errors below are each run against: refused on their words, none
    changes it, so they share one (its agents started once)."""
    f = localfleet.LocalFleet(tmp_path_factory.mktemp("usage"), {"gpu-a": "1xA100-80GB:mig"},
                              [SMALL])
    try:
        yield f
    finally:
        f.close()


@pytest.mark.parametrize("argv, words", [
    (["mig", "gpu-a", "0"], "mig takes one of PROFILE (create an instance), --destroy INSTANCE "
                            "or --mode on|off; got none"),
    (["mig", "gpu-a", "0", "1g.10gb", "--mode", "on"], "got PROFILE and --mode"),
    (["mig", "gpu-a", "0", "--destroy", "MIG-1", "--mode", "off"], "got --destroy and --mode"),
    (["mig", "gpu-a", "0", "--mode", "off", "--destroy-idle"], "--destroy-idle goes with "
                                                               "PROFILE"),
    (["mig", "gpu-a", "0", "--mode", "maybe"], "invalid choice: 'maybe'"),
    (["mig", "gpu-a", "0", "3g.40gb", "--reset"], "--reset goes with --mode on|off"),
    (["mig", "gpu-a", "0", "--destroy", ""], "a MIG instance is named by its uuid"),
    (["mig", "gpu-z", "0", "--mode", "on"], "unknown host 'gpu-z'"),
    (["mig", "gpu-a", " x", "--mode", "on"], "a GPU is named by its index or uuid"),
])
def test_usage_errors_of_mig_by_hand_exit_2_naming_what(usage_fleet, argv, words):
    done = usage_fleet.fractui(*argv)
    assert done.returncode == 2, said(done)
    assert words in done.stderr, done.stderr


def test_carry_out_makes_the_confirmed_change_through_the_agent_and_never_a_refused_one(
        local_fleet):
    from fractui.mig_by_hand import carry_out
    from fractui.store.intents import Asker

    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [SMALL])
    session = f.fleet.session("gpu-a")
    refused = plan_mode("gpu-a", gpu_record(f, 0), True)  # already on
    with pytest.raises(ValueError, match="a refused plan is not carried out: gpu-a gpu 0 "
                                         "already has MIG mode on"):
        carry_out(f.store, Asker("tui"), session.call, refused)
    change = plan_mode("gpu-a", gpu_record(f, 0), False)
    said, answer = carry_out(f.store, Asker("tui"), session.call, change)
    assert said == "MIG mode is now off on gpu-a gpu 0"
    assert (answer["mig_mode"], gpu_record(f, 0)["mig_mode"]) == (False, False)
    assert [(e.action, e.why) for e in f.store.audit_log()] == [("mig", said)]
    assert f.store.audit_log()[0].actor.endswith("@tui")


def test_a_destroy_retried_after_its_rollback_destroys_the_instance_made_again_in_its_place(
        local_fleet):
    """The destroy failed and was rolled back: the agent made the idle instance again at its
    place, and the GPU gave it a new uuid. The same command again (the admin's retry) was
    refused, "no MIG instance MIG-old", naming the new one at that very place: it now plans
    the destroy of the instance made again in place of the one asked, saying so, and the
    agent's own retry of the call (the old uuid) does the same. An instance there that is
    not one made again in its place is no such retry: refused, saying why."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [SMALL])
    session = f.fleet.session("gpu-a")
    made = f.fractui("mig", "gpu-a", "0", "3g.40gb", "--yes")
    assert made.returncode == 0, said(made)
    old = re.search(r"(MIG-\S+)", made.stdout).group(1)
    (inst,) = gpu_record(f, 0)["instances"]
    session.call("sim.fault", {"function": "nvmlGpuInstanceDestroy",
                               "error": "NVML_ERROR_UNKNOWN", "after": True})
    done = f.fractui("mig", "gpu-a", "0", "--destroy", old, "--yes")
    assert done.returncode == 1 and "as it was" in done.stderr, said(done)
    (again,) = gpu_record(f, 0)["instances"]
    new = again["uuid"]
    assert (again["profile"], again["start"], again["remade_of"]) == (
        inst["profile"], inst["start"], [old]) and new != old, again

    done = f.fractui("mig", "gpu-a", "0", "--destroy", old, "--yes")
    assert done.returncode == 0, said(done)
    where = "3g.40gb at slot %d (%s, made again in place of %s by a rolled-back change)" % (
        inst["start"], new, old)
    assert done.stdout == "destroy idle %s on gpu-a gpu 0; the GPU is then empty\n" \
                          "destroyed %s on gpu-a gpu 0\n" % (where, where), said(done)
    assert gpu_record(f, 0)["instances"] == []
    entry = [e for e in f.store.audit_log() if e.action == "mig"][-1]
    assert (entry.why, entry.detail["instance"]) == (done.stdout.splitlines()[-1], new)

    # the agent's own retry of the call: the old uuid names the one made in its place
    made = session.call("mig.apply", {"gpu": 0, "profile": "3g.40gb"})["instance"]
    session.call("sim.fault", {"function": "nvmlGpuInstanceDestroy",
                               "error": "NVML_ERROR_UNKNOWN", "after": True})
    with pytest.raises(Exception, match="as it was"):
        session.call("mig.destroy", {"gpu": 0, "instance": made["uuid"]})
    answer = session.call("mig.destroy", {"gpu": 0, "instance": made["uuid"]})
    assert answer["destroyed"]["remade_of"] == [made["uuid"]]
    assert gpu_record(f, 0)["instances"] == []

    # the same kind of instance there, made anew by hand, is no retry's: refused, saying why
    made = session.call("mig.apply", {"gpu": 0, "profile": "3g.40gb"})["instance"]
    session.call("mig.destroy", {"gpu": 0, "instance": made["uuid"]})
    other = session.call("mig.apply", {"gpu": 0, "profile": "3g.40gb"})["instance"]
    done = f.fractui("mig", "gpu-a", "0", "--destroy", made["uuid"], "--yes")
    assert done.returncode == 1, said(done)
    assert done.stderr == (
        "fractui: not changed: gpu-a gpu 0 has no MIG instance %s, nor one a rolled-back "
        "change made again in its place; it has 3g.40gb at slot %d (%s)\n" % (
            made["uuid"], other["start"], other["uuid"])), said(done)


def test_a_mode_change_by_hand_sees_a_move_from_another_host(local_fleet):
    """A job moving from gpu-a to gpu-b holds its target on gpu-b: ``fractui mig gpu-b``
    reads every job of the store, not only those whose own slot is on gpu-b, so the mode
    change is refused naming the move (handed gpu-b's jobs alone, it turned MIG off under
    the slot the move holds)."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig", "gpu-b": "1xA100-80GB:mig"}, [SMALL])
    job = f.submit("small")
    f.until(lambda: f.states()[job.id] == "running")
    source = f.store.get(job.id).slot.host
    target = "gpu-b" if source == "gpu-a" else "gpu-a"
    moved = f.fractui("move", str(job.id), target, "0", "--profile", "1g.10gb", "--yes")
    assert moved.returncode == 0, said(moved)
    assert f.store.get(job.id).state == "stopping"  # no pass run since: it holds the target
    done = f.fractui("mig", target, "0", "--mode", "off", "--yes")
    assert done.returncode == 1, said(done)
    assert "%s gpu 0 is in use by job %d (moving here): MIG mode changes only on an idle " \
           "GPU" % (target, job.id) in done.stderr, said(done)
    assert gpu_record(f, 0, target)["mig_mode"] is True
