"""The real-GPU check, for a session lent a GPU machine: one command that changes no GPU setting.

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
4. What a job used, as the agent samples it each second: a PyTorch loop of matrix products
   for 20 s inside a 2048 MiB share must end by itself, its usage record holding its memory peak
   (at most its share) and a mean SM utilisation above 0 (DIR/usage.json).
5. The framework layer against the watchdog: a JAX loop that allocates 64 MiB at a time in a
   2048 MiB share, with the environment the agent gives it (``XLA_PYTHON_CLIENT_MEM_FRACTION``),
   must be stopped by JAX's own out-of-memory error (the job exits 3, having said so) before the
   watchdog kills it: a job that keeps to its framework's limit must not be killed
   (DIR/framework.json). Skipped on the simulator, which has no JAX to run.
6. The simulator held to the GPU: the same read-only NVML calls (the model's facts, every MIG
   profile's info and placements, the errors a GPU without MIG mode answers) made on GPU 0 and
   on a simulated GPU of the same model, side by side in DIR/fake_vs_real.json; each difference
   is printed. Values that move (temperature, power, clocks) are not compared.
7. The MPS layer, where the host has NVIDIA's MPS control daemon: the check starts one of its own
   (pipes and logs in its temporary folder), runs a second agent with ``--mps`` and launches a
   PyTorch loop that allocates 128 MiB at a time in a 1024 MiB share. The agent must offer the
   ``mps`` layer, MPS's limit must stop the loop (PyTorch's out-of-memory error: the job exits 3)
   before the watchdog does, and NVML must never have counted the job above its share
   (DIR/mps.json). The MPS server stays after its client: once the client has left, the GPU
   must list it, tagged as the jobs' (``service`` "mps"), and a job given the whole GPU (a share
   of all its memory) must start and end beside it. The daemon is told to quit after. Skipped
   on the simulator and where there is no ``nvidia-cuda-mps-control``.

Before them it records the machine (kernel, Python, the pynvml package, nvidia-smi's view) in
DIR/environment.json; during step 2 it records each half-second what the agent's snapshot lists
on the GPU beside the job's pid (DIR/watchdog.json ``polls``), so a watchdog that did not stop
the job shows why (a process NVML lists under another pid namespace, say). A job still running
when the check gives up is stopped, and step 7's MPS daemon is told to quit after its job is
stopped, so the check leaves nothing on the GPU.

It never calls ``mig.*`` and changes no GPU setting: on a driver that takes per-cgroup memory
limits (its ``nvmlDeviceGetMemoryLimits_v1`` answers) the agent runs with ``--cgroup-parent none``,
so that no limit is set on a job's cgroup. ``--sim SPEC`` runs the same steps on the
simulator (with simload standing in for PyTorch), to check the script itself without a GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the agent's own code, which a GPU machine has not installed

TORCH_LOOP = """
import time, torch
held = []
while True:
    held.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"))
    print("allocated", len(held) * 256, "MiB", flush=True)
    time.sleep(0.5)
"""

TORCH_BUSY = """
import time, torch
a = torch.randn(4096, 4096, device="cuda")
end = time.time() + 20
while time.time() < end:
    b = a @ a
    torch.cuda.synchronize()
print("busy for 20 s", flush=True)
"""


class Agent:
    def __init__(self, args: List[str], env: Optional[Dict[str, str]] = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "remote_agent", "serve", "--stdio",
                                      *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=REPO, env=env)
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


def command_output(argv: List[str]) -> str:
    """A command's output, or why there is none (a check records what it could not read)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return "not run: %s" % err
    return (done.stdout + done.stderr).strip() + ("" if done.returncode == 0
                                                  else " (exit %d)" % done.returncode)


