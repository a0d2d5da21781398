"""Container jobs through podman or docker, which speak one CLI dialect.

The shim runs ``podman run --rm --init --name fractui-<digest>-j<id> ... IMAGE ARGV`` in the
foreground: the runtime copies the container's output to the shim, and its exit status is the
job's (125-127 where the runtime itself could not start it). ``--init`` puts the runtime's tiny
init at pid 1 of the container, so a SIGTERM reaches the job as it would a bare process (the
kernel drops signals a namespace's pid 1 has no handler for). The job's environment (its own
variables and its cap layers) goes in as ``--env-file``, a file in the job's private directory,
never as ``--env NAME=VALUE``: a process's command line is every local user's to read (``ps``),
its files and environment are not. Nor as a bare ``--env NAME`` with the value in the runtime's
own environment: the runtime itself would read the job's variables (``LD_PRELOAD``, HAMi-core's
among them, ``PATH``, ``DOCKER_HOST``, ``CONTAINERS_CONF``), as the agent's user, root on most
hosts. The file is read line by line (``NAME=VALUE``, the name after leading blanks, ``#`` a
comment, a line at most 64 KiB), so what it cannot hold is refused before the job is recorded
(``env_problem``). Its user as ``--user UID:GID`` (numeric: the image need not know the host's
accounts). podman would also copy the proxy variables of its own environment (the agent's:
``http_proxy`` and the like, credentials included) into every container, which no bare job
inherits (its base environment is an allow-list): ``--http-proxy=false``. (docker's client
sends none of its environment; the proxies of its own config file are the admin's choice.)

Its processes live in the container's own cgroup, found from the container's pid once it runs
and recorded with the job, so the daemon finds them without the shim. With a cgroup of its own
(hosts with cgroup v2 job cgroups) the container's cgroup goes below the job's
(``--cgroup-parent``), where the driver's per-cgroup limit is set.

Security: every container gets ``--security-opt no-new-privileges`` (a setuid binary in a user's
image gains nothing by exec), and a job run as a user also ``--cap-drop all`` (so it is not root
in capabilities either: the runtime's default set would let a uid-0 process inside act as root).

GPUs: on real NVML through CDI for podman (``--device nvidia.com/gpu=UUID``, a GPU or MIG uuid)
and ``--gpus "device=UUID,..."`` for docker (the double quotes are part of the word: docker reads
the flag as CSV, and without them splits the list at its commas). ``NVIDIA_VISIBLE_DEVICES`` is
an ``--env`` after the job's own ``--env-file`` (which both runtimes read first): the job's
uuids for docker, ``void`` for CDI and the simulator, so neither the job's variables nor its
image's ENV widen what NVIDIA's hook gives the container. On the simulator the analogue of a
device node is its state: the directory holding the simulated GPUs' state (FRACTUI_SIM_STATE)
is mounted at the same path, and the variable passed, so a workload in the container registers
with the same host.

The runtime's answers are checked: a failed ``kill`` or ``rm`` is said (the supervisor then
kills what is left in the container's cgroup itself, and asks again to remove it at each pass
until it is gone), a ``kill`` answered "no such container" is told apart (``not_there``: not
made yet, or gone; the supervisor decides which), and only a successful ``info`` is kept. A
container's client is also found without its pid, by the container's name on its command line
(``clients``), and its containers by their names (``containers``): what an ended job left.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from remote_agent.digits import whole
from remote_agent.jobs.caps import cgroup2_mount
from remote_agent.jobs.procs import PID_MOST
from remote_agent.jobs.runtime.base import ContainerRuntime, JobRun, ShimLaunch, \
    container_cgroup, last_line, named_clients, run_tool
from remote_agent.text import said

CALL_TIMEOUT_S = 10.0  # a runtime's command at a job (info, inspect, kill, rm): not at startup
ENV_FILE = "container.env"  # in the job's directory: its variables, for --env-file
GONE = "no such container"  # in what podman and docker say of a container not there
NO_OBJECT = "no such object"  # ... and their ``inspect`` of a name they have nothing of
MAX_ENV_LINE = 65535  # bytes of one NAME=VALUE line: both runtimes read it with Go's bufio.Scanner


# The transports of containers-transports(5) that read an image from the host's own files or
# stores rather than from a registry (docker:, and a bare reference, read a registry).
HOST_TRANSPORTS = ("containers-storage", "dir", "docker-archive", "docker-daemon", "oci",
                   "oci-archive", "ostree", "sif", "tarball")


class Oci(ContainerRuntime):
    """podman, or docker (``tool``): the same commands, the GPU given each one's way."""

    has_container = True

    def __init__(self, tool: str):
        self.kind = tool
        self.tool = tool
        self.manager: Optional[str] = None  # its cgroup manager, once it has answered

    def version(self) -> Tuple[Optional[str], Optional[str]]:
        what = "{{.Client.Version}}" if self.tool == "podman" else "{{.Server.Version}}"
        code, out, err = run_tool([self.tool, "version", "--format", what])
        if code != 0 or not out:
            return None, last_line(err or out)
        return out, None

    def cgroup_parent_problem(self, cgroup: str) -> Optional[str]:
        """Asked of the runtime at a job, not at daemon start (``info`` is slow); only its
        answer is kept, a failure is asked again at the next job. A ``cgroup`` named in bytes
        that are no UTF-8 it cannot take at all: given it, it makes another, named with
        U+FFFD, and runs the container there, outside the driver's limit."""
        if said(cgroup) != cgroup:
            return ("the job's cgroup %s is named in bytes that are no UTF-8, which %s's OCI "
                    "spec (JSON) cannot name: its container would go into another cgroup" % (
                        said(cgroup), self.tool))
        if self.manager is None:
            what = "{{.Host.CgroupManager}}" if self.tool == "podman" else "{{.CgroupDriver}}"
            code, found, err = run_tool([self.tool, "info", "--format", what], CALL_TIMEOUT_S)
            if code != 0 or not found:
                return "%s info failed, so its cgroup manager is unknown: %s" % (
                    self.tool, last_line(err or found))
            self.manager = found
        if self.manager != "cgroupfs":
            return ("%s's %s cgroup manager takes only a slice, not the job's cgroup, as the "
                    "container's cgroup parent" % (self.tool, self.manager))
        return None

    def launch(self, run: JobRun) -> ShimLaunch:
        argv = [self.tool, "run", "--rm", "--init", "--name", run.name,
                "--security-opt", "no-new-privileges"]
        if self.tool == "podman":  # else it copies its own proxy variables into the container
            argv.append("--http-proxy=false")
        if run.run_as:
            argv += ["--user", "%d:%d" % (run.user.uid, run.user.gid), "--cap-drop", "all"]
        files: Dict[str, bytes] = {}
        passed: Dict[int, str] = {}
        if run.env:
            path = os.path.join(run.job_dir, ENV_FILE)
            files[path] = b"".join(env_line(*kv) + b"\n" for kv in sorted(run.env.items()))
            argv += ["--env-file", path]
            passed[len(argv) - 1] = ENV_FILE  # read by its descriptor (``ShimLaunch``)
        # an --env wins over every --env-file (and the image's ENV, below both)
        visible = ",".join(run.devices) if run.devices and self.tool == "docker" else "void"
        argv += ["--env", "NVIDIA_VISIBLE_DEVICES=" + visible]
        if run.cwd:
            argv += ["--workdir", run.cwd]
        for mount in run.mounts:
            argv += ["--volume", "%s:%s" % (mount, mount)]
        for mount in run.read_only:
            argv += ["--volume", "%s:%s:ro" % (mount, mount)]
        if run.devices and self.tool == "podman":
            for uuid in run.devices:
                argv += ["--device", "nvidia.com/gpu=%s" % uuid]
        elif run.devices:
            argv += ["--gpus", '"device=%s"' % ",".join(run.devices)]
        parent = _hierarchy_path(run.cgroup) if run.cgroup and \
            self.cgroup_parent_problem(run.cgroup) is None else None
        if parent:
            argv += ["--cgroup-parent", parent]
        argv += [run.image or "", *run.argv]
        # the runtime's CLI runs as the agent, with the agent's environment (its config, its
        # socket); the job's own environment is only what --env-file gives the container
        return ShimLaunch(argv=argv, env=dict(os.environ), cwd="/", user=None, cgroup=None,
                          files=files, passed=passed)

    def image_problem(self, image: str, run_as: bool) -> Optional[str]:
        """The runtime's CLI runs as the agent (root), so an image it would read from the
        host (an archive, a directory, another storage: containers-transports(5)) is one a
        user's job may not name: it would read what that user could not."""
        transport = image.split(":", 1)[0] if ":" in image else ""
        if not run_as or transport not in HOST_TRANSPORTS:
            return None
        return ("its image %s names the %s: transport, which %s would read from this host as "
                "the agent's user, not as the job's: a job run as a user names its image by "
                "reference (docker.io/library/python:3.12, or docker://...)" % (
                    image, transport, self.tool))

    def env_problem(self, env: Dict[str, str]) -> Optional[str]:
        found = env_file_problem(env)
        return "its variable %s %s" % found if found else None

    def cgroup(self, name: str) -> Tuple[Optional[str], Optional[str], Optional[str]]:
        argv = [self.tool, "inspect", "--format", "{{.State.Pid}}", name]
        code, out, err = run_tool(argv, CALL_TIMEOUT_S)
        if code != 0:
            why = last_line(err or out)
            if NO_OBJECT in why.lower() or self.not_there(why):
                return None, None, None  # not made yet, or gone
            return None, None, "%s failed (exit %d): %s" % (" ".join(argv), code, why)
        pid = whole(out, PID_MOST)
        if not pid:
            return None, None, None  # made, not running (yet)
        return (*container_cgroup(pid, os.getpid()), None)

    def signal(self, name: str, sig: int) -> Optional[str]:
        return self._failure([self.tool, "kill", "--signal", str(sig), name])

    def not_there(self, why: str) -> bool:
        return GONE in why.lower()

    def remove(self, name: str) -> Optional[str]:
        force: List[str] = ["-f", "-t", "0"] if self.tool == "podman" else ["-f"]
        why = self._failure([self.tool, "rm", *force, name])
        return None if why is None or self.not_there(why) else why  # (docker: not there)

    def containers(self, prefix: str) -> Tuple[List[str], Optional[str]]:
        code, out, err = run_tool([self.tool, "ps", "-a", "--filter", "name=" + prefix,
                                   "--format", "{{.Names}}"], CALL_TIMEOUT_S)
        if code != 0:
            return [], "%s ps failed (exit %d): %s" % (self.tool, code, last_line(err or out))
        return [n for n in out.split() if n.startswith(prefix)], None

    def clients(self, prefix: str) -> Dict[int, str]:
        return named_clients(prefix)

    def _failure(self, argv: List[str]) -> Optional[str]:
        """Run the runtime's command: None where it worked, else what failed and why."""
        code, out, err = run_tool(argv, CALL_TIMEOUT_S)
        if code == 0:
            return None
        return "%s failed (exit %d): %s" % (" ".join(argv), code, last_line(err or out))


