"""Memory caps for a job, strongest layer first, each probed when the daemon starts.

On a MIG instance the hardware is the cap. On a GPU without MIG a job gets a memory share, held by
whichever of these the host supports — the driver's per-cgroup limit, MPS, HAMi-core — plus
framework settings that are harmless everywhere, and always the NVML watchdog as the backstop.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from remote_agent.daemon.trust import UnsafePath, check_tree
from remote_agent.gpu.backend import NvmlCallError

MPS_PIPE_DEFAULT = "/tmp/nvidia-mps"
# The pipe directory a job is handed where the host's is refused: without one its CUDA library
# would go to MPS_PIPE_DEFAULT; none can ever be made under a device, so it finds no MPS.
NO_MPS_PIPES = "/dev/null/nvidia-mps"
# The directories MPS is reached through, by the variable that moves each, and what they are.
MPS_DIRS = {"CUDA_MPS_PIPE_DIRECTORY": "MPS pipe directory",
            "CUDA_MPS_LOG_DIRECTORY": "MPS log directory"}
MPS_SERVER = b"nvidia-cuda-mps-server"  # the program MPS's control daemon starts per user

# The GPU memory a process's CUDA context holds outside its framework's allocator, measured on an
# H200 (driver 580, CUDA 13): PyTorch 2.11 518 MiB, JAX 0.11 528 to 548 MiB (docs/real-gpu.md). The
# watchdog counts it, as it is the GPU's memory all the same, so a framework limited to the whole
# share was killed before it reached its own limit: the frameworks are given the share less this.
CUDA_CONTEXT_MIB = 640


@dataclass(frozen=True)
class CapSettings:
    """Host cap settings from the admin's config (``mps = true``, ``hami_core_lib``) and the
    cgroup v2 directory jobs get their own cgroups in (None: there is none to use, so no
    driver per-cgroup limits)."""

    mps: bool = False
    hami_core_lib: Optional[str] = None
    cgroup_parent: Optional[str] = None


def cgroup2_mount(mounts: str = "/proc/mounts") -> Optional[str]:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on hybrid hosts).
    A mount's path that is no UTF-8 keeps its bytes (surrogateescape), as every path does."""
    try:
        with open(mounts, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return fields[1]
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class CapProbe:
    """What this host can enforce on a GPU without MIG, and why not where it cannot."""

    layers: List[str]
    unavailable: Dict[str, str] = field(default_factory=dict)


def probe(nv, settings: CapSettings, is_root: bool, no_cgroup: Optional[str] = None,
          driver_refuses: Optional[str] = None) -> CapProbe:
    """``no_cgroup``: why jobs get no cgroup of their own, where ``settings`` has none;
    ``driver_refuses``: why the driver takes no per-cgroup limits (``driver_refusal``)."""
    layers = ["visible_devices"]
    unavailable: Dict[str, str] = {}

    parent = settings.cgroup_parent
    if not hasattr(nv, "nvmlDeviceSetMemoryLimits_v1"):
        unavailable["driver_limit"] = "this NVML has no nvmlDeviceSetMemoryLimits_v1 (driver r615+)"
    elif not is_root:
        unavailable["driver_limit"] = "per-cgroup GPU memory limits need root"
    elif not parent:
        unavailable["driver_limit"] = no_cgroup or "no cgroup v2 hierarchy to put jobs in"
    elif driver_refuses:
        unavailable["driver_limit"] = driver_refuses
    else:
        layers.append("driver_limit")

    untrusted = mps_refusal()
    if not settings.mps:
        unavailable["mps"] = "MPS is not enabled for this host (the host's mps = true enables it)"
    elif untrusted:
        unavailable["mps"] = "mps = true, but another user could stand in for the MPS control " \
                             "daemon: " + untrusted
    elif not os.path.isdir(mps_pipe_dir()):
        unavailable["mps"] = "mps = true, but no MPS control daemon pipe directory at %s" % (
            mps_pipe_dir())
    else:
        layers.append("mps")

    lib = settings.hami_core_lib
    lib_refused = hami_refusal(lib) if lib else None
    if not lib:
        unavailable["hami"] = "no HAMi-core library configured (hami_core_lib)"
    elif lib_refused:
        unavailable["hami"] = lib_refused
    else:
        layers.append("hami")

    layers += ["framework", "watchdog"]
    return CapProbe(layers, unavailable)


def driver_refusal(backend: Any, namespace: str) -> Optional[str]:
    """Why the driver will not take per-cgroup memory limits, asked once with the read-only
    getter: a binding can have the call where the driver does not (nvidia-ml-py 13.615 on a
    580 driver). None where it may: other answers are left to each launch, which says what
    failed in the job's cap notes."""
    nv = backend.nv
    if not hasattr(nv, "nvmlDeviceGetMemoryLimits_v1"):
        return None
    limits = nv.c_nvmlGetMemoryLimits_v1_t()
    limits.nameSpace = os.fsencode(namespace)  # the path's bytes, as the OS has them
    try:
        with backend.held():  # the handle used in the session that fetched it
            if backend.count():
                backend.call("nvmlDeviceGetMemoryLimits_v1", backend.handle(0), limits)
    except NvmlCallError as err:
        if backend.is_error(err, "NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_NOT_SUPPORTED"):
            return "the driver takes no per-cgroup GPU memory limits (%s; r615+ drivers do)" % err
    return None


def mps_pipe_dir() -> str:
    """Where the host's MPS control daemon has its pipes (jobs reach it there)."""
    return os.environ.get("CUDA_MPS_PIPE_DIRECTORY", MPS_PIPE_DEFAULT)


def hami_refusal(lib: str) -> Optional[str]:
    """Why the HAMi-core library ``lib`` is not to be preloaded, or None."""
    if not os.path.isfile(lib):
        return "hami_core_lib %s does not exist" % lib
    refused = refusal(lib, "the HAMi-core library")
    return None if refused is None else "another user could run code in every share job, " \
        "which preloads the library: " + refused


def refused_now(layers: List[str], settings: CapSettings) -> Dict[str, str]:
    """Of the probe's ``layers``, those that reach the host's files (MPS's directories, the
    HAMi-core library) refused at this launch, with why: a file or directory sound when the
    agent started may be changed since, or removed by its owner and made anew by another user
    (in a folder such as /tmp)."""
    refused = {"mps": mps_refusal() if "mps" in layers else None,
               "hami": hami_refusal(settings.hami_core_lib)
               if "hami" in layers and settings.hami_core_lib else None}
    return {layer: why for layer, why in refused.items() if why is not None}


def mps_refusal() -> Optional[str]:
    """Why no job is to reach the daemon's MPS (its pipe or log directory another user could
    change: ``mps_dir_refusal``), or None."""
    return "; ".join(why for why in map(mps_dir_refusal, MPS_DIRS) if why) or None


def mps_dir_refusal(var: str, env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Why the MPS directory ``var`` sets in ``env`` (the daemon's; the pipe directory's default
    where unset) is not to be used: one that another user owns or can write, or reaches through
    a directory or symlink of theirs, lets them stand in for the control daemon, and the jobs'
    memory caps would go through their server; a relative one, which each job would read from
    its own working directory, not the one checked here. None where it is sound, or not there
    (no MPS)."""
    env = os.environ if env is None else env
    path = env.get(var) or (MPS_PIPE_DEFAULT if var == "CUDA_MPS_PIPE_DIRECTORY" else None)
    if path and not os.path.isabs(path):
        return "the %s %s (%s) is not an absolute path: each job would look for it in its own " \
               "working directory" % (MPS_DIRS[var], path, var)
    return refusal(path, "the " + MPS_DIRS[var]) if path else None


def refusal(path: str, what: str) -> Optional[str]:
    """Why the host's ``path`` (``what``), which jobs are handed or put in, cannot be trusted:
    checked as the state dir is (``check_tree``), but it may be root's too. None where it is
    sound, or not there (yet)."""
    try:
        check_tree(path, what, root_may_own=True)
    except UnsafePath as err:
        return str(err)
    return None


def mps_server(pid: int, used_mib: Optional[int]) -> bool:
    """Whether ``pid``, holding ``used_mib`` of a GPU, is the jobs' MPS server: the MPS layer the
    jobs' memory caps run through, which keeps a little of every GPU its clients used (66 MiB on
    an H200) for as long as it runs, clients or none. Its owner is checked before its name (and
    first, so another user's process is not read further): another user's process cannot pass
    for it. One holding more than a CUDA context's worth of a GPU is counted as anyone's: a
    process of the jobs' own user that names itself so cannot hide more than that."""
    if used_mib is None or used_mib > CUDA_CONTEXT_MIB:
        return False
    try:
        with open("/proc/%d/status" % pid, "rb") as f:
            uid = next(int(line.split()[1]) for line in f if line.startswith(b"Uid:"))
        if uid != os.getuid():
            return False
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return os.path.basename(f.read().split(b"\0", 1)[0]) == MPS_SERVER
    except (OSError, ValueError, IndexError, StopIteration):
        return False  # gone, or unreadable: counted as anyone's


def share_env(layers: List[str], settings: CapSettings, gpu_uuids: List[str], memory_mib: int,
              gpu_memory_mib: int, torch_fraction: bool) -> Dict[str, str]:
    """The environment that confines a job to ``memory_mib`` on each of its GPUs without MIG."""
    fraction = min(1.0, memory_mib / float(gpu_memory_mib))
    env = {"CUDA_VISIBLE_DEVICES": ",".join(gpu_uuids)}
    allocator = framework_fraction(memory_mib, gpu_memory_mib)
    if "mps" in layers:
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = ",".join(
            "%d=%dM" % (i, memory_mib) for i in range(len(gpu_uuids)))
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(max(1, int(round(fraction * 100))))
    if "hami" in layers and settings.hami_core_lib:
        env["LD_PRELOAD"] = settings.hami_core_lib
        env["CUDA_DEVICE_MEMORY_LIMIT"] = "%dm" % memory_mib
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = allocator
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if torch_fraction:
        # PyTorch >= 2.14's allocator takes this key; older releases reject unknown keys,
        # so it is set only when the job asks for it.
        env["PYTORCH_CUDA_ALLOC_CONF"] = "per_process_memory_fraction:" + allocator
    return env


def framework_fraction(memory_mib: int, gpu_memory_mib: int) -> str:
    """The fraction of the GPU a framework's allocator may take so that, with the process's CUDA
    context, the job stays within its share: rounded down to four places (steps of 14 MiB on an
    H200); 0 where the share cannot even hold a context."""
    room = max(0, memory_mib - CUDA_CONTEXT_MIB) / float(gpu_memory_mib)
    return "%.4f" % (math.floor(min(1.0, room) * 10000) / 10000)


def applied_layers(layers: List[str], torch_fraction: bool, driver_limit: bool) -> List[str]:
    """The layers a share job gets; the driver limit only where the supervisor could set it."""
    out = [layer for layer in layers if layer != "driver_limit" or driver_limit]
    if torch_fraction:
        out.insert(out.index("framework") + 1, "torch_fraction")
    return out
