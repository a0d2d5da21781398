"""A job's MIG instance met by a passing NVML fault (a timeout, not ready, an internal driver
error) is undone and made again within the launch, a bounded number of times, before the
launch is refused: a refusal is the host's, and sends the job elsewhere for an attempt of its
own. A fault no other try mends (a lost GPU) is refused at the first."""

from __future__ import annotations

import pytest

from remote_agent.gpu import fake_pynvml as nv
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.service import LAUNCH_TRIES
from tests.conftest import AgentError
from tests.test_jobs import script
from tests.test_mig_faults import agent_with

CREATE_GI = "nvmlDeviceCreateGpuInstanceWithPlacement"
CREATE_CI = "nvmlGpuInstanceCreateComputeInstance"  # after its GPU instance: a partial one


def _launch(agent, key: str):
    return agent.call("job.launch", key=key, gpu=0, mig={"profile": "3g.40gb", "start": 0},
                      argv=script("import time\ntime.sleep(60)"))


def _instances(agent) -> list:
    return [(i["profile"], i["start"], i["uuid"]) for i in
            agent.call("snapshot")["gpus"][0]["instances"]]


@pytest.mark.parametrize("function", [CREATE_GI, CREATE_CI])
@pytest.mark.parametrize("error", ["NVML_ERROR_TIMEOUT", "NVML_ERROR_UNKNOWN",
                                   "NVML_ERROR_NOT_READY"])
def test_a_passing_fault_making_a_jobs_instance_is_tried_again(start_agent, tmp_path, function,
                                                                error):
    agent = start_agent("1xA100-80GB:mig", str(tmp_path / "host"))
    agent.call("sim.fault", function=function, error=error, count=LAUNCH_TRIES - 1)
    job = _launch(agent, "k-passing")
    assert job["state"] == "running" and job["instance"].startswith("MIG-")
    assert _instances(agent) == [("3g.40gb", 0, job["instance"])]  # none left of a try


def test_a_passing_fault_at_every_try_is_refused_saying_so_and_leaves_the_gpu_as_it_was(
        start_agent, tmp_path):
    agent = start_agent("1xA100-80GB:mig", str(tmp_path / "host"))
    agent.call("sim.fault", function=CREATE_CI, error="NVML_ERROR_TIMEOUT", count=LAUNCH_TRIES)
    with pytest.raises(AgentError) as err:
        _launch(agent, "k-always")
    assert err.value.code == rpc.NVML_FAILED
    assert "(tried %d times, each undone)" % LAUNCH_TRIES in err.value.message
    assert err.value.data["rolled_back"] is True
    assert _instances(agent) == []
    job = _launch(agent, "k-always")  # the fault gone: the same key launches
    assert _instances(agent) == [("3g.40gb", 0, job["instance"])]


def test_a_lost_gpu_is_refused_at_the_first_try(start_agent, tmp_path):
    agent = start_agent("1xA100-80GB:mig", str(tmp_path / "host"))
    agent.call("sim.fault", function=CREATE_GI, error="NVML_ERROR_GPU_IS_LOST", count=1)
    with pytest.raises(AgentError) as err:
        _launch(agent, "k-lost")
    assert (err.value.code, err.value.data["nvml_error"]) == (rpc.NVML_FAILED,
                                                              "NVML_ERROR_GPU_IS_LOST")
    assert "tried" not in err.value.message
    assert _instances(agent) == []


def test_a_fault_after_the_instance_was_made_leaves_one_instance_only():
    """The driver made the GPU instance, then said it timed out (the simulator's ``after``):
    the try is undone and the next makes the one the job gets."""
    agent, _ = agent_with("1xA100-80GB:mig")
    nv.sim_inject_fault(CREATE_GI, nv.NVML_ERROR_TIMEOUT, after=True)
    nv.sim_start_trace()
    try:
        uuid = agent.create_for_job(0, "3g.40gb", 0, False, taken=lambda uuid: False)
        assert nv.sim_trace().count(CREATE_GI) == 2
    finally:
        nv.sim_clear_faults()
    assert nv.sim_gpu_state(0)["instances"] == [("3g.40gb", 0, 1)]
    assert uuid.startswith("MIG-")