def environment() -> Dict[str, Any]:
    """What the results depend on: kernel, Python, the pynvml package, the driver's own view."""
    try:
        from importlib.metadata import version
        pynvml_version = version("nvidia-ml-py")
    except Exception as err:  # any failure to read it is itself the finding
        pynvml_version = "unknown: %s" % err
    return {
        "kernel": platform.release(), "python": sys.version.split()[0],
        "nvidia-ml-py": pynvml_version,
        "pidfd_open": hasattr(os, "pidfd_open") and _pidfd_works(),
        "nvidia-smi": command_output(["nvidia-smi", "--query-gpu=index,name,driver_version,"
                                      "memory.total,mig.mode.current,compute_mode",
                                      "--format=csv"]),
    }


def _pidfd_works() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


def watch_job(agent: "Agent", job: Dict[str, Any], gpu: int,
              seconds: float) -> List[Dict[str, Any]]:
    """Poll the job until it ends or ``seconds`` pass; each poll: its state and pid, and the
    processes the snapshot lists on its GPU (pid and MiB)."""
    polls: List[Dict[str, Any]] = []
    deadline = time.time() + seconds
    while job.get("state") in ("starting", "running") and time.time() < deadline:
        time.sleep(0.5)
        job.update(agent.call("job.get", job=job["id"])["result"])
        listed = gpu_record(agent, gpu).get("processes")
        polls.append({"t": round(time.time(), 2), "state": job.get("state"),
                      "pid": job.get("pid"), "gpu_processes": listed})
    return polls


def gpu_record(agent: "Agent", gpu: int) -> Dict[str, Any]:
    """GPU ``gpu``'s record in the agent's snapshot now ({} where it lists none)."""
    return next((g for g in agent.call("snapshot").get("result", {}).get("gpus", [])
                 if g.get("index") == gpu), {})


def watch_or_stop(agent: "Agent", job: Dict[str, Any], gpu: int, seconds: float
                  ) -> Tuple[List[Dict[str, Any]], bool]:
    """``watch_job``, and a job still running after ``seconds`` (or when the watch itself
    failed) stopped, so nothing of it stays on the GPU: (the polls, whether it was stopped)."""
    polls: List[Dict[str, Any]] = []
    try:
        polls += watch_job(agent, job, gpu, seconds)
    finally:
        gave_up = job.get("state") in ("starting", "running")
        if gave_up:
            agent.call("job.stop", job=job["id"], grace=5, reason="device check gave up")
            polls += watch_job(agent, job, gpu, 20)
    return polls, gave_up


def session_restarts(sim: str, state: str) -> bool:
    """Step 3: NVML shut down and started again here, the GPUs read before and after."""
    from remote_agent.gpu.backend import GpuBackend
    from remote_agent.text import count
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
    print("NVML stepped out of and started again: %s read the same after: %s" % (
        count(len(after), "GPU"), after == before))
    return after == before


