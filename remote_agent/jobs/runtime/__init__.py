"""How a job's processes are started and owned: the job runtime seam.

A job runs under its shim either way; the runtime says what the shim runs. A bare job is its own
program (process.py); a container job is the host's container runtime in the foreground
(``podman run --rm ...``, docker in the same dialect: oci.py; ``apptainer exec``: apptainer.py),
so its output, logs, exit code and exit.json are the shim's as for a bare job. Each runtime also
says how a job's processes are found without the shim (a container's own cgroup, read once it
runs) and how to signal and remove what it started. The kinds are probed when the daemon starts
(``probe``), all at once, each with a short timeout (base.PROBE_TIMEOUT_S), before the daemon
answers: one CLI that hangs costs that timeout once, never the bridge's wait for the daemon; and
reported in ``hello``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from remote_agent.jobs.runtime.apptainer import Apptainer
from remote_agent.jobs.runtime.base import ContainerRuntime, JobRun, Runtime, ShimLaunch, \
    cgroup_of
from remote_agent.jobs.runtime.oci import Oci
from remote_agent.jobs.runtime.process import Process

CONTAINER_KINDS = ("podman", "docker", "apptainer")  # a container job takes the first found
__all__ = ["JobRun", "Runtime", "ShimLaunch", "Runtimes", "cgroup_of", "probe"]


@dataclass
class Runtimes:
    """The runtimes of this host: every container kind, probed once when the daemon starts."""

    kinds: Dict[str, Runtime]
    found: Dict[str, Optional[str]]  # kind -> version, None where it is unusable
    why_not: Dict[str, str]

    def record(self) -> Dict[str, object]:
        """For ``hello``: each kind's version (None where missing) and why it is missing."""
        return {"runtimes": dict(self.found), "runtimes_unavailable": dict(self.why_not)}

    def for_image(self) -> Tuple[Optional[Runtime], str]:
        """The runtime a container job runs with (the first found of CONTAINER_KINDS), or
        (None, why there is none)."""
        for kind in CONTAINER_KINDS:
            if self.found.get(kind):
                return self.kinds[kind], ""
        return None, "the job names an image, but this host has no container runtime (%s)" % (
            "; ".join("%s: %s" % (k, self.why_not[k]) for k in CONTAINER_KINDS
                      if k in self.why_not))

    def get(self, kind: str) -> Runtime:
        return self.kinds[kind]


def probe() -> Runtimes:
    """Every runtime kind and what this host has of it."""
    containers: Dict[str, ContainerRuntime] = {"podman": Oci("podman"), "docker": Oci("docker"),
                                               "apptainer": Apptainer()}
    found: Dict[str, Optional[str]] = {}
    why_not: Dict[str, str] = {}
    with ThreadPoolExecutor(len(CONTAINER_KINDS), thread_name_prefix="probe") as pool:
        answers = list(pool.map(lambda kind: containers[kind].version(), CONTAINER_KINDS))
    for kind, (version, why) in zip(CONTAINER_KINDS, answers):
        found[kind] = version
        if why:
            why_not[kind] = why
    kinds: Dict[str, Runtime] = {"process": Process(), **containers}
    return Runtimes(kinds, found, why_not)
