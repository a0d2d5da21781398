"""The job runtime's interface: what a runtime needs to start a job, what the shim runs, and the
helpers every kind uses (its CLI, where a container's cgroup is)."""

from __future__ import annotations

import os
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from remote_agent.jobs.env import JobUser
from remote_agent.programs import not_found

PROBE_TIMEOUT_S = 5.0  # a runtime that does not answer its version by then is unusable


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
    job_dir: str = ""  # the job's private directory (0700, the agent's): files the runtime reads
    hami: bool = False  # whether HAMi-core is preloaded in it (its "hami" cap layer)

    def shim_user(self) -> Optional[Dict[str, object]]:
        """The user the shim's child becomes (None: it stays the agent's), for a runtime whose
        processes are the shim's child's (a bare job, apptainer)."""
        if not self.run_as:
            return None
        return {"name": self.user.name, "uid": self.user.uid, "gid": self.user.gid}


# Where HAMi-core keeps the region its processes count their memory in: by default the file
# /tmp/cudevshr.cache, one for every process that preloads it on the host, whatever its user.
HAMI_REGION = "CUDA_DEVICE_MEMORY_SHARED_CACHE"


@dataclass(frozen=True)
class ShimLaunch:
    """What the shim runs: its argv, environment, cwd and user; ``cgroup`` the one its child
    joins before it execs (None: it joins none, a container gets its cgroup from the runtime);
    ``files`` (path -> content) written 0600 in the job's directory before the shim starts, for
    what the runtime reads that must not be on its command line (every local user reads that);
    ``region_env`` the variable through which the job gets a HAMi-core region of its own, which
    the shim's child makes as the job's user (``HAMI_REGION``, as the runtime passes it on);
    ``passed`` the words of ``argv`` (by index) that name one of ``files``, which the shim's
    child opens in the job's folder (no link followed) and gives on by its descriptor
    (/dev/fd/N in that word): a runtime running as the agent never reads it by its name, which
    a job of the agent's user could swap for a link to a file of the agent's."""

    argv: List[str]
    env: Dict[str, str]
    cwd: str
    user: Optional[Dict[str, object]]
    cgroup: Optional[str]
    files: Dict[str, bytes] = field(default_factory=dict)
    region_env: Optional[str] = None
    passed: Dict[int, str] = field(default_factory=dict)


class Runtime(ABC):
    """One kind of job runtime. The defaults are a runtime whose processes all stay in the
    shim's child's session and cgroup (a bare process, apptainer)."""

    kind = "process"
    has_container = False  # whether it keeps a named container to signal and remove

    @abstractmethod
    def launch(self, run: JobRun) -> ShimLaunch:
        """What the shim runs for this job."""

    def env_problem(self, env: Dict[str, str]) -> Optional[str]:
        """Why a job's own variables ``env`` cannot be given to its processes this way, or
        None where they can (a bare process takes any)."""
        return None

    def image_problem(self, image: str, run_as: bool) -> Optional[str]:
        """Why this runtime may not run ``image`` for the job (``run_as``: one run as a user,
        not the agent's own), or None where it may (a runtime that reads the image as the
        job's user may run any)."""
        return None

    def cgroup_parent_problem(self, cgroup: str) -> Optional[str]:
        """Why its processes would not go into the job's ``cgroup`` (where the driver's limit
        is), or None where they do."""
        return None

    def cgroup(self, name: str) -> Tuple[Optional[str], Optional[str], Optional[str]]:
        """(the host directory of the running container ``name``'s own cgroup, None, None)
        once it runs; (None, None, None) where it is not running yet, gone, or the runtime's
        processes stay in the job's session; (None, why, None) where its cgroup is one that
        can never be taken as the container's own; (None, None, what failed) where the runtime
        could not say (its answer failed, and not for want of a container of that name)."""
        return None, None, None

    def signal(self, name: str, sig: int) -> Optional[str]:
        """Send ``sig`` to the container ``name`` through the runtime (nothing for a bare job);
        what failed and why where the runtime failed, else None."""
        return None

    def not_there(self, why: str) -> bool:
        """Whether ``why``, a failed ``signal``, is the runtime saying it has no container of
        that name: one not made yet (its client still pulling the image or creating it) or one
        gone; only the caller can tell which."""
        return False

    def remove(self, name: str) -> Optional[str]:
        """Remove what the runtime keeps of an ended job (its container), whatever its state,
        and whether or not it is there: None once it is gone, else what failed and why."""
        return None

    def containers(self, prefix: str) -> Tuple[List[str], Optional[str]]:
        """(the names of the containers the runtime has, running or not, that start with
        ``prefix``, None), or ([], what failed and why)."""
        return [], None

    def clients(self, prefix: str) -> Dict[int, str]:
        """The runtime's clients that run for a container whose name starts with ``prefix``:
        pid -> the container's name (none for a runtime that names no container)."""
        return {}


