"""tools/device_check.py is run rarely (only where a GPU is lent): a dry run keeps it working."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_the_device_check_runs_end_to_end_on_the_simulator(tmp_path):
    done = subprocess.run([sys.executable, "tools/device_check.py", "--out", str(tmp_path),
                           "--sim", "1xL4"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads((tmp_path / "inventory.json").read_text())
    assert found["inventory"]["result"]["gpus"][0]["name"] == "NVIDIA L4"
    assert "GPU 0 NVIDIA L4: 30 °C (slowdown 92 °C), 9.0/72.0 W, ECC 0 corrected 0 uncorrected, " \
        "throttle gpu_idle, XID none" in done.stdout
    job = json.loads((tmp_path / "watchdog.json").read_text())["job"]
    assert job["state"] == "killed" and job["reason"].startswith("exceeded its 1024 MiB cap")
    assert (tmp_path / "watchdog.log").read_text().startswith("simload: pid")
