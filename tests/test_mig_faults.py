"""Every MIG change of the agent is all or nothing, whichever NVML call fails — one fault or two.

Each scenario is a change the agent makes (``mig.apply`` with and without destroying idle
instances, ``mig.destroy``, ``mig.set_mode``, a job's instance through ``create_for_job``). A run
without faults records every NVML call the change makes, in order (the fake pynvml's trace);
then a fault is injected at each of those calls in turn, and a second one at each call the
faulted run makes after the first. Whatever the answer, the GPU is read straight from the
simulated host's state and must agree with it:

- success: the GPU holds exactly what the fault-free run left;
- an error: the GPU holds exactly what it held before, and is not marked degraded;
- an error saying the GPU could not be restored: the answer's ``now`` is exactly what the GPU
  holds and the GPU is marked degraded in ``hello`` and its inventory record.

With at most two faults the agent always restores (its reads and undo are retried), so the third
outcome is proved separately with faults that never stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remote_agent.failing import Failures
from remote_agent.gpu import fake_pynvml as nv
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import Dispatcher, RpcError
from remote_agent import service
from remote_agent.service import Agent

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

FAULT_CODES = (nv.NVML_ERROR_UNKNOWN, nv.NVML_ERROR_TIMEOUT, nv.NVML_ERROR_GPU_IS_LOST,
               nv.NVML_ERROR_IN_USE, nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
# calls that change the GPU: a fault there may also strike after the call took effect
MUTATING = {"nvmlDeviceCreateGpuInstanceWithPlacement", "nvmlGpuInstanceCreateComputeInstance",
            "nvmlComputeInstanceDestroy", "nvmlGpuInstanceDestroy", "nvmlDeviceSetMigMode"}
DOUBLE_FAULT_EXAMPLES = 250


@pytest.fixture(autouse=True)
def no_wait_between_launch_tries(monkeypatch):
    """A job's instance met by a passing fault is made again after ``LAUNCH_RETRY_S``: what a
    fault leaves is the same without the wait, and the walks below, each pair of thousands of
    calls a launch tried again up to three times, spent minutes only sleeping."""
    monkeypatch.setattr(service, "LAUNCH_RETRY_S", 0.0)


@dataclass(frozen=True)
class Scenario:
    name: str
    spec: str
    setup: Tuple[Tuple[str, int], ...]  # instances made first, (profile, start)
    busy: Tuple[int, ...]  # indexes into setup whose instance runs a process
    op: Callable[[Agent], Any]
    refused: Optional[int] = None  # the error code the change meets even without faults

    def __str__(self) -> str:
        return self.name


def served(agent: Agent) -> Dispatcher:
    """The agent's GPU methods with hello, as the daemon serves them."""
    table = agent.methods()
    table["hello"] = agent.hello_method(lambda: table)
    return Dispatcher(table, Failures(rpc.log, ("call", "calls")))


def rpc_call(method: str, **params: Any) -> Callable[[Agent], Any]:
    return lambda agent: served(agent).call(method, params)


def for_job(profile: str, start: int) -> Callable[[Agent], Any]:
    return lambda agent: agent.create_for_job(0, profile, start, True, taken=lambda uuid: False)


