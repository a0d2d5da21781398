"""A sweep of NVML failures over every kind of MIG change the agent makes, each error NVML
can return there, struck at each NVML call of the change in turn (before it takes effect, and
after for the calls that change the GPU, as a driver that times out after doing the work).

Beyond what test_mig_faults checks (the GPU exactly as before, or exactly as planned, or said
unrestored and degraded), each run here also checks the rest of the promise:

- the process on another instance keeps running there, its instance the same one (uuid);
- the answer names the NVML call and error that failed and says whether it was rolled back;
- the agent's journal of changes in progress holds nothing once the change is answered;
- the same change asked again, the faults gone, leaves the GPU as planned, and asked a
  third time changes nothing more (a change pinned to its layout version is refused then).

One error per call (the codes taken in turn) runs with the quick suite; every error at every
call is the slow sweep (README, "the slow fault suites").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import pytest

from remote_agent.gpu import fake_pynvml as nv
from remote_agent.mig.journal import MigJournal
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import RpcError
from remote_agent.service import Agent
from tests.test_mig_faults import MUTATING, inventory_gpu, served

# what NVML documents for the calls of a MIG change, and what a failing driver says anywhere
CODES = (nv.NVML_ERROR_INSUFFICIENT_RESOURCES, nv.NVML_ERROR_NOT_SUPPORTED,
         nv.NVML_ERROR_NO_PERMISSION, nv.NVML_ERROR_IN_USE, nv.NVML_ERROR_UNKNOWN,
         nv.NVML_ERROR_GPU_IS_LOST, nv.NVML_ERROR_TIMEOUT, nv.NVML_ERROR_INVALID_ARGUMENT,
         nv.NVML_ERROR_NOT_FOUND)


@dataclass(frozen=True)
class Kind:
    """A kind of MIG change: the GPU it starts from, and the method that makes it."""

    name: str
    spec: str
    setup: Tuple[Tuple[str, int], ...]  # instances made first, (profile, start)
    busy: Optional[int]  # the index into setup whose instance runs a process
    method: str
    params: Dict[str, Any]
    pinned: bool = False  # asked with the layout version it was planned on
    waits_for_reset: bool = False

    def __str__(self) -> str:
        return self.name


KINDS = [
    Kind("create beside a busy instance", "1xA100-80GB:mig", (("3g.40gb", 0),), 0,
         "mig.apply", dict(gpu=0, profile="2g.20gb", start=4), pinned=True),
    Kind("a plan destroying two idle instances beside a busy one", "1xH100:mig",
         (("1g.10gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)), 0,
         "mig.apply", dict(gpu=0, profile="3g.40gb", start=4, destroy_idle=True), pinned=True),
    Kind("destroy an idle instance beside a busy one", "1xA100-40GB:mig",
         (("2g.10gb", 0), ("1g.5gb", 6)), 1, "mig.destroy", dict(gpu=0, gi_id=1)),
    Kind("MIG mode off on an idle GPU, its idle instances destroyed", "1xA100-80GB:mig",
         (("1g.10gb", 0), ("2g.20gb", 4)), None,
         "mig.set_mode", dict(gpu=0, enabled=False, destroy_idle=True)),
    Kind("MIG mode on", "1xH100", (), None, "mig.set_mode", dict(gpu=0, enabled=True)),
    Kind("MIG mode on by a GPU reset", "1xH100", (), None,
         "mig.set_mode", dict(gpu=0, enabled=True, reset=True), waits_for_reset=True),
]


@dataclass
class Run:
    agent: Agent
    journal: str
    before: Dict[str, Any]
    busy: Optional[Tuple[int, str]]  # the process on another instance: (pid, its MIG uuid)
    version: Optional[str]


def prepared(kind: Kind, tmp_path) -> Run:
    nv.sim_open(None, kind.spec)
    agent = Agent(nv, "sim", sim=nv)
    tmp_path.mkdir(parents=True, exist_ok=True)
    journal = str(tmp_path / "mig-changes")
    agent.journal = MigJournal(journal)
    methods = served(agent)
    busy = None
    for n, (profile, start) in enumerate(kind.setup):
        uuid = methods.call("mig.apply", {"gpu": 0, "profile": profile,
                                          "start": start})["instance"]["uuid"]
        if n == kind.busy:
            busy = (nv.sim_register_process(0, 100, instance_uuid=uuid), uuid)
    if kind.waits_for_reset:
        nv.sim_mode_waits_for_reset(0)
    version = inventory_gpu(agent).get("layout_version")
    return Run(agent, journal, nv.sim_gpu_state(0), busy, version)


def ask(kind: Kind, run: Run) -> Any:
    params = dict(kind.params)
    if kind.pinned:
        params["layout_version"] = run.version
    return served(run.agent).call(kind.method, params)


_CLEAN: Dict[str, Tuple[List[str], Dict[str, Any]]] = {}


def clean(kind: Kind, tmp_path) -> Tuple[List[str], Dict[str, Any]]:
    """The NVML calls the change makes without faults, and the GPU it leaves."""
    if kind.name not in _CLEAN:
        run = prepared(kind, tmp_path / "clean")
        nv.sim_start_trace()
        ask(kind, run)
        _CLEAN[kind.name] = (nv.sim_trace(), nv.sim_gpu_state(0))
    return _CLEAN[kind.name]


def journaled(run: Run) -> List[str]:
    """The changes the agent's journal holds (its folder is made at its first change)."""
    return os.listdir(run.journal) if os.path.isdir(run.journal) else []