def env_line(name: str, value: str) -> bytes:
    """``NAME=VALUE`` as the env file holds it: a value of the host's (a path whose name is no
    UTF-8, a variable of the daemon's own environment) keeps its bytes, as exec would pass it
    (docs/decisions.md, "Text the agent says is Unicode")."""
    return ("%s=%s" % (name, value)).encode("utf-8", "surrogateescape")


def env_file_problem(env: Dict[str, str]) -> Optional[Tuple[str, str]]:
    """(a variable's name, why) for the first of ``env`` a runtime's env file cannot hold as
    given, or None: one rule for the agent's launch and fractui's submit of a container job."""
    for name, value in sorted(env.items()):
        if any(c.isspace() for c in name) or name.startswith(("#", "\ufeff")):
            return name[:80], ("cannot be given to a container: a name holding a blank or "
                               "starting with '#' is not read back from its env file as given")
        if "\n" in value or "\r" in value:
            return name[:80], ("cannot be given to a container: its value holds a line break, "
                               "and a container's variables reach it as the lines of a file (so "
                               "no command line shows them); put it in a file the job reads")
        size = len(env_line(name, value))
        if size > MAX_ENV_LINE:
            return name[:80], ("cannot be given to a container: NAME=VALUE is %d bytes, over "
                               "the %d a container runtime reads of one variable; put it in a "
                               "file the job reads" % (size, MAX_ENV_LINE))
    return None


def _hierarchy_path(cgroup: Optional[str]) -> Optional[str]:
    """A job cgroup's path as a runtime's ``--cgroup-parent`` takes it: from its hierarchy's
    root."""
    mount = cgroup2_mount()
    if not cgroup or not mount or not cgroup.startswith(mount.rstrip("/") + "/"):
        return None
    return cgroup[len(mount.rstrip("/")):]


