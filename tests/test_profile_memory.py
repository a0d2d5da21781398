"""A MIG slice chosen by memory holds what its job asked for: each agent reports its GPUs'
profile memory as NVML states it (``mig_profile_mib``, MIG on or off: a real H200 with MIG off
answered the profile calls), and the placer books slices by it, not by the model table's
estimate (the GPU's memory in proportion to its memory slices, above NVML's figure)."""

from __future__ import annotations

import logging
import time

import pytest

from remote_agent.gpu import fake_pynvml as nv
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import RpcError
from remote_agent import service
from remote_agent.service import Agent

from fractui.sched import Placer, Request
from fractui.sched.fleetview import HostView, build_hosts, facts, geometry, gpu_geometry, \
    idle_view, signature

A100 = "NVIDIA A100-SXM4-80GB"
# what a GPU could report where NVML's figures are below the table's 1/8 per memory slice
REPORTED = {"1g.10gb": 9728, "1g.10gb+me": 9728, "1g.20gb": 19968, "2g.20gb": 19968,
            "3g.40gb": 40192, "4g.40gb": 40192, "7g.80gb": 80896}


def test_the_agent_reports_each_mig_capable_gpus_profile_memory_in_either_mode(caplog,
                                                                              monkeypatch):
    nv.sim_open(None, "1xH200,1xA100-80GB:mig,1xL4")
    agent = Agent(nv, "sim", nv)
    try:
        gpus = agent.take_snapshot()["gpus"]
        assert [g["mig_mode"] for g in gpus] == [False, True, False]
        assert gpus[0]["mig_profile_mib"]["1g.18gb"] == 16384  # measured on a real H200
        assert gpus[1]["mig_profile_mib"]["1g.10gb"] == 81920 // 8  # the table's estimate
        assert "mig_profile_mib" not in gpus[2]  # no MIG
        assert agent.inventory(None)["gpus"][0]["mig_profile_mib"] == gpus[0]["mig_profile_mib"]
        # NVML will not say: the record goes without it, and the log says so once
        agent.backend._geometry.clear()
        nv.sim_inject_fault("nvmlDeviceGetGpuInstanceProfileInfo", nv.NVML_ERROR_UNKNOWN,
                            count=2)
        with caplog.at_level(logging.WARNING):
            assert "mig_profile_mib" not in agent.take_snapshot()["gpus"][0]
            # not asked again each snapshot while the GPU's mode stays as it was
            nv.sim_start_trace()
            assert "mig_profile_mib" not in agent.take_snapshot()["gpus"][0]
            assert not [c for c in nv.sim_trace() if "ProfileInfo" in c]
            # asked again after a while: a second failure, not said again
            now = time.monotonic()
            monkeypatch.setattr(time, "monotonic", lambda: now + service.PROFILES_RETRY_S)
            nv.sim_inject_fault("nvmlDeviceGetGpuInstanceProfileInfo", nv.NVML_ERROR_UNKNOWN)
            assert "mig_profile_mib" not in agent.take_snapshot()["gpus"][0]
        assert caplog.text.count("GPU 0: its MIG profiles cannot be read") == 1
        monkeypatch.setattr(time, "monotonic", lambda: now + 2 * service.PROFILES_RETRY_S)
        assert agent.take_snapshot()["gpus"][0]["mig_profile_mib"]["1g.18gb"] == 16384
    finally:
        nv.sim_clear_faults()
        agent.backend.close()


def test_profiles_nvml_would_not_give_are_asked_again_once_the_mig_mode_changes():
    nv.sim_open(None, "1xH200")
    agent = Agent(nv, "sim", nv)
    try:
        # a driver that gives no profiles with MIG off
        nv.sim_inject_fault("nvmlDeviceGetGpuInstanceProfileInfo", nv.NVML_ERROR_NOT_SUPPORTED,
                            count=1000)
        assert "mig_profile_mib" not in agent.take_snapshot()["gpus"][0]
        nv.sim_clear_faults()
        assert "mig_profile_mib" not in agent.take_snapshot()["gpus"][0]  # not asked yet
        nv.nvmlInit()
        nv.nvmlDeviceSetMigMode(nv.nvmlDeviceGetHandleByIndex(0), nv.NVML_DEVICE_MIG_ENABLE)
        nv.nvmlShutdown()
        gpu = agent.take_snapshot()["gpus"][0]
        assert gpu["mig_mode"] and gpu["mig_profile_mib"]["7g.141gb"] == 143360
    finally:
        nv.sim_clear_faults()
        agent.backend.close()


