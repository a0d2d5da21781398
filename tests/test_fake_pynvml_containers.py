"""The fake NVML reports host pids for processes in containers, as real NVML does: a process in a
real podman container registers its own (namespace) pid; the host sees its host pid; its end
frees its memory; and neither side's pruning of dead processes judges the other's entries."""

from __future__ import annotations

import os

from remote_agent.gpu import fake_pynvml as nv
from tests.podman import IMAGE_CODE, PYTHON, podman  # noqa: F401 (the fixture)
from tests.test_job_supervision import wait_until

WORKLOAD = """\
import os, sys, time
from remote_agent.gpu import fake_pynvml as nv
nv.sim_open(os.environ["STATE"])
nv.nvmlInit()
nv.sim_register_process(0, 1234, pid=os.getpid())
print(os.getpid(), flush=True)
while not os.path.exists(os.environ["GATE"]):
    time.sleep(0.05)
nv.sim_set_process_memory(os.getpid(), 2345)  # found by its own pid, in its own namespace
while not os.path.exists(os.environ["GATE"] + ".end"):
    time.sleep(0.05)
"""


def test_a_process_in_a_container_is_seen_by_its_host_pid(podman, tmp_path):  # noqa: F811
    shared = tmp_path / "sim"
    shared.mkdir()
    state, gate = str(shared / "gpus.json"), str(shared / "gate")
    nv.sim_open(state, "1xL4")
    nv.nvmlInit()
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    name = podman.start_container(
        "--volume", "%s:%s" % (shared, shared), "--env", "PYTHONPATH=" + IMAGE_CODE,
        "--env", "STATE=" + state, "--env", "GATE=" + gate,
        command=[PYTHON, "-c", WORKLOAD])
    try:
        host_pid = int(podman.run(["inspect", "--format", "{{.State.Pid}}", name]).stdout)
        wait_until(lambda: nv.nvmlDeviceGetComputeRunningProcesses(handle), "it to register")
        (seen,) = nv.nvmlDeviceGetComputeRunningProcesses(handle)
        inside = int(podman.run(["logs", name]).stdout.split()[0])
        assert inside == 1 and host_pid != inside  # its own pid is its namespace's
        assert (seen.pid, seen.usedGpuMemory) == (host_pid, 1234 << 20)
        # a host process's transaction (which prunes dead processes) keeps the container's entry
        mine = nv.sim_register_process(0, 10, pid=os.getpid())
        assert sorted(p.pid for p in nv.nvmlDeviceGetComputeRunningProcesses(handle)) == sorted(
            [host_pid, mine])
        nv.sim_remove_process(mine)
        # the container's own writes find its entry by its namespace's pid
        open(gate, "w").close()
        wait_until(lambda: nv.nvmlDeviceGetMemoryInfo(handle).used == 2345 << 20,
                   "its memory to change")
        open(gate + ".end", "w").close()
        podman.run(["wait", name])
        assert nv.nvmlDeviceGetComputeRunningProcesses(handle) == []  # its end frees the memory
        assert nv.nvmlDeviceGetMemoryInfo(handle).used == 0
    finally:
        podman.remove(name)
        nv.sim_open(None, "1xL4")


def test_entries_of_another_namespace_are_kept_by_the_host_s_pruning(tmp_path):
    """An entry registered in a pid namespace the host cannot see into is neither listed nor
    pruned by the host (only a reader in its namespace can judge it)."""
    state = str(tmp_path / "gpus.json")
    nv.sim_open(state, "1xL4")
    nv.nvmlInit()
    with nv._transaction() as host:  # as a process of an unknown namespace would record it
        host["procs"].append({"pid": 7, "ns": 1, "gpu": 0, "gi": None, "ci": None,
                              "used_mib": 50, "util": 0})
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    assert nv.nvmlDeviceGetComputeRunningProcesses(handle) == []
    nv.sim_register_process(0, 10)  # a transaction: prunes the dead of its own namespace only
    assert [p["pid"] for p in nv._host()["procs"] if p.get("ns") == 1] == [7]
    nv.sim_open(None, "1xL4")


