"""The real-GPU check, for a session that is lent a GPU machine: one command, read-only for the GPU.

    python3 tools/device_check.py --out DIR [--sim SPEC]

1. The agent on the real NVML backend: ``hello``, ``inventory``, ``snapshot`` — written to
   DIR/inventory.json — and each GPU's health as the snapshot reports it (temperature, power
   draw and limit, ECC counts, throttle reasons, XID events, what NVML does not measure there
   and what failed), printed one GPU a line.
2. The watchdog against a real CUDA process: a PyTorch loop that allocates 256 MiB at a time is
   launched as a job with a 1024 MiB share; the agent must stop it and say why. The job record
   and its log go to DIR/watchdog.json and DIR/watchdog.log.
3. The agent's NVML session stepped out of and started again in one process, as for a GPU reset
   it makes (``GpuBackend.detached``), with no reset inside: the GPUs must read the same after.

It never calls ``mig.*`` and changes no GPU setting. ``--sim SPEC`` runs the same steps on the
simulator (with simload standing in for PyTorch), to check the script itself without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TORCH_LOOP = """
import time, torch
held = []
while True:
    held.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"))
    print("allocated", len(held) * 256, "MiB", flush=True)
    time.sleep(0.5)
"""


class Agent:
    def __init__(self, args: List[str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "remote_agent", "serve", "--stdio",
                                      *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=REPO)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        self.next_id += 1
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": self.next_id,
                                          "method": method, "params": params}).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            reply = json.loads(self.proc.stdout.readline())
            if reply.get("id") == self.next_id:
                return reply

    def close(self) -> None:
        self.call("daemon.shutdown")
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def health_line(gpu: Dict[str, Any]) -> str:
    """One GPU's health from a snapshot record, every field said, none left out."""
    h = gpu.get("health") or {}

    def watts(mw: Any) -> str:
        return "?" if mw is None else "%.1f" % (mw / 1000)

    ecc = h.get("ecc_volatile")
    xids = ", ".join("%d" % e["xid"] for e in h.get("xid") or ()) or "none"
    return ("GPU %s %s: %s °C (slowdown %s °C), %s/%s W, ECC %s, throttle %s, XID %s%s; "
            "unmeasured: %s; errors: %s" % (
                gpu.get("index"), gpu.get("name"), h.get("temperature_c"), h.get("slowdown_c"),
                watts(h.get("power_mw")), watts(h.get("power_limit_mw")),
                "n/a" if ecc is None else "%d corrected %d uncorrected" % (
                    ecc["corrected"], ecc["uncorrected"]),
                ",".join(h["throttle"]) if h.get("throttle") is not None else "?", xids,
                " (%s)" % h["xid_note"] if h.get("xid_note") else "",
                ", ".join(h.get("unmeasured") or ()) or "-",
                "; ".join(h.get("errors") or ()) or "-"))


def session_restarts(sim: str, state: str) -> bool:
    """Step 3: NVML shut down and started again here, the GPUs read before and after."""
    sys.path.insert(0, REPO)
    from remote_agent.gpu.backend import GpuBackend
    if sim:
        from remote_agent.gpu import fake_pynvml as nv
        nv.sim_open(os.path.join(state, "session-check.json"), sim)
    else:
        import pynvml as nv  # type: ignore[no-redef]
    backend = GpuBackend(nv)
    backend.open()
    try:
        before = backend.gpus()
        with backend.detached():
            pass
        after = backend.gpus()
    finally:
        backend.close()
    print("NVML stepped out of and started again: %d GPUs read the same after: %s" % (
        len(after), after == before))
    return after == before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sim", help="dry run on the simulator, e.g. 1xL4")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    state = tempfile.mkdtemp(prefix="fractui-device-check-")
    agent = Agent(["--state-dir", state] + (["--sim", args.sim] if args.sim else []))
    try:
        found = {m: agent.call(m) for m in ("hello", "inventory", "snapshot")}
        with open(os.path.join(args.out, "inventory.json"), "w") as f:
            json.dump(found, f, indent=2)
        hello = found["hello"]
        print(json.dumps(hello.get("result", hello), indent=2))
        for gpu in found["snapshot"].get("result", {}).get("gpus", []):
            print(health_line(gpu))
        gpus = hello.get("result", {}).get("gpus", [])
        target = next((g for g in gpus if not g["mig_mode"]), None)
        if target is None:
            print("no GPU without MIG here: the watchdog check needs one", file=sys.stderr)
            return 1
        argv = ([sys.executable, "-m", "remote_agent.simload", "--mem-mib", "512",
                 "--grow-to", "4096", "--seconds", "8"] if args.sim
                else [sys.executable, "-c", TORCH_LOOP])
        launched = agent.call("job.launch", key="device-check", gpu=target["index"],
                              memory_mib=1024, argv=argv)
        job = launched.get("result") or {}
        deadline = time.time() + 60
        while job.get("state") in ("starting", "running") and time.time() < deadline:
            time.sleep(0.5)
            job = agent.call("job.get", job=job["id"])["result"]
        logs = agent.call("job.logs", job=job["id"], lines=200).get("result", {})
        with open(os.path.join(args.out, "watchdog.json"), "w") as f:
            json.dump({"launch": launched, "job": job}, f, indent=2)
        with open(os.path.join(args.out, "watchdog.log"), "w") as f:
            f.write("\n".join(logs.get("lines", [])) + "\n")
        print("watchdog job: state %s, reason %s" % (job.get("state"), job.get("reason")))
        stopped = job.get("state") == "killed" and "cap" in (job.get("reason") or "")
        restarted = session_restarts(args.sim, state)  # run whatever the watchdog step said
        return 0 if stopped and restarted else 1
    finally:
        agent.close()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