def _plain(value: Any) -> Any:
    """An NVML answer as JSON: structures by their fields, arrays as lists, bytes as text."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, ctypes.Structure):
        return {name: _plain(getattr(value, name)) for name, *_ in value._fields_}
    if isinstance(value, (list, tuple, ctypes.Array)):
        return [_plain(v) for v in value]
    return value


def _placements(nv: Any, h: Any, profile_id: int) -> List[List[int]]:
    count = ctypes.c_uint(0)
    nv.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, None, ctypes.byref(count))
    array = (nv.c_nvmlGpuInstancePlacement_t * max(count.value, 1))()
    count.value = len(array)
    nv.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, array, ctypes.byref(count))
    return [[int(array[i].start), int(array[i].size)] for i in range(count.value)]


def _gpu_instances(nv: Any, h: Any, profile_id: int) -> int:
    array = (nv.c_nvmlGpuInstance_t * 8)()
    count = ctypes.c_uint(len(array))  # in: the array's room; out: how many
    nv.nvmlDeviceGetGpuInstances(h, profile_id, array, ctypes.byref(count))
    return count.value


# Answers that depend on how the GPU sits in its host (NVLink wired or not, a VM's PCIe view),
# not on its model: shown side by side, not counted as the simulator's faults. In a VM with one
# H200 and no NVLink exposed they were NOT_SUPPORTED, NOT_SUPPORTED and P2P status 5.
OF_THE_HOST = ("nvlink 0 state", "topology with itself", "p2p nvlink with itself")


def nvml_answers(nv: Any) -> Dict[str, Any]:
    """GPU 0's answers to read-only calls whose answer is a fact of the model and its mode,
    each a value or the NVMLError's class name."""
    h = nv.nvmlDeviceGetHandleByIndex(0)
    calls: Dict[str, Any] = {
        "name": lambda: nv.nvmlDeviceGetName(h),
        "memory total": lambda: nv.nvmlDeviceGetMemoryInfo(h).total,
        "mig mode": lambda: nv.nvmlDeviceGetMigMode(h),
        "max mig devices": lambda: nv.nvmlDeviceGetMaxMigDeviceCount(h),
        "enforced power limit": lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h),
        "slowdown threshold": lambda: nv.nvmlDeviceGetTemperatureThreshold(
            h, nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
        "volatile ECC corrected": lambda: nv.nvmlDeviceGetTotalEccErrors(
            h, nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_VOLATILE_ECC),
        "running processes": lambda: nv.nvmlDeviceGetComputeRunningProcesses(h),
        "process utilization": lambda: nv.nvmlDeviceGetProcessUtilization(h, 0),
        "mig device 0": lambda: nv.nvmlDeviceGetMigDeviceHandleByIndex(h, 0) and "a handle",
        "gpu instance id": lambda: nv.nvmlDeviceGetGpuInstanceId(h),
        "nvlink 0 state": lambda: nv.nvmlDeviceGetNvLinkState(h, 0),
        "topology with itself": lambda: nv.nvmlDeviceGetTopologyCommonAncestor(h, h),
        "p2p nvlink with itself": lambda: nv.nvmlDeviceGetP2PStatus(
            h, h, nv.NVML_P2P_CAPS_INDEX_NVLINK),
        "supported event types": lambda: nv.nvmlDeviceGetSupportedEventTypes(h),
        "mig instance profile info, v1": lambda: nv.nvmlDeviceGetGpuInstanceProfileInfo(
            h, nv.NVML_GPU_INSTANCE_PROFILE_1_SLICE, 1),
    }
    for const in range(nv.NVML_GPU_INSTANCE_PROFILE_COUNT):
        calls["profile %d info" % const] = (
            lambda c=const: nv.nvmlDeviceGetGpuInstanceProfileInfo(h, c))
    out: Dict[str, Any] = {}
    for label, call in calls.items():
        try:
            out[label] = _plain(call())
        except nv.NVMLError as err:
            out[label] = type(err).__name__
    for const in range(nv.NVML_GPU_INSTANCE_PROFILE_COUNT):
        info = out["profile %d info" % const]
        if isinstance(info, dict):
            for label, call in (("placements", _placements), ("instances", _gpu_instances)):
                try:
                    out["profile %d %s" % (const, label)] = call(nv, h, info["id"])
                except nv.NVMLError as err:
                    out["profile %d %s" % (const, label)] = type(err).__name__
    return out


def driver_takes_limits() -> bool:
    """Whether this GPU's driver may take per-cgroup memory limits (r615+), as the agent asks
    it (``caps.driver_refusal``): a binding without the calls or a driver that refuses the
    read-only getter does not."""
    import pynvml as nv
    from remote_agent.gpu.backend import GpuBackend, NvmlCallError
    from remote_agent.jobs.caps import driver_refusal
    if not hasattr(nv, "nvmlDeviceGetMemoryLimits_v1"):
        return False
    backend = GpuBackend(nv)
    try:
        backend.open()
    except NvmlCallError:
        return False  # the agent says why NVML does not start
    try:
        return driver_refusal(backend, "/sys/fs/cgroup") is None
    finally:
        backend.close()


