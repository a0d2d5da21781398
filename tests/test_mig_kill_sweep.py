"""The agent killed (kill -9) at each NVML call of each kind of MIG change — before the call,
and just after it took effect — then a new agent started on the same state dir.

test_mig_killed proves the first call of each function; this sweep holds the change at every
call that changes the GPU (``sim.hold``'s ``skip`` picks the second destroy of two, say). After
each kill the next daemon leaves the GPU exactly as before the change or exactly as planned;
a job running on another instance runs on, on the same instance; the journal holds nothing;
no GPU is said degraded; the change asked again ends as planned, and a third time changes
nothing. One cut per kind runs with the quick suite; every cut is the slow sweep.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import pytest

from remote_agent.gpu import fake_pynvml as nv
from remote_agent.rpc.jsonrpc import RpcError
from remote_agent.service import Agent
from tests.test_job_supervision import wait_until
from tests.test_jobs import simload
from tests.test_mig_faults import MUTATING, served
from tests.test_mig_killed import kill_inside


@dataclass(frozen=True)
class Kind:
    """A kind of change: the GPU, the instances made first (the ``job`` one held by a running
    job), the change, and the GPU it plans."""

    name: str
    spec: str
    setup: Tuple[Tuple[str, int], ...]
    job: Optional[int]
    method: str
    params: Dict[str, Any]
    planned: Tuple[Tuple[bool, bool], Counter]  # as ``held`` reads it
    gone: Optional[Tuple[str, int]] = None  # the instance mig.destroy names, by placement

    def __str__(self) -> str:
        return self.name


ON = (True, True)

KINDS = [
    Kind("create beside a job's instance", "1xA100-80GB:mig", (("3g.40gb", 0),), 0,
         "mig.apply", dict(gpu=0, profile="2g.20gb", start=4),
         (ON, Counter({("3g.40gb", 0, True): 1, ("2g.20gb", 4, True): 1}))),
    Kind("a plan destroying two idle instances beside a job's", "1xH100:mig",
         (("1g.10gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)), 0,
         "mig.apply", dict(gpu=0, profile="3g.40gb", start=4, destroy_idle=True),
         (ON, Counter({("1g.10gb", 0, True): 1, ("3g.40gb", 4, True): 1}))),
    Kind("destroy an idle instance beside a job's", "1xA100-40GB:mig",
         (("2g.10gb", 0), ("1g.5gb", 6)), 1, "mig.destroy", dict(gpu=0),
         (ON, Counter({("1g.5gb", 6, True): 1})), gone=("2g.10gb", 0)),
    Kind("MIG mode off, its idle instances destroyed", "1xA100-80GB:mig",
         (("1g.10gb", 0), ("2g.20gb", 4)), None,
         "mig.set_mode", dict(gpu=0, enabled=False, destroy_idle=True),
         ((False, False), Counter())),
]

# an NVML error: (function, its calls before, code, whether the call first took effect)
Fault = Optional[Tuple[str, int, int, bool]]
Cut = Tuple[str, int, bool]  # (function, its calls before, after it took effect)
_CUTS: Dict[Tuple[str, Fault], List[Cut]] = {}


def cuts(kind: Kind, fault: Fault = None) -> List[Cut]:
    """Where the change can be cut: each call that changes the GPU, as the change makes them
    in process (with ``fault``: those after it, which undo the change)."""
    if (kind.name, fault) not in _CUTS:
        nv.sim_open(None, kind.spec)
        methods = served(Agent(nv, "sim", sim=nv))
        for profile, start in kind.setup:
            methods.call("mig.apply", {"gpu": 0, "profile": profile, "start": start})
        params = dict(kind.params)
        if kind.gone is not None:
            params["gi_id"] = gi_of(methods.call("inventory", {})["gpus"][0], kind.gone)
        nv.sim_start_trace()
        first = 0
        if fault is not None:
            function, skip, code, after = fault
            nv.sim_inject_fault(function, code, skip=skip, after=after)
            with pytest.raises(RpcError):
                methods.call(kind.method, params)
            nv.sim_clear_faults()
            calls = nv.sim_trace()
            first = [k for k, c in enumerate(calls) if c == function][skip] + 1
        else:
            methods.call(kind.method, params)
            calls = nv.sim_trace()
        _CUTS[(kind.name, fault)] = [(c, calls[:k].count(c), after)
                                     for k, c in enumerate(calls) if k >= first
                                     and c in MUTATING for after in (False, True)]
    return _CUTS[(kind.name, fault)]


def held(agent) -> Tuple[Tuple[bool, bool], Counter]:
    """The GPU's MIG mode (current, pending) and what it holds: (profile, start, has its
    compute instance) of each instance."""
    gpu = agent.call("inventory")["gpus"][0]
    return (gpu["mig_mode"], gpu["mig_pending"]), Counter(
        (i["profile"], i["start"], i["uuid"] is not None) for i in gpu.get("instances", []))


def gi_of(gpu: Dict[str, Any], where: Tuple[str, int]) -> int:
    return next(i["gi_id"] for i in gpu["instances"] if (i["profile"], i["start"]) == where)


def ask(agent, kind: Kind) -> Any:
    params = dict(kind.params)
    if kind.gone is not None:
        params["gi_id"] = gi_of(agent.call("inventory")["gpus"][0], kind.gone)
    return agent.call(kind.method, **params)


def cut(start_agent, tmp_path, kind: Kind, function: str, skip: int, after: bool,
        fault: Fault = None) -> None:
    """Kill the agent at the call ``skip`` + 1 of ``function`` (before, or once made) of the
    change (met by ``fault`` first, when given: the cut is in its undoing), start another,
    and check what it leaves."""
    tmp_path.mkdir(exist_ok=True)
    state = str(tmp_path / "host")
    agent = start_agent(kind.spec, state)
    job = None
    for n, (profile, start) in enumerate(kind.setup):
        if n == kind.job:
            job = agent.call("job.launch", key="k-other", gpu=0,
                             mig={"profile": profile, "start": start},
                             argv=simload("--mem-mib", "100", "--seconds", "120"))
        else:
            agent.call("mig.apply", gpu=0, profile=profile, start=start)
    its = job_instance(agent, job) if job is not None else None
    before = held(agent)
    params = dict(kind.params)
    if kind.gone is not None:
        params["gi_id"] = gi_of(agent.call("inventory")["gpus"][0], kind.gone)
    if fault is not None:
        agent.call("sim.fault", function=fault[0], skip=fault[1], error=fault[2],
                   after=fault[3])
    kill_inside(agent, state, tmp_path, function, kind.method, after=after, skip=skip, **params)
    later = start_agent(None, state)
    now = held(later)
    assert now in (before, kind.planned), "between: %s (before %s, planned %s)" % (
        now, before, kind.planned)
    assert os.listdir(os.path.join(state, "mig-changes")) == []
    assert not [p for p in later.call("hello").get("problems", []) if "degraded" in p]
    if job is not None:
        again = later.call("job.get", job=job["id"])
        assert (again["state"], again["pid"]) == ("running", job["pid"])
        assert job_instance(later, job) == its
    # asked again: as planned; a third time: nothing more
    if now != kind.planned:
        ask(later, kind)
    assert held(later) == kind.planned
    if kind.method == "mig.set_mode":
        assert ask(later, kind)["changed"] is False
    elif kind.gone is not None:
        with pytest.raises(StopIteration):  # nothing left there to name
            ask(later, kind)
    assert held(later) == kind.planned
    if job is not None:
        assert later.call("job.get", job=job["id"])["state"] == "running"


def job_instance(agent, job: Dict[str, Any]) -> str:
    """The MIG uuid the job runs on, once its process shows there."""
    uuid = job["instance"]
    wait_until(lambda: any(job["pid"] in i["pids"] and i["uuid"] == uuid for i in agent.call(
        "inventory")["gpus"][0]["instances"]), "the job's process on its instance")
    return uuid


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_killed_midway_through_each_change_the_next_agent_leaves_it_before_or_made(
        start_agent, tmp_path, kind):
    """The cut in the middle of each change's calls (a GPU that holds the half)."""
    function, skip, after = cuts(kind)[len(cuts(kind)) // 2]
    cut(start_agent, tmp_path, kind, function, skip, after)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_killed_at_every_call_of_every_change(start_agent, tmp_path, kind):
    for n, (function, skip, after) in enumerate(cuts(kind)):
        cut(start_agent, tmp_path / ("cut%d" % n), kind, function, skip, after)


# a change whose last step fails, cut while it is being undone
UNDONE = [(KINDS[1], ("nvmlGpuInstanceCreateComputeInstance", 0, nv.NVML_ERROR_UNKNOWN, True)),
          (KINDS[2], ("nvmlGpuInstanceDestroy", 0, nv.NVML_ERROR_IN_USE, False)),
          (KINDS[3], ("nvmlDeviceSetMigMode", 0, nv.NVML_ERROR_TIMEOUT, True))]


@pytest.mark.parametrize("kind, fault", UNDONE, ids=lambda v: str(v) if isinstance(v, Kind)
                         else v[0])
def test_killed_while_undoing_a_failed_step_the_next_agent_finishes_the_undo(
        start_agent, tmp_path, kind, fault):
    """The first cut inside the undo of each."""
    cut(start_agent, tmp_path, kind, *cuts(kind, fault)[0], fault=fault)


@pytest.mark.slow
@pytest.mark.parametrize("kind, fault", UNDONE, ids=lambda v: str(v) if isinstance(v, Kind)
                         else v[0])
def test_killed_at_every_call_of_the_undo_of_a_failed_step(start_agent, tmp_path, kind, fault):
    for n, (function, skip, after) in enumerate(cuts(kind, fault)):
        cut(start_agent, tmp_path / ("cut%d" % n), kind, function, skip, after, fault)


def test_the_fakes_hold_lets_the_first_calls_through_and_stops_the_next(tmp_path):
    """``sim.hold``'s ``skip``, which the sweep's cuts stand on: the first ``skip`` calls go
    through unheld, the next one waits at the gate."""
    nv.sim_open(None, "1xH100")
    nv.nvmlInit()
    gate = str(tmp_path / "gate")
    try:
        nv.sim_hold("nvmlDeviceGetCount", gate, skip=1)
        first = threading.Thread(target=nv.nvmlDeviceGetCount, daemon=True)
        first.start()
        first.join(timeout=10)
        assert not first.is_alive() and not os.path.exists(gate + ".held")
        second = threading.Thread(target=nv.nvmlDeviceGetCount, daemon=True)
        second.start()
        wait_until(lambda: os.path.exists(gate + ".held"), "the second call held")
        assert second.is_alive()
        open(gate, "w").close()
        second.join(timeout=10)
        assert not second.is_alive()
    finally:
        nv.sim_clear_faults()
        nv.nvmlShutdown()


def test_killed_between_destroying_the_idle_instances_and_turning_mig_off(start_agent, tmp_path):
    """MIG off with ``destroy_idle`` cut once its idle instances are destroyed, before the mode
    is asked: the next agent makes them again (before, it left MIG on with no instance)."""
    cut(start_agent, tmp_path, KINDS[3], "nvmlDeviceSetMigMode", 0, False)
