"""Host agent benchmark: job launch latency, the daemon's idle CPU use, a followed log's rate.

    python benchmarks/agent.py [--launches 50] [--jobs 20] [--idle-seconds 30]
                               [--follow-mib 32] [--record]

Runs a simulated host (the real bridge, daemon and shims, the sim GPU backend) and measures:
- launch -> running: from sending ``job.launch`` to its reply, which comes once the job's process
  has started (state running);
- the daemon's CPU use while 20 jobs run and nothing else happens, over the given seconds,
  from /proc (user + system time), with no client subscribed and with one subscribed. Each job
  holds 50 MiB of its GPU, so every watchdog pass matches 20 GPU processes to their jobs;
- a followed log's rate: a job writes ``--follow-mib`` MiB of 1 KiB lines as fast as it can
  while this client follows it (``job.logs`` with ``follow``) and reads all of it through the
  bridge, from the first of its bytes this client read to the last.
``--record`` writes the table into docs/benchmarks.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.record import machine, record_section  # noqa: E402


class Bridge:
    def __init__(self, state_dir: str, spec: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remote_agent", "serve", "--stdio", "--state-dir", state_dir,
             "--sim", spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> Any:
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            reply = json.loads(self.proc.stdout.readline())
            if reply.get("id") == self.next_id:
                break
        if "error" in reply:
            raise RuntimeError(reply["error"]["message"])
        return reply["result"]

    def follow(self, job: str, size: int) -> float:
        """Seconds from the first of the job's bytes pushed to this client to the last of
        ``size``."""
        self.call("job.logs", job=job, lines=0, follow=True)
        got, first = 0, None
        while got < size:
            msg = json.loads(self.proc.stdout.readline())
            if msg.get("method") == "log" and msg["params"].get("job") == job:
                first = first or time.perf_counter()
                got += len(msg["params"].get("data", ""))
        return time.perf_counter() - first

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: List[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def idle_cpu(pid: int, seconds: float) -> float:
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - start)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    state = tempfile.mkdtemp(prefix="fractui-bench-")
    bridge = Bridge(state, "2xL40S")
    # each job holds GPU memory as a CUDA program would (registered with the simulator), at a
    # steady utilisation (no swing: the simulator's state is not rewritten every second)
    workload = [sys.executable, "-m", "remote_agent.simload", "--mem-mib", "50", "--seconds",
                "3600", "--util-swing", "0"]
    try:
        version = bridge.call("daemon.version")
        daemon = version["pid"]
        latencies = []
        for n in range(args.launches):
            t0 = time.perf_counter()
            job = bridge.call("job.launch", key="bench-%d" % n, gpu=n % 2, memory_mib=100,
                              argv=workload)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert job["state"] == "running"
            if n >= args.jobs:
                bridge.call("job.stop", job=job["id"], grace=0)
        time.sleep(2)  # let the stops settle
        running = [j for j in bridge.call("job.list")["jobs"] if j["state"] == "running"]
        assert len(running) == args.jobs, len(running)
        quiet = idle_cpu(daemon, args.idle_seconds)
        bridge.call("subscribe")
        watched = idle_cpu(daemon, args.idle_seconds)
        bridge.call("unsubscribe")
        follow_s = followed(bridge, state, args.follow_mib << 20)
        return {"launches": args.launches, "median_ms": statistics.median(latencies),
                "p95_ms": percentile(latencies, 95), "jobs": len(running),
                "seconds": args.idle_seconds, "idle_cpu": quiet, "subscribed_cpu": watched,
                "follow_mib": args.follow_mib, "follow_mb_s": (args.follow_mib << 20) / 1e6 /
                follow_s,
                "tracking": version["job_tracking"],
                "host_processes": sum(name.isdigit() for name in os.listdir("/proc"))}
    finally:
        for job in bridge.call("job.list")["jobs"]:
            if job["state"] == "running":
                bridge.call("job.stop", job=job["id"], grace=0)
        time.sleep(1)
        bridge.call("daemon.shutdown")
        bridge.close()
        shutil.rmtree(state, ignore_errors=True)


def followed(bridge: Bridge, state: str, size: int) -> float:
    """Seconds a followed job's ``size`` bytes of output took to reach the client: the job
    waits for the follow to begin, then writes them at once."""
    go = os.path.join(state, "go")
    writer = [sys.executable, "-c", "import os, sys, time\nwhile not os.path.exists(%r):\n"
              "    time.sleep(0.01)\nline = 'x' * 1023 + '\\n'\nfor _ in range(%d):\n"
              "    sys.stdout.write(line)\nsys.stdout.flush()\ntime.sleep(600)" % (
                  go, size // 1024)]
    job = bridge.call("job.launch", key="bench-follow", gpu=0, memory_mib=10, argv=writer)
    threading.Timer(0.5, lambda: open(go, "w").close()).start()
    try:
        return bridge.follow(job["id"], size)
    finally:
        bridge.call("job.stop", job=job["id"], grace=0)


def table(r: Dict[str, Any]) -> str:
    return "\n".join([
        "| measure | result | target |",
        "|---|---|---|",
        "| launch -> running, median (%d launches) | %.1f ms | <= 150 ms |" % (
            r["launches"], r["median_ms"]),
        "| launch -> running, p95 | %.1f ms | |" % r["p95_ms"],
        "| daemon CPU, %d jobs, idle, %ds, no subscriber | %.2f %% of one core | <= 1 %% |" % (
            r["jobs"], r["seconds"], r["idle_cpu"]),
        "| daemon CPU, %d jobs, idle, %ds, one subscriber | %.2f %% of one core | |" % (
            r["jobs"], r["seconds"], r["subscribed_cpu"]),
        "| a followed log, %d MiB written at once, to the client | %.1f MB/s | |" % (
            r["follow_mib"], r["follow_mb_s"]),
    ])


def notes(r: Dict[str, Any]) -> str:
    """What the figures depend on beyond the code: how the daemon finds a job's processes."""
    how = ("each job in a cgroup of its own, its processes read from it" if r["tracking"] ==
           "cgroup" else "no cgroup per job here (job tracking \"session\"): a watchdog pass "
           "reads from /proc only the processes NVML lists on the jobs' GPUs (and a job's "
           "first process where it is not one of them), not every process of the host (%d "
           "during the run)" %
           r["host_processes"])
    return ("Simulated host (2 x L40S, sim backend); jobs are real processes under real shims; "
            "%s. Each job holds 50 MiB of its GPU (a simload process registered with the "
            "simulator). The simulated NVML's own work is part of the figure: at each call "
            "that lists or sums a GPU's processes it polls a pidfd of each process registered "
            "on that GPU (a /proc read where pidfds are missing), and its event wait looks for "
            "XID events every 0.25 s (a real one sleeps in the driver).\n" % how)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--follow-mib", type=int, default=32)  # within the log cap
    parser.add_argument("--record", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args()
    if args.launches < args.jobs:
        parser.error("--launches must be at least --jobs")
    result = run(args)
    text = table(result)
    print(text)
    if args.record:
        record_section("Host agent (benchmarks/agent.py)", text + "\n\n" + notes(result),
                       machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