def usage_sampled(agent: "Agent", gpu: int, sim: str, out_dir: str) -> bool:
    """Step 4: a busy job within its share ends by itself, and its usage record says what it
    used: a memory peak above 0 and within the share, a mean SM utilisation above 0."""
    argv = ([sys.executable, "-m", "remote_agent.simload", "--mem-mib", "512", "--seconds", "6",
             "--util", "80"] if sim else [sys.executable, "-c", TORCH_BUSY])
    launched = agent.call("job.launch", key="device-check-usage", gpu=gpu, memory_mib=2048,
                          argv=argv)
    job = dict(launched.get("result") or {})
    watch_job(agent, job, gpu, 60)
    usage = job.get("usage") or {}
    with open(os.path.join(out_dir, "usage.json"), "w") as f:
        json.dump({"launch": launched, "job": job}, f, indent=2)
    print("busy job: state %s, exit code %s, usage %s" % (job.get("state"), job.get("exit_code"),
                                                         json.dumps(usage)))
    return (job.get("state") == "exited" and job.get("exit_code") == 0
            and 0 < usage.get("memory_peak_mib", 0) <= 2048
            and (usage.get("util_mean") or 0) > 0)


JAX_LOOP = """
import jax.numpy as jnp
held = []
try:
    while True:
        held.append(jnp.ones((64 << 20) // 4, dtype=jnp.float32).block_until_ready())
        print("allocated", len(held) * 64, "MiB", flush=True)
except Exception as err:
    print("framework refused:", type(err).__name__, str(err)[:300], flush=True)
    raise SystemExit(3)
"""


TORCH_FILL = """
import time, torch
held = []
try:
    while True:
        held.append(torch.empty(128 << 20, dtype=torch.uint8, device="cuda"))
        print("allocated", len(held) * 128, "MiB", flush=True)
except Exception as err:
    print("framework refused:", type(err).__name__, str(err)[:300], flush=True)
    time.sleep(2)  # still holding what it had: the polls see it at its most
    raise SystemExit(3)
"""


def refused_in_share(agent: "Agent", gpu: int, share: int, code: str, out_file: str,
                     label: str) -> Dict[str, Any]:
    """Run ``code`` (a loop that allocates until refused, then exits 3) in a ``share`` MiB job;
    a job still running after 90 s is stopped. Its record, polls and log go to ``out_file``."""
    launched = agent.call("job.launch", key="device-check-" + label, gpu=gpu, memory_mib=share,
                          argv=[sys.executable, "-c", code])
    job = dict(launched.get("result") or {})
    if "id" not in job:
        print("%s job: not launched: %s" % (label, json.dumps(launched.get("error"))))
        with open(out_file, "w") as f:
            json.dump({"launch": launched}, f, indent=2)
        return {"job": job, "peak": 0}
    polls, _ = watch_or_stop(agent, job, gpu, 90)
    lines = agent.call("job.logs", job=job["id"], lines=400).get("result", {}).get("lines", [])
    peak = max((p.get("used_mib") or 0 for poll in polls for p in poll.get("gpu_processes") or ()
                if p.get("pid") == job.get("pid")), default=0)
    with open(out_file, "w") as f:
        json.dump({"launch": launched, "job": job, "polls": polls, "log": lines,
                   "nvml_peak_mib": peak}, f, indent=2)
    print("%s job: state %s, exit code %s, reason %s, NVML's most for its pid %d MiB; its log "
          "ends: %s" % (label, job.get("state"), job.get("exit_code"), job.get("reason"), peak,
                        " | ".join(lines[-2:])))
    return {"job": job, "peak": peak}


def framework_limit_holds(agent: "Agent", gpu: int, out_dir: str) -> bool:
    """Step 5: JAX, limited by the agent's environment alone, stops itself within its share."""
    job = refused_in_share(agent, gpu, 2048, JAX_LOOP, os.path.join(out_dir, "framework.json"),
                           "framework")["job"]
    return job.get("state") == "exited" and job.get("exit_code") == 3


