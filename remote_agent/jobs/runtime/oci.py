"""Container jobs through podman or docker, which speak one CLI dialect.

The shim runs ``podman run --rm --init --name fractui-<digest>-j<id> ... IMAGE ARGV`` in the
foreground: the runtime copies the container's output to the shim, and its exit status is the
job's (125-127 where the runtime itself could not start it). ``--init`` puts the runtime's tiny
init at pid 1 of the container, so a SIGTERM reaches the job as it would a bare process (the
kernel drops signals a namespace's pid 1 has no handler for). The job's environment (its own
variables and its cap layers) goes in as ``--env``; its user as ``--user UID:GID`` (numeric: the
image need not know the host's accounts). Its processes live in the container's own cgroup,
found from the container's pid once it runs and recorded with the job, so the daemon finds them
without the shim. With a cgroup of its own (hosts with cgroup v2 job cgroups) the container's
cgroup goes below the job's (``--cgroup-parent``), where the driver's per-cgroup limit is set.

GPUs: on real NVML through CDI for podman (``--device nvidia.com/gpu=UUID``, a GPU or MIG uuid)
and ``--gpus device=UUID,...`` for docker. On the simulator the analogue of a device node is its
state: the directory holding the simulated GPUs' state (FRACTUI_SIM_STATE) is mounted at the same
path, and the variable passed, so a workload in the container registers with the same host.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

from remote_agent.jobs.caps import cgroup2_mount
from remote_agent.jobs.runtime.base import JobRun, Runtime, ShimLaunch, cgroup_of, first_line, \
    run_tool

SIGNAL_TIMEOUT_S = 10.0


class Oci(Runtime):
    """podman, or docker (``tool``): the same commands, the GPU given each one's way."""

    has_container = True

    def __init__(self, tool: str):
        self.kind = tool
        self.tool = tool
        self.cgroupfs: Optional[bool] = None  # a cgroup parent is a path, not a systemd slice

    def version(self) -> Tuple[Optional[str], Optional[str]]:
        what = "{{.Client.Version}}" if self.tool == "podman" else "{{.Server.Version}}"
        code, out, err = run_tool([self.tool, "version", "--format", what])
        if code != 0 or not out:
            return None, first_line(err or out)
        return out, None

    def takes_cgroup_parent(self) -> bool:
        """Asked of the runtime at its first job, not at daemon start (``info`` is slow)."""
        if self.cgroupfs is None:
            manager = "{{.Host.CgroupManager}}" if self.tool == "podman" else \
                "{{.CgroupDriver}}"
            code, found, _ = run_tool([self.tool, "info", "--format", manager])
            self.cgroupfs = code == 0 and found == "cgroupfs"
        return self.cgroupfs

    def launch(self, run: JobRun) -> ShimLaunch:
        argv = [self.tool, "run", "--rm", "--init", "--name", run.name]
        for key, value in sorted(run.env.items()):
            argv += ["--env", "%s=%s" % (key, value)]
        if run.cwd:
            argv += ["--workdir", run.cwd]
        if run.run_as:
            argv += ["--user", "%d:%d" % (run.user.uid, run.user.gid)]
        for mount in run.mounts:
            argv += ["--volume", "%s:%s" % (mount, mount)]
        for mount in run.read_only:
            argv += ["--volume", "%s:%s:ro" % (mount, mount)]
        if run.devices and self.tool == "podman":
            for uuid in run.devices:
                argv += ["--device", "nvidia.com/gpu=%s" % uuid]
        elif run.devices:
            argv += ["--gpus", "device=%s" % ",".join(run.devices)]
        parent = _hierarchy_path(run.cgroup) if run.cgroup and self.takes_cgroup_parent() \
            else None
        if parent:
            argv += ["--cgroup-parent", parent]
        argv += [run.image or "", *run.argv]
        # the runtime's CLI runs as the agent, with the agent's environment (its config, its
        # socket); the job's own environment is only what --env gives the container
        return ShimLaunch(argv=argv, env=dict(os.environ), cwd="/", user=None, cgroup=None)

    def cgroup(self, name: str) -> Optional[str]:
        code, out, _ = run_tool([self.tool, "inspect", "--format", "{{.State.Pid}}", name])
        if code != 0 or not out.isdigit() or int(out) <= 0:
            return None
        return cgroup_of(int(out))

    def signal(self, name: str, sig: int) -> None:
        run_tool([self.tool, "kill", "--signal", str(sig), name], SIGNAL_TIMEOUT_S)

    def remove(self, name: str) -> None:
        force: List[str] = ["-f", "-t", "0"] if self.tool == "podman" else ["-f"]
        run_tool([self.tool, "rm", *force, name], SIGNAL_TIMEOUT_S)


def _hierarchy_path(cgroup: Optional[str]) -> Optional[str]:
    """A job cgroup's path as a runtime's ``--cgroup-parent`` takes it: from its hierarchy's
    root."""
    mount = cgroup2_mount()
    if not cgroup or not mount or not cgroup.startswith(mount.rstrip("/") + "/"):
        return None
    return cgroup[len(mount.rstrip("/")):]


