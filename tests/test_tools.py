"""tools/device_check.py is run rarely (only where a GPU is lent): a dry run keeps it working."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from tests.conftest import REPO
from tests.test_caps import _running, _stopped


def test_the_device_check_runs_end_to_end_on_the_simulator(tmp_path):
    done = subprocess.run([sys.executable, "tools/device_check.py", "--out", str(tmp_path),
                           "--sim", "1xL4"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads((tmp_path / "inventory.json").read_text())
    assert found["inventory"]["result"]["gpus"][0]["name"] == "NVIDIA L4"
    assert "GPU 0 NVIDIA L4: 30 °C (slowdown 92 °C), 9.0/72.0 W, ECC 0 corrected 0 uncorrected, " \
        "throttle gpu_idle, XID none" in done.stdout
    watched = json.loads((tmp_path / "watchdog.json").read_text())
    job = watched["job"]
    assert job["state"] == "killed" and job["reason"].startswith("exceeded its 1024 MiB cap")
    assert not watched["left_running"]
    # the polls show the job's own pid among the GPU's processes, as the watchdog matched it
    assert any(p["pid"] == job["pid"] for poll in watched["polls"]
               for p in poll["gpu_processes"] or ())
    busy = json.loads((tmp_path / "usage.json").read_text())["job"]
    assert (busy["state"], busy["exit_code"]) == ("exited", 0)
    assert busy["usage"]["memory_peak_mib"] == 512 and busy["usage"]["util_mean"] > 0
    # on the simulator the step compares the simulator with itself: this checks that it runs
    # and what it asks, not the simulator's faithfulness (a real GPU's run does that)
    compared = json.loads((tmp_path / "fake_vs_real.json").read_text())
    assert compared["real"]["name"] == "NVIDIA L4" and compared["differ"] == []
    assert compared["real"]["profile 0 info"] == "NVMLError_NotSupported"  # no MIG on an L4
    assert "fake vs real: %d answers compared, 0 differ" % len(compared["real"]) in done.stdout
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["kernel"] and env["python"] == sys.version.split()[0]
    assert (tmp_path / "watchdog.log").read_text().startswith("simload: pid")
    # a simulated GPU has no MPS: step 7 says it is skipped, and the check passes without it
    assert "step 7 skipped" in done.stdout and not (tmp_path / "mps.json").exists()


def _device_check():
    spec = importlib.util.spec_from_file_location(
        "device_check", os.path.join(REPO, "tools", "device_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_device_checks_whole_gpu_beside_the_mps_server_on_the_simulator(tmp_path, capsys):
    """Step 7's last part, which only a GPU with MPS runs in the check: a whole-GPU job starts
    beside the jobs' MPS server; the check tries none beside anyone else's process, and fails
    where no MPS server is listed."""
    check = _device_check()
    agent = check.Agent(["--state-dir", str(tmp_path / "host"), "--sim", "3xL4"])
    server, other = _running("nvidia-cuda-mps-server"), _running("cat")
    try:
        agent.call("sim.add_process", gpu=0, used_mib=66, pid=server.pid)
        assert check.whole_gpu_beside_mps_server(agent, 0)
        agent.call("sim.add_process", gpu=1, used_mib=66, pid=other.pid)
        assert not check.whole_gpu_beside_mps_server(agent, 1, patience_s=1)
        assert not check.whole_gpu_beside_mps_server(agent, 2)
    finally:
        agent.close()
        _stopped(server, other)
    said = capsys.readouterr().out
    assert "MPS: the whole-GPU job: state exited, exit code 0" in said
    assert "a process other than the jobs' MPS server is on the GPU" in said
    assert "no process on the GPU is tagged as the jobs' MPS server" in said
    assert said.count("whole-GPU job: state") == 1
