"""The job runtime's interface: what a runtime needs to start a job, what the shim runs, and the
helpers every kind uses (its CLI, where a container's cgroup is)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from remote_agent.jobs.env import JobUser

PROBE_TIMEOUT_S = 10.0  # a runtime that does not answer its version by then is unusable


@dataclass(frozen=True)
class JobRun:
    """What a runtime needs to start one job."""

    name: str  # the container's name: fractui-<state dir digest>-j<id>
    argv: List[str]
    env: Dict[str, str]  # the job's own variables and its cap layers
    cwd: Optional[str]
    user: JobUser
    run_as: bool  # whether the job asked for ``user`` (else it is the agent's own)
    image: Optional[str]
    devices: List[str] = field(default_factory=list)  # GPU or MIG uuids (real NVML)
    mounts: List[str] = field(default_factory=list)  # host paths it gets at the same path
    read_only: List[str] = field(default_factory=list)  # the same, read-only
    cgroup: Optional[str] = None  # the job's own cgroup, where the host gives it one


@dataclass(frozen=True)
class ShimLaunch:
    """What the shim runs: its argv, environment, cwd and user; ``cgroup`` the one its child
    joins before it execs (None: it joins none, a container gets its cgroup from the runtime)."""

    argv: List[str]
    env: Dict[str, str]
    cwd: str
    user: Optional[Dict[str, object]]
    cgroup: Optional[str]


class Runtime:
    """One kind of job runtime. The defaults are a runtime whose processes all stay in the
    shim's child's session and cgroup (a bare process, apptainer)."""

    kind = "process"
    has_container = False  # whether it keeps a named container to signal and remove

    def launch(self, run: JobRun) -> ShimLaunch:
        raise NotImplementedError

    def version(self) -> Tuple[Optional[str], Optional[str]]:
        """(its version, None) where it is usable on this host, else (None, why not); asked of
        the container kinds (a bare process needs nothing)."""
        raise NotImplementedError

    def takes_cgroup_parent(self) -> bool:
        """Whether its processes go into the job's cgroup (where the driver's limit is)."""
        return True

    def cgroup(self, name: str) -> Optional[str]:
        """The host directory of the running container ``name``'s own cgroup, or None (not
        running yet, gone, or a runtime whose processes stay in the job's session)."""
        return None

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to the container ``name`` through the runtime (nothing for a bare job)."""

    def remove(self, name: str) -> None:
        """Remove what the runtime keeps of an ended job (its container), whatever its state."""


def run_tool(argv: List[str], timeout: float = PROBE_TIMEOUT_S) -> Tuple[int, str, str]:
    """A runtime's CLI, run to the end: (exit status, stdout, stderr); 127 where it is not there
    or does not answer in time."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, "", "%s is not installed (not on the agent's PATH)" % argv[0]
    except subprocess.TimeoutExpired:
        return 127, "", "%s did not answer in %.0f s" % (" ".join(argv), timeout)
    except OSError as err:
        return 127, "", "cannot run %s: %s" % (argv[0], err.strerror or err)
    return done.returncode, done.stdout.strip(), done.stderr.strip()


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def cgroup_of(pid: int, mounts: str = "/proc/mounts", proc: str = "/proc") -> Optional[str]:
    """The host directory of the cgroup process ``pid`` is in: its v1 ``pids`` hierarchy's on a
    v1 or hybrid host (where container runtimes keep their main hierarchy), else its cgroup v2
    one. None where it cannot be read, or the process is in a root cgroup (never a container's
    own: finding and killing its processes would reach every process of the host)."""
    v1_pids = v2 = None
    try:
        with open(mounts, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[2] == "cgroup2":
                    v2 = fields[1]
                elif len(fields) > 3 and fields[2] == "cgroup" and \
                        "pids" in fields[3].split(","):
                    v1_pids = fields[1]
        with open(os.path.join(proc, str(pid), "cgroup"), encoding="utf-8") as f:
            entries = [line.rstrip("\n").split(":", 2) for line in f]
    except OSError:
        return None
    paths = {ctl: path for _num, ctls, path in entries for ctl in (ctls or "").split(",")}
    if v1_pids and paths.get("pids"):
        base, rel = v1_pids, paths["pids"]
    elif v2 and "" in paths:
        base, rel = v2, paths[""]
    else:
        return None
    folder = os.path.join(base, rel.lstrip("/"))
    if rel.strip("/") == "" or not os.path.exists(os.path.join(folder, "cgroup.procs")):
        return None
    return folder