class ContainerRuntime(Runtime):
    """A container runtime: a program the host may or may not have (a bare process needs
    none), probed when the daemon starts."""

    @abstractmethod
    def version(self) -> Tuple[Optional[str], Optional[str]]:
        """(its version, None) where it is usable on this host, else (None, why not)."""


def run_tool(argv: List[str], timeout: float = PROBE_TIMEOUT_S) -> Tuple[int, str, str]:
    """A runtime's CLI, run to the end: (exit status, stdout, stderr); 127 where it is not there
    or does not answer in time."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, "", not_found(argv[0])
    except subprocess.TimeoutExpired:
        return 127, "", "%s did not answer in %.0f s" % (" ".join(argv), timeout)
    except OSError as err:
        return 127, "", "cannot run %s: %s" % (argv[0], err.strerror or err)
    return done.returncode, done.stdout.strip(), done.stderr.strip()


def named_clients(prefix: str, proc: str = "/proc") -> Dict[int, str]:
    """The processes of the agent's own user whose command line names a container (``--name
    NAME``) whose name starts with ``prefix``: pid -> NAME. A runtime's client found so needs
    no record of its pid (its shim may have died before any was written), and one still
    pulling the image or making the container is found before the container is. Only the
    agent's user's processes: any user may put those words on a command line of theirs."""
    me, wanted = os.geteuid(), prefix.encode()
    found: Dict[int, str] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(os.path.join(proc, entry)).st_uid != me:
                continue
            with open(os.path.join(proc, entry, "cmdline"), "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue  # it ended meanwhile
        for flag, value in zip(args, args[1:]):
            if flag == b"--name" and value.startswith(wanted):
                found[int(entry)] = value.decode("utf-8", "replace")
                break
    return found


def last_line(text: str) -> str:
    """A CLI's last non-blank line of output (where its error is), or "no message"."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def cgroup_of(pid: int, mounts: str = "/proc/mounts", proc: str = "/proc") -> Optional[str]:
    """The host directory of the cgroup process ``pid`` is in: its v1 ``pids`` hierarchy's on a
    v1 or hybrid host (where container runtimes keep their main hierarchy), else its cgroup v2
    one. None where it cannot be read, or the process is in a root cgroup (never a container's
    own: finding and killing its processes would reach every process of the host)."""
    v1_pids = v2 = None
    try:
        with open(mounts, encoding="utf-8", errors="surrogateescape") as f:  # (as caps's)
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[2] == "cgroup2":
                    v2 = fields[1]
                elif len(fields) > 3 and fields[2] == "cgroup" and \
                        "pids" in fields[3].split(","):
                    v1_pids = fields[1]
        with open(os.path.join(proc, str(pid), "cgroup"), encoding="utf-8",
                  errors="surrogateescape") as f:
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


def container_cgroup(pid: int, agent_pid: int, mounts: str = "/proc/mounts",
                     proc: str = "/proc") -> Tuple[Optional[str], Optional[str]]:
    """(the cgroup of a container's process ``pid``, None), or (None, why) where that cgroup
    holds the agent (``agent_pid``) itself or is above the agent's: a runtime that gives the
    container no cgroup of its own leaves it in the one it was started from, and finding,
    stopping or killing "the container's processes" there would reach the daemon."""
    found = cgroup_of(pid, mounts, proc)
    if found is None:
        return None, None
    agent = cgroup_of(agent_pid, mounts, proc)
    if agent is not None and holds(found, agent):
        return None, ("the container has no cgroup of its own (its processes are in %s, with "
                      "the agent's), so none is recorded: it is stopped through the runtime "
                      "only" % found)
    return found, None


def holds(outer: str, inner: str) -> bool:
    """Whether cgroup directory ``outer`` is ``inner`` or one of its ancestors."""
    outer, inner = outer.rstrip("/"), inner.rstrip("/")
    return inner == outer or inner.startswith(outer + "/")