def rec(index: int, mig: bool, **more) -> dict:
    return dict({"index": index, "name": A100, "memory_mib": 81920, "mig_capable": True,
                 "mig_mode": mig, "mig_pending": mig, "instances": [], "processes": []},
                **more)


def test_a_slice_chosen_by_memory_is_one_whose_reported_memory_holds_it():
    for mig in (True, False):  # a GPU in MIG mode, and an idle one the placer may turn
        for reported, profile in ((None, "1g.10gb"), (REPORTED, "1g.20gb")):
            gpus = [rec(0, mig, **({"mig_profile_mib": reported} if reported else {}))]
            hello = {"cpus": 8, "memory_mib": 64000, "gpus": gpus,
                     "features": ["mig.set_mode.reset", "mig.set_mode.destroy_idle"]}
            host = build_hosts([HostView("gpu-a", "online", hello, {"gpus": gpus})], [],
                               "s1")[0]
            placed = Placer([host]).schedule(Request("j", memory_gib=10, isolation="mig"))
            assert placed is not None and placed.plans[0].profile.name == profile, (mig, reported)


def test_the_reported_profile_memory_is_kept_with_the_hosts_facts():
    """What a host could hold when its agent is not read (the submit check, a placement by
    hand) is judged by the profile memory its agent last reported."""
    gpus = [rec(0, True, mig_profile_mib=REPORTED)]
    view = HostView("gpu-a", "online", {"cpus": 8, "memory_mib": 64000, "gpus": gpus},
                    {"gpus": gpus})
    kept = facts(view)
    assert kept["gpus"][0]["mig_profile_mib"] == REPORTED
    host = build_hosts([idle_view("gpu-a", kept)], [], "s1")[0]
    assert host.gpus[0].layout.geometry.profile("1g.10gb").memory_mib == 9728
    # a report that changes what a pass reads changes the host's signature
    bare = [rec(0, True)]
    assert signature(view) != signature(HostView("gpu-a", "online", view.hello,
                                                 {"gpus": bare}))


def test_a_reported_profile_memory_that_cannot_be_true_is_left_to_the_table():
    """A broken or hostile agent cannot make a slice look larger than its GPU, or a record
    that is not one stop the scheduler: only a whole number of MiB of a profile of the model,
    above 0 and within the GPU, is taken; the rest is the table's, and so is what is kept."""
    table = geometry(A100)
    odd = {"1g.10gb": "9728", "1g.20gb": True, "2g.20gb": -1, "3g.40gb": 40192.5, 7: 1,
           "9g.90gb": 90000, "7g.80gb": 10 ** 7, "4g.40gb": 40192}
    gpu = rec(0, True, mig_profile_mib=odd)
    geo = gpu_geometry(gpu)
    assert [p.memory_mib for p in geo.profiles] == [
        40192 if p.name == "4g.40gb" else p.memory_mib for p in table.profiles]
    view = HostView("gpu-a", "online", {"cpus": 8, "memory_mib": 64000, "gpus": [gpu]},
                    {"gpus": [gpu]})
    assert facts(view)["gpus"][0]["mig_profile_mib"] == {"4g.40gb": 40192}
    assert "mig_profile_mib" not in facts(HostView("gpu-a", "online", view.hello, {"gpus": [
        rec(0, True, mig_profile_mib={"1g.10gb": 0})]}))["gpus"][0]
    assert gpu_geometry(rec(0, True, mig_profile_mib=["1g.10gb"])) == table
    assert gpu_geometry(rec(0, True, memory_mib="81920", mig_profile_mib=REPORTED)) == table
    assert gpu_geometry(rec(0, True, name="NVIDIA L4", mig_profile_mib=REPORTED)) is None
    for name in (["x"], 123, None):  # not a name: no geometry, and a signature as before
        assert gpu_geometry(rec(0, False, name=name)) is None
        signature(HostView("gpu-a", "online", view.hello, {"gpus": [rec(0, False, name=name)]}))


def test_a_job_launch_never_creates_an_instance_on_a_gpu_whose_mig_mode_is_off():
    """The launch checks the mode under the GPU's MIG lock: a change may have come since its
    own check, and NVML reads the profiles of a GPU with MIG off (its layout reads empty)."""
    nv.sim_open(None, "1xH200")
    agent = Agent(nv, "sim", nv)
    try:
        nv.sim_start_trace()
        with pytest.raises(RpcError) as refused:
            agent.create_for_job(0, "1g.18gb", 0, False, lambda uuid: False)
        assert refused.value.code == rpc.NOT_MIG
        assert refused.value.message == "GPU 0 (NVIDIA H200) has MIG mode off"
        assert not [call for call in nv.sim_trace() if "Create" in call]  # none was tried
    finally:
        agent.backend.close()
