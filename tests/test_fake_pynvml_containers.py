"""The fake NVML reports host pids for processes in containers, as real NVML does: a process in a
real podman container registers its own (namespace) pid; the host sees its host pid; its end
frees its memory; and neither side's pruning of dead processes judges the other's entries."""

from __future__ import annotations

import os

import pytest

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


def test_entries_of_a_namespace_that_is_gone_are_pruned_by_the_host(tmp_path):
    """An entry registered in a pid namespace no process of the host is in any more (its
    container ended) is neither listed nor kept: a host-side transaction in the root namespace,
    which sees every process's namespace, drops it. (An entry of a namespace that still has
    processes is kept: test_a_process_in_a_container_is_seen_by_its_host_pid.)"""
    gone = {"pid": 7, "ns": 1, "gpu": 0, "gi": None, "ci": None, "used_mib": 50, "util": 0}
    if nv._living_namespaces(os.stat("/proc/self/ns/pid").st_ino, [gone]) is None:
        pytest.skip("this process cannot tell every process's pid namespace (it is not in the "
                    "root one, or a process in a nested one hides it)")
    state = str(tmp_path / "gpus.json")
    nv.sim_open(state, "1xL4")
    nv.nvmlInit()
    with nv._transaction() as host:  # as a process of a namespace now gone recorded it
        host["procs"].append(gone)
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    assert nv.nvmlDeviceGetComputeRunningProcesses(handle) == []
    assert [p["pid"] for p in nv._host()["procs"]] == []  # that transaction pruned it already
    assert nv.nvmlDeviceGetMemoryInfo(handle).used == 0
    nv.sim_open(None, "1xL4")