SCENARIOS = [
    Scenario("apply into a free slot", "1xA100-80GB:mig", (("3g.40gb", 0),), (),
             rpc_call("mig.apply", gpu=0, profile="2g.20gb")),
    Scenario("apply destroying one idle instance", "1xA100-80GB:mig",
             (("3g.40gb", 0), ("3g.40gb", 4)), (),
             rpc_call("mig.apply", gpu=0, profile="4g.40gb", destroy_idle=True)),
    Scenario("apply destroying two idle instances beside a busy one", "1xH100:mig",
             (("1g.10gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)), (0,),
             rpc_call("mig.apply", gpu=0, profile="3g.40gb", start=4, destroy_idle=True)),
    Scenario("apply the whole GPU over two idle instances", "1xA30:mig",
             (("2g.12gb", 0), ("1g.6gb", 2)), (),
             rpc_call("mig.apply", gpu=0, profile="4g.24gb", destroy_idle=True)),
    Scenario("destroy an idle instance", "1xA100-40GB:mig", (("2g.10gb", 0), ("1g.5gb", 6)),
             (1,), rpc_call("mig.destroy", gpu=0, gi_id=1)),  # gi 1: the first made
    Scenario("MIG mode off on an idle GPU", "1xA100-80GB:mig", (), (),
             rpc_call("mig.set_mode", gpu=0, enabled=False)),
    Scenario("MIG mode on", "1xH100", (), (), rpc_call("mig.set_mode", gpu=0, enabled=True)),
    Scenario("MIG mode off refused on a GPU in use", "1xA100-80GB:mig", (("1g.10gb", 0),), (),
             rpc_call("mig.set_mode", gpu=0, enabled=False), refused=rpc.GPU_IN_USE),
    Scenario("a job's instance over an idle one", "1xA100-80GB:mig",
             (("2g.20gb", 4), ("1g.10gb", 6)), (), for_job("3g.40gb", 4)),
    Scenario("a job's instance already there", "1xB200:mig", (("1g.23gb", 6),), (),
             for_job("1g.23gb", 6)),
]


@dataclass
class Outcome:
    result: Any  # the answer's result, or None
    error: Optional[RpcError]
    before: Dict[str, Any]  # the simulated GPU's state, read straight from it
    after: Dict[str, Any]
    calls: List[str]
    agent: Agent


def run(scenario: Scenario, faults: Sequence[Tuple[str, int, int, bool]] = ()) -> Outcome:
    """Set the scenario's GPU up, inject ``faults`` (function, skip, code, after), make the
    change, and read what the GPU holds."""
    nv.sim_open(None, scenario.spec)
    agent = Agent(nv, "sim", sim=nv)
    methods = served(agent)
    for n, (profile, start) in enumerate(scenario.setup):
        made = methods.call("mig.apply", {"gpu": 0, "profile": profile, "start": start})
        if n in scenario.busy:
            nv.sim_register_process(0, 100, instance_uuid=made["instance"]["uuid"])
    before = nv.sim_gpu_state(0)
    for function, skip, code, after in faults:
        nv.sim_inject_fault(function, code, skip=skip, after=after)
    nv.sim_start_trace()
    result, error = None, None
    try:
        result = scenario.op(agent)
    except RpcError as err:
        error = err
    calls = nv.sim_trace()
    nv.sim_clear_faults()
    return Outcome(result, error, before, nv.sim_gpu_state(0), calls, agent)


def fault_at(calls: List[str], k: int, code: int, after: bool) -> Tuple[str, int, int, bool]:
    """A fault striking call ``k`` of a run that makes ``calls``."""
    return calls[k], calls[:k].count(calls[k]), code, after and calls[k] in MUTATING


_CLEAN: Dict[str, Outcome] = {}


def clean(scenario: Scenario) -> Outcome:
    if scenario.name not in _CLEAN:
        out = _CLEAN[scenario.name] = run(scenario)
        assert (out.error.code if out.error else None) == scenario.refused, out.error
    return _CLEAN[scenario.name]


def held(records: List[Dict[str, Any]]) -> List[Tuple[str, int, bool]]:
    return sorted((r["profile"], r["start"], r["uuid"] is not None) for r in records)


def simulated(state: Dict[str, Any]) -> List[Tuple[str, int, bool]]:
    return sorted((profile, start, cis > 0) for profile, start, cis in state["instances"])


def inventory_gpu(agent: Agent) -> Dict[str, Any]:
    return served(agent).call("inventory", {})["gpus"][0]


def check(scenario: Scenario, out: Outcome, faults: int) -> str:
    """The promise, checked against the simulated GPU; returns which outcome it was."""
    err = out.error
    if err is None:
        assert out.after == clean(scenario).after, "success, but the GPU is not as planned"
        if isinstance(out.result, dict) and "layout_version" in out.result:
            if out.result["layout_version"] is None:
                assert "warning" in out.result
            else:
                assert out.result["layout_version"] == inventory_gpu(out.agent)["layout_version"]
        assert "degraded" not in inventory_gpu(out.agent)
        return "success"
    assert err.code != rpc.INTERNAL_ERROR, err.message
    data = err.data or {}
    if data.get("rolled_back") is False:
        assert faults > 2, "two faults must never leave a GPU unrestored: %s" % err.message
        assert "could NOT be restored" in err.message
        if data["now"] is not None and "mig_mode" not in data["now"]:
            assert held(data["now"]) == simulated(out.after)
        assert data["degraded"] == inventory_gpu(out.agent)["degraded"]
        hello = served(out.agent).call("hello", {})
        assert any(p.startswith("GPU 0 is degraded") for p in hello["problems"])
        return "not restored"
    assert out.after == out.before, "an error, but the GPU changed: %s" % err.message
    assert "degraded" not in inventory_gpu(out.agent)
    return "restored" if "rolled_back" in data else "refused before any change"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_one_fault_at_every_call_of_every_change(scenario):
    calls = clean(scenario).calls
    assert calls, "the change made no NVML call"
    seen = set()
    for k in range(len(calls)):
        for after in (False, True) if calls[k] in MUTATING else (False,):
            code = FAULT_CODES[k % len(FAULT_CODES)]
            out = run(scenario, [fault_at(calls, k, code, after)])
            assert out.calls[:k] == calls[:k], "the run before the fault is not the same"
            seen.add(check(scenario, out, 1))
    assert seen - {"refused before any change"} or scenario.name.endswith("already there")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_two_faults_at_every_pair_of_calls_of_every_change(scenario):
    """Exhaustive: the first fault at each call, the second at each later call of that run;
    error codes and whether a fault strikes after the call took effect vary with the pair."""
    calls = clean(scenario).calls
    for k1 in range(len(calls)):
        first = fault_at(calls, k1, FAULT_CODES[k1 % len(FAULT_CODES)], k1 % 2 == 1)
        faulted = run(scenario, [first]).calls
        for k2 in range(k1 + 1, len(faulted)):
            second = fault_at(faulted, k2, FAULT_CODES[(k1 + k2) % len(FAULT_CODES)],
                              k2 % 2 == 0)
            out = run(scenario, [first, second])
            assert out.calls[:k2] == faulted[:k2]
            check(scenario, out, 2)


@settings(max_examples=DOUBLE_FAULT_EXAMPLES, derandomize=True, deadline=None)
@given(data=st.data())
def test_two_faults_with_any_codes_anywhere(data):
    """Random codes and timings at random pairs of calls, at a fixed seed."""
    scenario = data.draw(st.sampled_from(SCENARIOS), label="scenario")
    calls = clean(scenario).calls
    k1 = data.draw(st.integers(0, len(calls) - 1), label="first fault at call")
    first = fault_at(calls, k1, data.draw(st.sampled_from(FAULT_CODES)),
                     data.draw(st.booleans(), label="after"))
    faulted = run(scenario, [first]).calls
    if k1 + 1 >= len(faulted):
        check(scenario, run(scenario, [first]), 1)
        return  # the first fault ended the change: there is no later call to strike
    k2 = data.draw(st.integers(k1 + 1, len(faulted) - 1), label="second fault at call")
    second = fault_at(faulted, k2, data.draw(st.sampled_from(FAULT_CODES)),
                      data.draw(st.booleans(), label="after"))
    out = run(scenario, [first, second])
    assert out.calls[:k2] == faulted[:k2]
    check(scenario, out, 2)


def agent_with(spec: str, *setup: Tuple[str, int]) -> Tuple[Agent, Dispatcher]:
    nv.sim_open(None, spec)
    agent = Agent(nv, "sim", sim=nv)
    methods = served(agent)
    for profile, start in setup:
        methods.call("mig.apply", {"gpu": 0, "profile": profile, "start": start})
    return agent, methods


def refused(methods: Dispatcher, method: str, **params: Any) -> RpcError:
    with pytest.raises(RpcError) as err:
        methods.call(method, params)
    return err.value


def test_a_gpu_that_cannot_be_restored_says_what_it_holds_and_stays_degraded_until_fixed():
    agent, methods = agent_with("1xA100-80GB:mig", ("3g.40gb", 0), ("3g.40gb", 4))
    # the new instance cannot be made, nor the destroyed one made again, however often tried
    nv.sim_inject_fault("nvmlDeviceCreateGpuInstanceWithPlacement", nv.NVML_ERROR_GPU_IS_LOST,
                        count=1000)
    err = refused(methods, "mig.apply", gpu=0, profile="4g.40gb", destroy_idle=True)
    nv.sim_clear_faults()
    assert err.code == rpc.NVML_FAILED
    assert err.data["rolled_back"] is False
    assert err.data["function"] == "nvmlDeviceCreateGpuInstanceWithPlacement"
    assert held(err.data["before"]) == [("3g.40gb", 0, True), ("3g.40gb", 4, True)]
    assert held(err.data["now"]) == simulated(nv.sim_gpu_state(0)) == [("3g.40gb", 4, True)]
    assert "it now holds 3g.40gb@4; before it held 3g.40gb@0, 3g.40gb@4" in err.message
    assert err.data["rollback_errors"], "the failed undo is reported, not hidden"
    assert inventory_gpu(agent)["degraded"] == err.data["degraded"] == err.message
    assert methods.call("snapshot", {})["gpus"][0]["degraded"] == err.message
    assert methods.call("hello", {})["problems"] == ["GPU 0 is degraded: %s" % err.message]
    # a later change that succeeds vouches for the GPU again
    methods.call("mig.apply", {"gpu": 0, "profile": "1g.10gb"})
    assert "degraded" not in inventory_gpu(agent)
    assert methods.call("hello", {})["problems"] == []


def test_a_degraded_gpu_is_good_again_once_it_reads_as_before():
    agent, methods = agent_with("1xH100:mig", ("2g.20gb", 0))
    nv.sim_inject_fault("nvmlDeviceCreateGpuInstanceWithPlacement", nv.NVML_ERROR_UNKNOWN,
                        count=1000)
    err = refused(methods, "mig.apply", gpu=0, profile="7g.80gb", destroy_idle=True)
    nv.sim_clear_faults()
    assert err.data["now"] == [] and "degraded" in inventory_gpu(agent)
    # someone puts the lost instance back by hand (nvidia-smi, say)
    agent.backend.create_instance(0, agent.backend.geometry(0).profile("2g.20gb"), 0)
    assert "degraded" not in inventory_gpu(agent)
    assert methods.call("hello", {})["problems"] == []


def test_a_mode_change_that_took_effect_and_cannot_be_undone_is_reported():
    agent, methods = agent_with("1xA100-80GB")
    # the driver turns MIG on and still reports a failure; turning it back is refused
    nv.sim_inject_fault("nvmlDeviceSetMigMode", nv.NVML_ERROR_TIMEOUT, after=True)
    nv.sim_inject_fault("nvmlDeviceSetMigMode", nv.NVML_ERROR_UNKNOWN, skip=1, count=1000)
    err = refused(methods, "mig.set_mode", gpu=0, enabled=True)
    nv.sim_clear_faults()
    assert err.code == rpc.NVML_FAILED and err.data["rolled_back"] is False
    assert err.data["before"] == {"mig_mode": False, "mig_pending": False}
    assert err.data["now"] == {"mig_mode": True, "mig_pending": True}
    assert nv.sim_gpu_state(0)["mig"] is True
    assert inventory_gpu(agent)["degraded"] == err.message
    assert methods.call("mig.set_mode", {"gpu": 0, "enabled": False})["mig_mode"] is False
    assert "degraded" not in inventory_gpu(agent)


def post_change_calls(scenario: Scenario) -> Tuple[List[str], int]:
    """A scenario's fault-free calls, and where the reads after its last change begin."""
    calls = clean(scenario).calls
    return calls, max(k for k, c in enumerate(calls) if c in MUTATING) + 1


SCENARIO = {s.name: s for s in SCENARIOS}


def test_a_change_whose_result_cannot_be_read_back_is_answered_as_made():
    scenario = SCENARIO["apply destroying one idle instance"]
    calls, after = post_change_calls(scenario)
    out = run(scenario, [(calls[after], calls[:after].count(calls[after]),
                          nv.NVML_ERROR_GPU_IS_LOST, False)] * 3)
    assert out.error is None
    assert out.result["layout_version"] is None
    assert "the change was made, but reading the GPU back failed" in out.result["warning"]
    assert (out.result["instance"]["profile"], out.result["instance"]["start"]) == ("4g.40gb", 0)
    assert out.result["instance"]["uuid"] is None
    assert out.after == clean(scenario).after


def test_a_job_instance_whose_uuid_cannot_be_read_is_undone_or_reported():
    scenario = SCENARIO["a job's instance over an idle one"]
    calls, after = post_change_calls(scenario)
    fn = calls[after]
    # three failed reads after the change: the job cannot have its instance, so it is undone
    out = run(scenario, [(fn, calls[:after].count(fn), nv.NVML_ERROR_GPU_IS_LOST, False)] * 3)
    assert out.error is not None and out.error.data["rolled_back"] is True
    assert "uuid cannot be read" in out.error.message
    assert out.after == out.before
    # a fault that may pass (a timeout): that try is undone and the next makes the instance
    out = run(scenario, [(fn, calls[:after].count(fn), nv.NVML_ERROR_TIMEOUT, False)] * 3)
    assert out.error is None and out.after == clean(scenario).after
    # reads that never come back: neither undone nor hidden
    out = run(scenario, [(fn, calls[:after].count(fn), nv.NVML_ERROR_TIMEOUT, False)] * 1000)
    assert out.error.data["rolled_back"] is False and out.error.data["now"] is None
    assert "cannot be read" in out.error.message
    assert out.after == clean(scenario).after  # what the GPU truly holds: the new instance
    assert inventory_gpu(out.agent)["degraded"] == out.error.message


def test_a_read_that_misses_the_new_instance_is_read_again_before_it_is_believed():
    scenario = SCENARIO["apply into a free slot"]
    calls, after = post_change_calls(scenario)
    fn = "nvmlDeviceGetMigDeviceHandleByIndex"
    first = calls[:after].count(fn) + 1  # device 1 (the new instance) in the first read back
    per_read = 7  # an A100 lists up to 7 MIG devices
    lie = [(fn, first + per_read * n, nv.NVML_ERROR_NOT_FOUND, False) for n in range(3)]
    out = run(scenario, lie[:1])  # one read misses it: the next one sees it
    assert out.error is None and out.after == clean(scenario).after
    assert out.result["instance"]["uuid"].startswith("MIG-")
    out = run(scenario, lie)  # every read misses it: not believed done, so undone
    assert out.error.data["rolled_back"] is True
    assert "every step succeeded, yet the GPU then held 3g.40gb@0, 2g.20gb@" in out.error.message
    assert out.after == out.before
