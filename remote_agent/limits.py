"""What the agent's host may use: the machine's CPUs and RAM, or less where a cgroup limits them.

Inside a container or a Kubernetes pod the machine's totals are not what jobs can have: the pod's
cgroup caps them (cgroup v2 ``cpu.max`` and ``memory.max``, cgroup v1 ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us`` and ``memory.limit_in_bytes``; hybrid hosts have both). The scheduler books
jobs' CPUs and memory against what ``hello`` reports, so it reports the smaller of the limit and
the machine's, and which one it is. Every reader takes a root path, so tests lay out fake
``/proc`` and cgroup files in a temporary directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple, Union

Number = Union[int, float]


@dataclass(frozen=True)
class CgroupMount:
    """One cgroup hierarchy as /proc/self/mountinfo shows it."""

    point: str  # where it is mounted
    root: str  # which cgroup of the hierarchy that mount point shows (a container sees its own)
    version: int  # 1 or 2
    controllers: FrozenSet[str]  # v1: the controllers it holds (cpu, memory, ...)


@dataclass(frozen=True)
class HostLimits:
    cpus: Number  # CPUs, fractional where a CPU quota is (1.5)
    memory_mib: int
    sources: Dict[str, str]  # "cpus" / "memory_mib" -> where the number comes from


def _unescape(field: str) -> str:
    """mountinfo escapes spaces and the like as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def cgroup_mounts(mountinfo: str) -> List[CgroupMount]:
    out = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 4:
            continue
        fstype, superopts = fields[dash + 1], fields[dash + 3].split(",")
        if fstype == "cgroup2":
            out.append(CgroupMount(_unescape(fields[4]), _unescape(fields[3]), 2, frozenset()))
        elif fstype == "cgroup":
            out.append(CgroupMount(_unescape(fields[4]), _unescape(fields[3]), 1,
                                   frozenset(superopts) - {"rw", "ro"}))
    return out


def cgroup_paths(proc_cgroup: str) -> Dict[str, str]:
    """The process's cgroup per controller (v1) and under "" (v2's single hierarchy)."""
    out: Dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            out[""] = parts[2]
        else:
            for controller in parts[1].split(","):
                out[controller] = parts[2]
    return out


def cgroup_dirs(root: str, mount: CgroupMount, path: str) -> List[str]:
    """The directories of the process's cgroup and its ancestors that the mount shows, deepest
    first: a limit on any of them (a pod's, its container's) applies. Empty when the process is
    outside what the mount shows (a cgroup namespace's ``/..``)."""
    if not path.startswith("/") or ".." in path.split("/"):
        return []
    rel = os.path.relpath(path, mount.root)
    if rel == ".." or rel.startswith("../"):
        return []
    parts = [] if rel == "." else rel.split("/")
    base = os.path.join(root, mount.point.lstrip("/"))
    return [os.path.join(base, *parts[:n]) for n in range(len(parts), -1, -1)]


def _read(path: str) -> Optional[str]:
    """A /proc or cgroup file; a path in it that is no UTF-8 (a mount's, anywhere on the host)
    keeps its bytes (surrogateescape), where its line was the whole file unread."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read().strip()
    except OSError:
        return None


def _v2_cpu(text: str) -> Optional[float]:
    quota, _, period = text.partition(" ")
    if quota == "max":
        return None
    q, p = int(quota), int(period or "100000")
    return q / p if q > 0 and p > 0 else None


def _v2_memory(text: str) -> Optional[float]:
    return None if text == "max" else int(text)


def _v1_memory(text: str) -> Optional[float]:
    return int(text)  # "unlimited" is a huge number: the machine's RAM is smaller


def _v1_cpu(directory: str) -> Optional[float]:
    quota, period = _read(os.path.join(directory, "cpu.cfs_quota_us")), \
        _read(os.path.join(directory, "cpu.cfs_period_us"))
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q >= 0 and p > 0 else None


def _file_reader(name: str, parse: Callable[[str], Optional[float]]) \
        -> Callable[[str], Optional[float]]:
    def read(directory: str) -> Optional[float]:
        text = _read(os.path.join(directory, name))
        if not text:
            return None
        try:
            return parse(text)
        except ValueError:
            return None
    return read


# per resource: (cgroup version, v1 controller, file named in ``sources``, reader of a directory)
_READERS = {
    "cpus": ((2, "", "cgroup cpu.max", _file_reader("cpu.max", _v2_cpu)),
             (1, "cpu", "cgroup cpu.cfs_quota_us", _v1_cpu)),
    "memory_mib": ((2, "", "cgroup memory.max", _file_reader("memory.max", _v2_memory)),
                   (1, "memory", "cgroup memory.limit_in_bytes",
                    _file_reader("memory.limit_in_bytes", _v1_memory))),
}


def cgroup_limit(root: str, resource: str) -> Optional[Tuple[float, str]]:
    """The tightest cgroup limit on ``resource`` ("cpus" in CPUs, "memory_mib" in bytes) of
    this process under ``root``, and the file it comes from; None where no cgroup limits it."""
    mounts = cgroup_mounts(_read(os.path.join(root, "proc/self/mountinfo")) or "")
    paths = cgroup_paths(_read(os.path.join(root, "proc/self/cgroup")) or "")
    best: Optional[Tuple[float, str]] = None
    for version, controller, source, read in _READERS[resource]:
        key = "" if version == 2 else controller
        for mount in mounts:
            if mount.version != version or key not in paths or (
                    version == 1 and controller not in mount.controllers):
                continue
            for directory in cgroup_dirs(root, mount, paths[key]):
                value = read(directory)
                if value is not None and (best is None or value < best[0]):
                    best = (value, source)
    return best


def machine_cpus() -> Tuple[int, str]:
    """The CPUs this process may run on: its affinity (a cpuset) where that is fewer."""
    total = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return total, "machine"
    return (allowed, "cpuset") if 0 < allowed < total else (total, "machine")


def machine_memory_mib() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)


def host_limits(root: str = "/", machine: Optional[Tuple[Tuple[int, str], int]] = None) \
        -> HostLimits:
    """What jobs on this host may use, and where each number comes from. ``machine`` is the
    machine's ((CPUs, source), RAM MiB), read here when not given.

    CPUs are the quota exactly, to a thousandth (the scheduler books milli-CPUs): 1.5, not 2."""
    (cpus, cpu_source), memory_mib = machine or (machine_cpus(), machine_memory_mib())
    sources = {"cpus": cpu_source, "memory_mib": "machine"}
    limit = cgroup_limit(root, "cpus")
    result_cpus: Number = cpus
    if limit is not None and limit[0] < cpus:
        quota = max(round(limit[0], 3), 0.001)  # a sliver of a CPU is not none
        result_cpus = int(quota) if quota == int(quota) else quota
        sources["cpus"] = limit[1]
    memory = cgroup_limit(root, "memory_mib")
    if memory is not None and memory[0] // (1024 * 1024) < memory_mib:
        memory_mib = int(memory[0]) // (1024 * 1024)
        sources["memory_mib"] = memory[1]
    return HostLimits(result_cpus, memory_mib, sources)
