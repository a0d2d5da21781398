"""What a job used of its GPUs, as the real daemon samples it: real jobs (simload processes
registered with the simulator) whose memory and utilisation the test sets and changes, and the
aggregate in the job record checked against the values set.

Sample timing: each job starts at 0 MiB and 0 % and is set back to 0 before it is stopped, so a
sample before it registered or after its process ended sees what the others around it see. The
test reads the agent's sample count just before and just after each change (a few calls apart),
so it knows which samples certainly saw which values; a sample taken in between may have seen
either. The expected mean is therefore an interval: each such sample counted at the lower, then
at the higher of its two possible values. The agent's mean must lie in it; the peak is exact.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from typing import List, Optional, Sequence, Tuple

import pytest

from remote_agent.gpu.backend import MIG_UTIL_NOTE
from remote_agent.jobs import usage
from remote_agent.simload import util_at_time
from tests.conftest import REPO
from tests.test_job_supervision import read_log, wait_until
from tests.test_jobs import daemon_pid, simload, wait_job

FAST = ("--usage-sample-s", "0.5")


def job_usage(agent, job_id: str) -> Optional[dict]:
    return agent.call("job.get", job=job_id)["usage"]


def count(agent, job_id: str) -> int:
    return (job_usage(agent, job_id) or {}).get("samples", 0)


def samples_beyond(agent, job_id: str, n: int) -> int:
    """Wait until the job has more than ``n`` samples; their count then."""
    return wait_until(lambda: count(agent, job_id) > n and count(agent, job_id),
                      "more than %d samples" % n)


def registered_pid(state: str, job_id: str) -> int:
    """The pid simload registered with the simulator (its log says it once it has)."""
    found = wait_until(lambda: re.search(r"simload: pid (\d+) on \S+ using",
                                         read_log(state, job_id)), "the job to register")
    return int(found.group(1))


def daemon_log(state: str) -> str:
    with open(os.path.join(state, "daemon.log")) as f:
        return f.read()


ZERO = {"memory": 0, "util": 0}


class Timeline:
    """Which samples saw which values ({"memory", "util"}), from the sample counts read around
    each change; the job starts and ends at ZERO."""

    def __init__(self, agent, job_id: str):
        self.agent, self.job_id = agent, job_id
        self.segments: List[Tuple[int, Sequence[dict]]] = []  # (samples, what each may see)
        self.seen = 0  # samples accounted for so far
        self.value = ZERO

    def hold(self, at_least: int) -> None:
        """Let at least ``at_least`` more samples see the values in force."""
        n = samples_beyond(self.agent, self.job_id, self.seen + at_least - 1)
        self.segments.append((n - self.seen, (self.value,)))
        self.seen = n

    def change(self, value: dict, apply) -> None:
        before = count(self.agent, self.job_id)
        self.segments.append((before - self.seen, (self.value,)))
        apply()
        after = count(self.agent, self.job_id)
        self.segments.append((after - before, (self.value, value)))
        self.seen, self.value = after, value

    def end(self, final: int) -> None:
        """The job ended with ``final`` samples, at ZERO since the last change."""
        assert self.value == ZERO
        self.segments.append((final - self.seen, (ZERO,)))

    def uncertain(self) -> int:
        return sum(n for n, seen in self.segments if len(seen) > 1)

    def mean_bounds(self, key: str) -> Tuple[float, float]:
        total = sum(n for n, _ in self.segments)
        low = sum(n * min(v[key] for v in seen) for n, seen in self.segments) / total
        high = sum(n * max(v[key] for v in seen) for n, seen in self.segments) / total
        return low, high


def set_values(agent, pid: int, value: dict):
    def apply():
        agent.call("sim.set_process_memory", pid=pid, used_mib=value["memory"])
        if "util" in value:
            agent.call("sim.set_process_util", pid=pid, util=value["util"])
    return apply


def test_a_share_job_usage_follows_its_memory_and_utilisation_and_survives_a_restart(
        start_agent, tmp_path):
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state, *FAST)
    job = agent.call("job.launch", key="k-usage", gpu=0, memory_mib=8000, argv=simload(
        "--mem-mib", "0", "--util", "0", "--util-swing", "0", "--seconds", "300"))
    pid = registered_pid(state, job["id"])
    line = Timeline(agent, job["id"])
    line.hold(1)
    for value in ({"memory": 1000, "util": 30}, {"memory": 3000, "util": 70}):
        line.change(value, set_values(agent, pid, value))
        line.hold(4)

    # the daemon crashes; its successor goes on from the aggregate in the job table
    kept = job_usage(agent, job["id"])
    os.kill(daemon_pid(agent), signal.SIGKILL)
    agent.proc.wait(timeout=10)
    agent = line.agent = start_agent(None, state, *FAST)
    resumed = job_usage(agent, job["id"])
    assert resumed["since"] == kept["since"] and resumed["samples"] >= kept["samples"]
    line.hold(4)
    line.change(ZERO, set_values(agent, pid, ZERO))
    line.hold(1)

    agent.call("job.stop", job=job["id"], grace=5)
    got = wait_job(agent, job["id"])["usage"]
    line.end(got["samples"])
    assert got["since"] == kept["since"] and got["until"] >= resumed["until"]
    assert got["memory_peak_mib"] == 3000
    assert line.uncertain() * 4 <= got["samples"], line.segments  # the interval is narrow
    low, high = line.mean_bounds("memory")
    assert low <= got["memory_mean_mib"] <= high, (got, line.segments)
    assert got["util_samples"] == got["samples"] and got["util_note"] is None
    low, high = line.mean_bounds("util")
    assert low <= got["util_mean"] <= high, (got, line.segments)
    # the ended job keeps its aggregate: job.list says the same
    listed = next(j for j in agent.call("job.list")["jobs"] if j["id"] == job["id"])
    assert listed["usage"] == got


def test_a_mig_job_usage_is_its_instance_memory_and_says_why_it_has_no_utilisation(
        start_agent, tmp_path):
    state = str(tmp_path / "host")
    agent = start_agent("1xA100-80GB:mig", state, *FAST)
    job = agent.call("job.launch", key="k-mig-usage", gpu=0,
                     mig={"profile": "3g.40gb", "start": 4}, argv=simload(
                         "--mem-mib", "0", "--util", "40", "--util-swing", "0",
                         "--seconds", "300"))
    pid = registered_pid(state, job["id"])
    line = Timeline(agent, job["id"])
    line.hold(1)
    for value in ({"memory": 2000}, {"memory": 5000}, ZERO):
        line.change(value, set_values(agent, pid, value))
        line.hold(4)
    agent.call("job.stop", job=job["id"], grace=5)
    got = wait_job(agent, job["id"])["usage"]
    line.end(got["samples"])
    assert got["memory_peak_mib"] == 5000
    assert line.uncertain() * 4 <= got["samples"], line.segments
    low, high = line.mean_bounds("memory")
    assert low <= got["memory_mean_mib"] <= high, (got, line.segments)
    assert (got["util_samples"], got["util_mean"], got["util_note"]) == (0, None, MIG_UTIL_NOTE)


def test_a_failed_utilisation_read_skips_only_utilisation_and_is_logged_once(start_agent,
                                                                           tmp_path):
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state, *FAST)
    job = agent.call("job.launch", key="k-util-fault", gpu=0, memory_mib=8000, argv=simload(
        "--mem-mib", "500", "--util", "20", "--util-swing", "0", "--seconds", "300"))
    registered_pid(state, job["id"])
    n = samples_beyond(agent, job["id"], 0)
    agent.call("sim.fault", function="nvmlDeviceGetProcessUtilization",
               error="NVML_ERROR_UNKNOWN", count=3)
    samples_beyond(agent, job["id"], n + 5)
    agent.call("job.stop", job=job["id"], grace=5)
    got = wait_job(agent, job["id"])["usage"]
    assert got["util_samples"] == got["samples"] - 3  # memory went on being sampled
    assert got["util_note"] == ("NVML did not report it: nvmlDeviceGetProcessUtilization "
                                "failed: Unknown Error (NVML_ERROR_UNKNOWN)")
    log = daemon_log(state)
    assert log.count("GPU 0: its processes' utilisation cannot be read") == 1


def test_the_aggregate_is_the_mean_and_peak_of_its_samples():
    values = [(1000, 30.0), (3000, None), (2500, 70.0), (0, 10.0)]
    got = None
    for i, (memory, util) in enumerate(values):
        got = usage.add(got, 100.0 + i, usage.Sample(memory, util, None if util is not None
                                                     else "why"))
    assert got == usage.Usage(since=100.0, until=103.0, samples=4, memory_peak_mib=3000,
                              memory_mean_mib=pytest.approx(6500 / 4), util_samples=3,
                              util_mean=pytest.approx(110 / 3), util_note="why")
    assert usage.Usage.from_record(got.record()) == got


def test_a_gpu_whose_processes_cannot_be_read_misses_its_samples_only(start_agent, tmp_path):
    state = str(tmp_path / "host")
    agent = start_agent("1xA100-80GB:mig,1xL4", state, *FAST)
    mig = agent.call("job.launch", key="k-on-mig", gpu=0, mig={"profile": "3g.40gb", "start": 4},
                     argv=simload("--mem-mib", "2000", "--seconds", "300"))
    share = agent.call("job.launch", key="k-on-l4", gpu=1, memory_mib=8000,
                       argv=simload("--mem-mib", "1000", "--seconds", "300"))
    samples_beyond(agent, share["id"], 0)
    # from now on GPU 1's processes cannot be read; the MIG job's instance (GPU 0) still can
    agent.call("sim.fault", function="nvmlDeviceGetComputeRunningProcesses",
               error="NVML_ERROR_GPU_IS_LOST", count=1 << 30)
    # once a pass has failed to read it, the watchdog's earlier passes are all written (one
    # thread), and no later pass can sample the share job
    wait_until(lambda: "GPU 1: its processes cannot be read" in daemon_log(state), "the warning")
    stuck = count(agent, share["id"])
    samples_beyond(agent, mig["id"], count(agent, mig["id"]) + 3)
    assert count(agent, share["id"]) == stuck
    agent.call("sim.clear_faults")
    samples_beyond(agent, share["id"], stuck)
    log = daemon_log(state)
    assert log.count("GPU 1: its processes cannot be read") == 1
    assert log.count("GPU 1: its processes can be read again") == 1
    assert "GPU 0: its processes cannot be read" not in log


def test_simload_swings_its_utilisation_as_a_training_loop_would(start_agent, tmp_path):
    agent = start_agent("1xL4", str(tmp_path / "host"))
    agent.call("job.launch", key="k-swing", gpu=0, memory_mib=8000, argv=simload(
        "--mem-mib", "100", "--util", "50", "--util-swing", "30", "--seconds", "300"))
    seen = set()

    def three_values():
        util = agent.call("snapshot")["gpus"][0]["utilization_gpu"]
        if util:  # 0 until it has registered
            seen.add(util)
        return len(seen) >= 3

    wait_until(three_values, "three different utilisations")
    assert all(20 <= u <= 80 for u in seen), seen
    assert [util_at_time(50, 30, s) for s in (0, 7.5, 15, 22.5)] == [50, 80, 50, 20]
    assert util_at_time(90, 30, 7.5) == 100 and util_at_time(10, 30, 22.5) == 0  # clamped


def test_simload_refuses_a_utilisation_out_of_range(tmp_path):
    done = subprocess.run(simload("--mem-mib", "1", "--seconds", "1", "--util", "101"),
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--util must be within 0..100" in done.stderr
    assert "Traceback" not in done.stderr