def still_running(run: Run) -> None:
    """The process on another instance is there, on the same instance."""
    if run.busy is None:
        return
    pid, uuid = run.busy
    held = {i["uuid"]: i["pids"] for i in inventory_gpu(run.agent)["instances"]}
    assert pid in held.get(uuid, []), "the busy instance %s lost its process %d: %s" % (
        uuid, pid, held)


def strike(kind: Kind, tmp_path, k: int, code: int, after: bool) -> None:
    calls, planned = clean(kind, tmp_path)
    run = prepared(kind, tmp_path / ("k%d-%d-%d" % (k, code, after)))
    function = calls[k]
    nv.sim_inject_fault(function, code, skip=calls[:k].count(function), after=after)
    try:
        ask(kind, run)
        error = None
    except RpcError as err:
        error = err
    finally:
        nv.sim_clear_faults()
    now = nv.sim_gpu_state(0)
    assert journaled(run) == [], "an answered change is left in the journal"
    still_running(run)
    if error is None:
        assert now == planned, "answered as made, but the GPU is not as planned"
        assert "degraded" not in inventory_gpu(run.agent)
    else:
        assert error.code != rpc.INTERNAL_ERROR, error.message
        data = error.data or {}
        if "rolled_back" in data:
            assert data["function"] is None or data["function"] in error.message or \
                data["nvml_error"] in error.message or error.code == rpc.GPU_IN_USE, \
                error.message
            if data["rolled_back"]:
                assert now == run.before, "said rolled back, but the GPU changed"
                assert error.code == rpc.GPU_IN_USE or (
                    "undone" in error.message and "as it was" in error.message), error.message
                assert "degraded" not in inventory_gpu(run.agent)
            else:
                assert "could NOT be restored" in error.message
                assert inventory_gpu(run.agent)["degraded"] == error.message
        else:
            assert now == run.before, "refused, yet the GPU changed: %s" % error.message
    # asked again, the faults gone (a pinned plan as it was confirmed, on the GPU rolled
    # back): as planned; a third time changes nothing
    if error is not None:
        ask(kind, run)
        assert nv.sim_gpu_state(0) == planned
        still_running(run)
    if kind.method == "mig.set_mode":
        assert ask(kind, run)["changed"] is False
    elif kind.pinned:
        with pytest.raises(RpcError) as again:
            ask(kind, run)
        assert again.value.code == rpc.STALE_LAYOUT
    else:
        with pytest.raises(RpcError) as again:
            ask(kind, run)
        assert again.value.code == rpc.INSTANCE_NOT_FOUND
    assert nv.sim_gpu_state(0) == planned
    assert journaled(run) == []
    assert "degraded" not in inventory_gpu(run.agent)


def points(kind: Kind, tmp_path) -> List[Tuple[int, bool]]:
    calls, _ = clean(kind, tmp_path)
    return [(k, after) for k in range(len(calls))
            for after in ((False, True) if calls[k] in MUTATING else (False,))]


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_one_error_at_each_call_of_each_change(kind, tmp_path):
    for n, (k, after) in enumerate(points(kind, tmp_path)):
        strike(kind, tmp_path, k, CODES[n % len(CODES)], after)


@pytest.mark.slow
@pytest.mark.parametrize("code", CODES, ids=lambda c: nv.NVMLError(c).__class__.__name__)
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_every_error_at_each_call_of_each_change(kind, code, tmp_path):
    for k, after in points(kind, tmp_path):
        strike(kind, tmp_path, k, code, after)


def test_mig_off_that_fails_after_destroying_the_idle_instances_makes_them_again(tmp_path):
    """Turning MIG off with ``destroy_idle``: the idle instances go first; the mode change then
    failing (and undone) has them made again at their places, so the GPU is as it was and
    the answer says rolled back. Before, they were left destroyed (MIG on, no instance: neither
    as before nor as asked), the answer listing them in ``data.destroyed_first``."""
    run = prepared(KINDS[3], tmp_path)
    nv.sim_inject_fault("nvmlDeviceSetMigMode", nv.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(RpcError) as err:
        ask(KINDS[3], run)
    nv.sim_clear_faults()
    assert nv.sim_gpu_state(0) == run.before
    assert err.value.data["rolled_back"] is True and "destroyed_first" not in err.value.data
    assert err.value.message == (
        "turning MIG mode off on GPU 0 failed: nvmlDeviceSetMigMode failed: GPU is lost "
        "(NVML_ERROR_GPU_IS_LOST); every step already done was undone; the GPU is as it was")
    assert [(i["profile"], i["start"]) for i in err.value.data["now"]] == [
        ("1g.10gb", 0), ("2g.20gb", 4)]
    assert journaled(run) == [] and "degraded" not in inventory_gpu(run.agent)


def test_mig_off_whose_mode_cannot_be_put_back_says_its_idle_instances_are_gone(tmp_path):
    """The mode change took effect, then failed, and NVML will not turn MIG back on: the idle
    instances cannot be made again (MIG is off); the GPU is degraded, in words naming them."""
    run = prepared(KINDS[3], tmp_path)
    nv.sim_inject_fault("nvmlDeviceSetMigMode", nv.NVML_ERROR_TIMEOUT, after=True)
    nv.sim_inject_fault("nvmlDeviceSetMigMode", nv.NVML_ERROR_UNKNOWN, count=100)
    with pytest.raises(RpcError) as err:
        ask(KINDS[3], run)
    nv.sim_clear_faults()
    assert err.value.data["rolled_back"] is False
    assert "its idle instances, destroyed first, are not made again: 1g.10gb at slot 0" in \
        err.value.message and "could NOT be restored" in err.value.message
    assert inventory_gpu(run.agent)["degraded"] == err.value.message
    assert journaled(run) == []
