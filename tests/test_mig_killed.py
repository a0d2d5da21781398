"""A MIG change cut short by the agent's death: the daemon killed (kill -9) while it is between
the NVML steps of a change — after destroying idle instances and before making the new one,
after making a GPU instance and before its compute instance. The next daemon finds the change in
its journal and rolls it back before it serves anyone, so the GPU holds what it held before:
never the half (idle instances gone with nothing in their place, or a GPU instance without its
compute instance that no job can use and that holds its slots), and the change, or a job's
launch by the same key, asked again is made whole. A real daemon, the simulated GPU read straight
from its host; the steps held inside NVML by the simulator's gates (``sim.hold``)."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

import pytest

from remote_agent.gpu.models import mig_geometry
from remote_agent.mig.apply import Change
from remote_agent.mig.journal import MigJournal
from remote_agent.mig.layout import Instance, Layout
from remote_agent.rpc import jsonrpc as rpc
from tests.conftest import AgentError
from tests.test_job_supervision import daemon_pid_of, fill, wait_until
from tests.test_jobs import simload

A100 = "1xA100-80GB:mig"


def placed(agent, gpu: int = 0) -> Counter:
    """What the GPU holds, as (profile, start, has its compute instance)."""
    return Counter((i["profile"], i["start"], i["uuid"] is not None)
                   for i in agent.call("inventory")["gpus"][gpu]["instances"])


def kill_inside(agent, state: str, tmp_path, function: str, method: str, after: bool = False,
                skip: int = 0, **params) -> None:
    """Send ``method`` and kill -9 the daemon while the change is held at ``function`` (its
    call past the first ``skip``; once that call is made, with ``after``)."""
    gate = tmp_path / ("gate-" + function)
    agent.call("sim.hold", function=function, gate=str(gate), after=after, skip=skip)
    agent.send(method, **params)
    wait_until(lambda: os.path.exists(str(gate) + ".held"), "the change to reach %s" % function)
    os.kill(daemon_pid_of(state), signal.SIGKILL)
    agent.proc.wait(timeout=10)


def daemon_log(state: str) -> str:
    with open(os.path.join(state, "daemon.log")) as f:
        return f.read()


# each step of "7g.80gb over two idle 1g.10gb instances": what the GPU holds when it is cut
STEPS = {
    "nvmlComputeInstanceDestroy": "nothing changed yet",
    "nvmlGpuInstanceDestroy": "an idle instance without its compute instance",
    "nvmlDeviceCreateGpuInstanceWithPlacement": "both idle instances destroyed, nothing made",
    "nvmlGpuInstanceCreateComputeInstance": "a 7g.80gb GPU instance without compute instance",
}


@pytest.mark.parametrize("function", sorted(STEPS))
def test_a_mig_apply_cut_short_at_any_step_is_rolled_back_by_the_next_daemon(
        start_agent, tmp_path, function):
    state = str(tmp_path / "host")
    agent = start_agent(A100, state)
    agent.call("mig.apply", gpu=0, profile="1g.10gb", start=0)
    agent.call("mig.apply", gpu=0, profile="1g.10gb", start=1)
    before = placed(agent)
    kill_inside(agent, state, tmp_path, function, "mig.apply", gpu=0, profile="7g.80gb",
                start=0, destroy_idle=True)
    later = start_agent(None, state)
    assert placed(later) == before, STEPS[function]
    hello = later.call("hello")
    assert not [p for p in hello.get("problems", []) if "degraded" in p]
    assert os.listdir(os.path.join(state, "mig-changes")) == []  # settled: nothing left
    if function != "nvmlComputeInstanceDestroy":
        assert "was cut short by the agent's stop: " in daemon_log(state)
    # the change asked again is made whole
    later.call("mig.apply", gpu=0, profile="7g.80gb", start=0, destroy_idle=True)
    assert placed(later) == Counter({("7g.80gb", 0, True): 1})


def test_a_launch_cut_between_its_gpu_instance_and_its_compute_instance_leaves_nothing(
        start_agent, tmp_path):
    """The scheduler's launch (destroy_idle) over an idle instance, cut after its GPU instance
    was made: before, the next daemon ended the job never started and left the GPU instance
    without its compute instance; the same key was then refused for no room ("already exists
    and can be used as it is") and the slots stayed taken."""
    state = str(tmp_path / "host")
    agent = start_agent(A100, state)
    agent.call("mig.apply", gpu=0, profile="1g.10gb", start=6)
    before = placed(agent)
    params = dict(key="k-cut", gpu=0, mig={"profile": "3g.40gb", "start": 4,
                                           "destroy_idle": True},
                  argv=simload("--mem-mib", "100", "--seconds", "60"))
    kill_inside(agent, state, tmp_path, "nvmlGpuInstanceCreateComputeInstance", "job.launch",
                **params)
    later = start_agent(None, state)
    job = wait_until(lambda: next((j for j in later.call("job.list")["jobs"]
                                   if j["state"] != "starting"), None), "the launch resolved")
    assert (job["key"], job["state"], job["pid"]) == ("k-cut", "exited", None)
    assert job["reason"].startswith("never started")
    assert placed(later) == before  # the idle instance back, no half-made one
    # the same key runs it now: one job, one process, one instance
    first = later.call("job.launch", **params)
    again = later.call("job.launch", **params)
    assert (first["id"], first["state"]) == (job["id"], "running")
    assert again["pid"] == first["pid"]
    assert placed(later) == Counter({("3g.40gb", 4, True): 1})


def test_another_admins_change_after_the_restart_meets_the_rolled_back_gpu(start_agent,
                                                                         tmp_path):
    """Admin A's change cut short; admin B, on another connection, asks for a change as soon
    as the agent answers again: B's plan is made on the GPU as it was before A's change, never
    on its half (no client is served before the roll back)."""
    state = str(tmp_path / "host")
    agent = start_agent(A100, state)
    agent.call("mig.apply", gpu=0, profile="3g.40gb", start=0)
    kill_inside(agent, state, tmp_path, "nvmlGpuInstanceCreateComputeInstance", "mig.apply",
                gpu=0, profile="3g.40gb", start=4)
    admin_b = start_agent(None, state)
    made = admin_b.call("mig.apply", gpu=0, profile="2g.20gb", start=4)
    assert made["destroy"] == [] and made["instance"]["uuid"].startswith("MIG-")
    assert placed(admin_b) == Counter({("3g.40gb", 0, True): 1, ("2g.20gb", 4, True): 1})


def test_a_change_carried_out_in_full_before_the_death_stands(start_agent, tmp_path):
    """The daemon killed after the last step of a change and before it removed the change
    from its journal (put back here as the daemon had written it): the change stands, and the
    job that holds what it made runs on."""
    state = str(tmp_path / "host")
    agent = start_agent(A100, state)
    job = agent.call("job.launch", key="k-full", gpu=0, mig={"profile": "3g.40gb", "start": 4},
                     argv=simload("--mem-mib", "100", "--seconds", "60"))
    inventory = agent.call("inventory")["gpus"][0]
    os.kill(daemon_pid_of(state), signal.SIGKILL)
    agent.proc.wait(timeout=10)
    geo = mig_geometry(inventory["name"])
    made = inventory["instances"][0]
    profile = geo.profile("3g.40gb")
    MigJournal(os.path.join(state, "mig-changes")).begin(
        0, inventory["uuid"], Layout(geo, ()), Change("create 3g.40gb at slot 4",
                                                      create=profile, start=4))
    later = start_agent(None, state)
    assert placed(later) == Counter({("3g.40gb", 4, True): 1})
    assert later.call("job.get", job=job["id"])["state"] == "running"
    assert later.call("inventory")["gpus"][0]["instances"][0]["uuid"] == made["uuid"]
    assert os.listdir(os.path.join(state, "mig-changes")) == []


def test_a_change_written_in_another_boot_is_dropped_not_rolled_back(start_agent, tmp_path):
    """MIG instances do not outlive a reboot: an entry of another boot is dropped, the GPU
    left as it reads."""
    state = str(tmp_path / "host")
    agent = start_agent(A100, state)
    agent.call("mig.apply", gpu=0, profile="1g.10gb", start=0)
    inventory = agent.call("inventory")["gpus"][0]
    os.kill(daemon_pid_of(state), signal.SIGKILL)
    agent.proc.wait(timeout=10)
    geo = mig_geometry(inventory["name"])
    made = inventory["instances"][0]
    gone = Instance(gi_id=made["gi_id"], profile="1g.10gb", start=0, size=1, compute_slices=1,
                    uuid=made["uuid"])
    path = MigJournal(os.path.join(state, "mig-changes")).begin(
        0, inventory["uuid"], Layout(geo, (gone,)), Change("destroying idle 1g.10gb",
                                                           destroy=(gone,)))
    with open(path) as f:
        record = json.load(f)
    record["boot"] = "another-boot"
    with open(path, "w") as f:
        json.dump(record, f)
    later = start_agent(None, state)
    assert placed(later) == Counter({("1g.10gb", 0, True): 1})
    assert "before the host rebooted" in daemon_log(state)
    assert os.listdir(os.path.join(state, "mig-changes")) == []


def test_a_change_that_cannot_be_journaled_on_a_full_state_disk_is_not_made(small_fs,
                                                                            start_agent):
    """The state dir's filesystem full (a real 8 MiB tmpfs, filled to the last byte): the
    change is refused as the host's failure, naming why, with the GPU as it was — a change
    that could not be rolled back after a crash is never begun. With room, it is made."""
    state = str(small_fs / "state")
    agent = start_agent(A100, state)
    agent.call("mig.apply", gpu=0, profile="1g.10gb", start=0)
    before = placed(agent)
    filler = small_fs / "filler"
    fill(filler)
    for method, params in (("mig.apply", dict(gpu=0, profile="7g.80gb", start=0,
                                              destroy_idle=True)),
                           ("job.launch", dict(key="k-full", gpu=0, mig={
                               "profile": "3g.40gb", "start": 4},
                               argv=simload("--seconds", "60")))):
        with pytest.raises(AgentError) as err:
            agent.call(method, **params)
        assert (err.value.code, err.value.data["class"]) == (rpc.HOST_FAILED, rpc.HOST), method
        assert placed(agent) == before, method
    assert "cannot be recorded in the state dir first" in str(
        pytest.raises(AgentError, agent.call, "mig.destroy", gpu=0, gi_id=1).value.message)
    assert placed(agent) == before
    filler.unlink()
    agent.call("mig.apply", gpu=0, profile="7g.80gb", start=0, destroy_idle=True)
    assert placed(agent) == Counter({("7g.80gb", 0, True): 1})


def mode(agent, gpu: int = 0) -> tuple:
    """The GPU's MIG mode: (current, pending)."""
    record = agent.call("inventory")["gpus"][gpu]
    return record["mig_mode"], record["mig_pending"]


# A MIG mode change cut short, per GPU model and step: (host, MIG on before, the GPU's change
# waits for a reset, turning it on, the NVML call it is cut at, once made, what the next daemon
# leaves: the mode asked "made", or "before")
MODE_CUTS = {
    "Hopper: before the mode is set": (
        "1xH100", False, False, True, "nvmlDeviceSetMigMode", False, "before"),
    "Hopper: the mode set, at once": (
        "1xH100", False, False, True, "nvmlDeviceSetMigMode", True, "made"),
    "Ampere: the mode set, the driver's own reset made": (
        "1xA100-80GB:mig", True, False, False, "nvmlDeviceSetMigMode", True, "made"),
    "waits for a reset: the mode set, pending": (
        "1xH100", False, True, True, "nvmlDeviceSetMigMode", True, "before"),
    "waits for a reset: NVML shut down for the reset": (
        "1xH100", False, True, True, "nvmlShutdown", False, "before"),
    "waits for a reset: the reset made, NVML not started again": (
        "1xA100-80GB", False, True, True, "nvmlInitWithFlags", False, "made"),
}


@pytest.mark.parametrize("case", sorted(MODE_CUTS))
def test_a_mig_mode_change_cut_short_leaves_no_mode_pending_and_is_made_when_asked_again(
        start_agent, tmp_path, case):
    """Killed anywhere in a mode change (with ``reset``), the next daemon leaves the GPU in
    the mode it had or in the mode asked, never with a mode pending that the next reset,
    whoever makes it, would bring in unasked; the change asked again is answered as made."""
    host, was_on, waits, enabled, function, after, left = MODE_CUTS[case]
    state = str(tmp_path / "host")
    agent = start_agent(host, state)
    if waits:
        agent.call("sim.mode_waits_for_reset", gpu=0, waits=True)
    before = mode(agent)
    assert before == (was_on, was_on)
    kill_inside(agent, state, tmp_path, function, "mig.set_mode", after=after, gpu=0,
                enabled=enabled, reset=True)
    later = start_agent(None, state)
    assert mode(later) == ((enabled, enabled) if left == "made" else before)
    assert os.listdir(os.path.join(state, "mig-changes")) == []
    assert not [p for p in later.call("hello").get("problems", []) if "degraded" in p]
    said = daemon_log(state)
    if left == "made":
        assert "was carried out before the agent stopped" in said
    elif function == "nvmlDeviceSetMigMode" and not after:
        assert "was cut short before it changed anything" in said
    else:
        assert "was cut short by the agent's stop: " in said  # the pending mode asked back
    again = later.call("mig.set_mode", gpu=0, enabled=enabled, reset=True)
    assert (again["mig_mode"], again["mig_pending"], again["changed"]) == (
        enabled, enabled, left != "made")
    assert mode(later) == (enabled, enabled)


def test_a_mode_change_that_cannot_be_journaled_on_a_full_state_disk_is_not_made(small_fs,
                                                                                start_agent):
    """The state dir's filesystem full (a real 8 MiB tmpfs): a mode change is refused as the
    host's failure, naming why, with the mode as it was; with room, the change is made."""
    state = str(small_fs / "state")
    agent = start_agent("1xH100", state)
    assert mode(agent) == (False, False)
    filler = small_fs / "filler"
    fill(filler)
    with pytest.raises(AgentError) as err:
        agent.call("mig.set_mode", gpu=0, enabled=True, reset=True)
    assert (err.value.code, err.value.data["class"]) == (rpc.HOST_FAILED, rpc.HOST)
    assert "cannot be recorded in the state dir first" in err.value.message
    assert mode(agent) == (False, False)
    filler.unlink()
    assert agent.call("mig.set_mode", gpu=0, enabled=True, reset=True)["changed"] is True
    assert mode(agent) == (True, True)


def test_a_pending_mode_not_asked_back_leaves_the_gpu_degraded_until_it_reads_as_before(
        tmp_path):
    """A mode change cut short with its mode left pending, and NVML refusing to ask it back
    however often asked: the GPU is degraded, saying what it reads, until it reads as before
    (the agent's parts in this process, the entry as a killed daemon leaves it)."""
    from remote_agent.gpu import fake_pynvml as nv
    from tests.test_mig_faults import agent_with, inventory_gpu

    agent, methods = agent_with("1xH100")
    nv.sim_mode_waits_for_reset(0)
    asked = methods.call("mig.set_mode", {"gpu": 0, "enabled": True})
    assert (asked["mig_mode"], asked["mig_pending"]) == (False, True)
    agent.journal = MigJournal(str(tmp_path / "mig-changes"))
    agent.journal.begin_mode(0, inventory_gpu(agent)["uuid"], "turning MIG mode on",
                             (False, False), True)
    nv.sim_inject_fault("nvmlDeviceSetMigMode", nv.NVML_ERROR_UNKNOWN, count=100)
    try:
        agent.roll_back_cut_changes()
    finally:
        nv.sim_clear_faults()
    (problem,) = methods.call("hello", {})["problems"]
    assert problem.startswith("GPU 0 is degraded: turning MIG mode on failed: ") and \
        "it now holds MIG mode off (on after the next reset)" in problem, problem
    assert os.listdir(str(tmp_path / "mig-changes")) == []
    methods.call("mig.set_mode", {"gpu": 0, "enabled": False})  # asked back by hand
    assert (inventory_gpu(agent)["mig_mode"], inventory_gpu(agent)["mig_pending"]) == (
        False, False)
    assert methods.call("hello", {})["problems"] == []