def mps_limit_holds(gpu: int, state: str, out_dir: str, agent_args: List[str]
                    ) -> Optional[bool]:
    """Step 7: under an MPS daemon of the check's own, the agent's MPS limit stops a PyTorch
    loop within its share, before the watchdog; None (skipped) where there is no MPS."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None or "--sim" in agent_args:
        print("MPS: no nvidia-cuda-mps-control here, or a simulated GPU: step 7 skipped")
        return None
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=os.path.join(state, "mps-pipes"),
               CUDA_MPS_LOG_DIRECTORY=os.path.join(state, "mps-logs"))
    for folder in (env["CUDA_MPS_PIPE_DIRECTORY"], env["CUDA_MPS_LOG_DIRECTORY"]):
        os.makedirs(folder, mode=0o700)
    try:  # the daemon is told to quit whatever happens, once the job (its client) is stopped
        started = subprocess.run([control, "-d"], env=env, capture_output=True, text=True,
                                 timeout=30)
        if started.returncode != 0:
            print("MPS: the control daemon did not start: %s" % (
                started.stdout + started.stderr))
            return False
        agent = Agent(agent_args + ["--mps"], env=env)
        try:
            layers = next((g.get("cap_layers") for g in agent.call("hello").get(
                "result", {}).get("gpus", []) if g.get("index") == gpu), [])
            print("MPS: the agent's layers on GPU %d: %s" % (gpu, ", ".join(layers)))
            done = refused_in_share(agent, gpu, 1024, TORCH_FILL,
                                    os.path.join(out_dir, "mps.json"), "mps")
            whole = whole_gpu_beside_mps_server(agent, gpu)
        finally:
            agent.close()
    finally:
        quit_ = subprocess.run([control], input="quit\n", env=env, capture_output=True,
                               text=True, timeout=30)
        print("MPS: the control daemon told to quit (exit %d)" % quit_.returncode)
    job = done["job"]
    return (quit_.returncode == 0 and "mps" in layers and "mps" in (job.get("caps") or ())
            and job.get("state") == "exited" and job.get("exit_code") == 3
            and 0 < done["peak"] <= 1024 and whole)


def whole_gpu_beside_mps_server(agent: "Agent", gpu: int, patience_s: float = 10) -> bool:
    """Step 7, after its job: once the job's process has left the GPU's list (within
    ``patience_s``), the MPS server it left must be listed there, tagged as the jobs', and a job
    given the whole GPU must start and end beside it."""
    deadline = time.time() + patience_s
    while True:
        record = gpu_record(agent, gpu)
        listed = record.get("processes") or []
        servers = [p.get("service") == "mps" for p in listed]
        if all(servers) or time.time() > deadline:
            break
        time.sleep(0.5)
    print("MPS: after its job, GPU %d lists %s" % (gpu, json.dumps(listed)))
    if not all(servers):
        print("MPS: a process other than the jobs' MPS server is on the GPU: no whole-GPU job")
        return False
    if not servers:
        print("MPS: no process on the GPU is tagged as the jobs' MPS server")
        return False
    launched = agent.call("job.launch", key="device-check-mps-whole", gpu=gpu,
                          memory_mib=record.get("memory_mib"), argv=["true"])
    job = dict(launched.get("result") or {})
    if "id" not in job:
        print("MPS: the whole-GPU job was not launched: %s" % json.dumps(launched.get("error")))
        return False
    watch_or_stop(agent, job, gpu, 30)
    print("MPS: the whole-GPU job: state %s, exit code %s" % (job.get("state"),
                                                             job.get("exit_code")))
    return job.get("state") == "exited" and job.get("exit_code") == 0


def fake_vs_real(sim: str, state: str, out_dir: str) -> int:
    """Step 6: the answers of GPU 0 and of a simulated GPU of its model; the differences."""
    from remote_agent.gpu import fake_pynvml as fake
    from remote_agent.gpu.models import ALIASES
    if sim:
        real = fake
        fake.sim_open(os.path.join(state, "compare.json"), sim)
    else:
        import pynvml as real  # type: ignore[no-redef]
    real.nvmlInit()
    try:
        theirs = nvml_answers(real)
    finally:
        real.nvmlShutdown()
    name = theirs["name"]
    alias = next((a for a, full in ALIASES.items() if full == name), None)
    if alias is None:
        print("fake vs real: the simulator has no model named %r" % name)
        return 1
    fake.sim_open(os.path.join(state, "compare-fake.json"), "1x" + alias)
    fake.nvmlInit()
    try:
        ours = nvml_answers(fake)
    finally:
        fake.nvmlShutdown()
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    with open(os.path.join(out_dir, "fake_vs_real.json"), "w") as f:
        json.dump({"real": theirs, "fake": ours, "differ": differ}, f, indent=2)
    for key in differ:
        print("fake vs real, %s%s: real %s, simulator %s" % (
            key, " (the host's, not the model's)" if key in OF_THE_HOST else "",
            theirs.get(key), ours.get(key)))
    failed = [k for k in differ if k not in OF_THE_HOST]
    print("fake vs real: %d answers compared, %d differ, %d of them the model's" % (
        len(theirs), len(differ), len(failed)))
    return len(failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sim", help="dry run on the simulator, e.g. 1xL4")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    state = tempfile.mkdtemp(prefix="fractui-device-check-")
    try:
        return run_steps(args, state)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def run_steps(args: argparse.Namespace, state: str) -> int:
    """Every step in turn, the agents' state in ``state``: 0 if each passed (or was skipped)."""
    env = environment()
    with open(os.path.join(args.out, "environment.json"), "w") as f:
        json.dump(env, f, indent=2)
    print(json.dumps(env, indent=2))
    no_limits = not args.sim and driver_takes_limits()
    if no_limits:
        print("the driver takes per-cgroup memory limits: jobs get no cgroup here, so that none "
              "is set")
    agent_args = (["--usage-sample-s", "1"] + (["--sim", args.sim] if args.sim else [])
                  + (["--cgroup-parent", "none"] if no_limits else []))
    agent = Agent(["--state-dir", state] + agent_args)
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
        job = dict(launched.get("result") or {})
        polls, left_running = watch_or_stop(agent, job, target["index"], 60)  # cap did not stop it
        logs = agent.call("job.logs", job=job["id"], lines=200).get("result", {})
        with open(os.path.join(args.out, "watchdog.json"), "w") as f:
            json.dump({"launch": launched, "job": job, "left_running": left_running,
                       "polls": polls}, f, indent=2)
        with open(os.path.join(args.out, "watchdog.log"), "w") as f:
            f.write("\n".join(logs.get("lines", [])) + "\n")
        last = polls[-1] if polls else {}
        print("job pid %s; the GPU's processes at the last poll: %s" % (
            job.get("pid"), last.get("gpu_processes")))
        print("watchdog job: state %s, reason %s" % (job.get("state"), job.get("reason")))
        stopped = job.get("state") == "killed" and "cap" in (job.get("reason") or "")
        restarted = session_restarts(args.sim, state)  # run whatever the watchdog step said
        sampled = usage_sampled(agent, target["index"], args.sim, args.out)
        framework = args.sim or framework_limit_holds(agent, target["index"], args.out)
        differ = fake_vs_real(args.sim, state, args.out)
    finally:
        agent.close()
    mps = mps_limit_holds(target["index"], state, args.out,
                          ["--state-dir", os.path.join(state, "mps-agent")] + agent_args)
    passed = stopped and restarted and sampled and framework and not differ and mps is not False
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
