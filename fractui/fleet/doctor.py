"""``fractui doctor``: for each host, every layer checked in order, each with what to fix.

config -> SSH -> host key (over exec: target -> exec) -> python -> agent -> privileges -> NVML ->
resources -> MIG -> cap layers -> runtimes -> lingering -> state dir. A layer that fails stops the
ones that need it (shown as skipped).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from fractui.config import Config, HostConfig, SshSettings
from fractui.fleet.host import SUDO_FIX, SUDO_MISSING, SUDO_MISSING_FIX, HostSession
from fractui.fleet.hostkeys import UntrustedHostKey
from fractui.fleet.sshconfig import SshConfigError, resolve
from fractui.fleet.transport.base import (LoginShellError, Runner, Transport, TransportError,
                                          python_problem)
from fractui.fleet.transport.exec import ExecTransport
from fractui.fleet.transport.kinds import transport_for
from fractui.fleet.zipapp import build_agent_archive
from fractui.words import count
from remote_agent.daemon.trust import python_code

NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb2", "smb3", "smbfs", "fuse.sshfs", "lustre",
                       "gpfs", "ceph", "glusterfs", "fuse.glusterfs", "9p")
# A container's own writable layer: what is written there goes when the container is removed.
CONTAINER_LAYERS = ("overlay", "fuse.fuse-overlayfs")


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: Optional[str] = None

    @property
    def mark(self) -> str:
        return {"ok": " ok ", "warn": "warn", "fail": "FAIL", "skip": "skip"}[self.status]


@dataclass
class Report:
    name: str
    checks: List[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status in ("ok", "warn", "skip") for c in self.checks)

    def add(self, name: str, status: str, detail: str, fix: Optional[str] = None) -> Check:
        check = Check(name, status, detail, fix)
        self.checks.append(check)
        return check

    def record(self) -> Dict[str, Any]:
        return {"name": self.name, "ok": self.ok,
                "checks": [{"name": c.name, "status": c.status, "detail": c.detail,
                            "fix": c.fix} for c in self.checks]}


LATER = ("python", "agent", "privileges", "nvml", "resources", "mig", "cap layers", "runtimes",
         "lingering", "state dir")
LINK = {"ssh": "the SSH link", "exec": "the exec program", "local": "the local agent"}


def diagnose(config: Config, host: HostConfig) -> Report:
    report = Report(host.name)
    report.add("config", "ok", "%s host%s" % (host.transport, (
        " (simulated: %s)" % host.sim) if host.sim else ""))
    transport = transport_for(host, config.ssh)
    step = "python"
    try:
        if not _opened(config, host, transport, report):
            _skip_from(report, "python", "needs %s" % {"ssh": "SSH", "exec": "the exec "
                                                       "program and its target"}[host.transport])
            return report
        if host.transport != "local":  # a local host runs under our own Python
            problem = python_problem(host, transport.run)
            report.add("python", "fail" if problem else "ok", problem or "%s runs the agent" %
                       host.python, "set python = \"/path/to/python3.9+\"" if problem else None)
            if problem:
                return report
        step = "agent"
        hello = _check_agent(config, host, report)
        if hello is not None:
            _check_hello(hello, host, report)
        step = "lingering"
        if host.transport == "exec":
            report.add("lingering", "ok", "no login session over exec: the agent lives as long "
                       "as its container")
        elif host.transport == "local":
            report.add("lingering", "ok", "a local host: no SSH session for the agent to "
                       "outlive")
        else:
            _check_lingering(host, transport.run, report)
        step = "state dir"
        _check_state_dir(host, transport, report)
    except LoginShellError as err:  # the login's shell, not the link: the login to change
        report.add(step, "fail", str(err), "give %s a login shell that runs commands, with rc "
                   "files quiet where there is no terminal, and no forced command (sshd's "
                   "ForceCommand, an authorized_keys command=), or reach the host as another "
                   "user" % (host.user or "the login"))
        _skip_from(report, step, "the login shell ran no command")
    except TransportError as err:  # the link broke under a later check: say so there
        report.add(step, "fail", str(err), "check the host's network and sshd; run fractui "
                   "doctor %s again" % host.name if host.transport == "ssh" else
                   "check that exec reaches the agent; run fractui doctor %s again" % host.name)
        _skip_from(report, step, "%s failed" % LINK[host.transport])
    finally:
        transport.close()
    return report


def _skip_from(report: Report, first: str, why: str) -> None:
    done = {c.name for c in report.checks}
    for name in LATER[LATER.index(first):]:
        if name not in done:
            report.add(name, "skip", why)


def _opened(config: Config, host: HostConfig, transport: Transport, report: Report) -> bool:
    """Open the transport, reporting each layer of it; whether the checks can go on."""
    if host.transport == "ssh":
        return _check_ssh(config, host, transport, report)
    if isinstance(transport, ExecTransport):
        return _check_exec(host, transport, report)
    return True


def _ssh_by_hand(host: HostConfig, ssh: SshSettings) -> str:
    """The ssh command that takes the route fractui took: the config's port, user, key, jump
    hosts and ssh_config file (ssh reads the rest from that file, as fractui does), so what
    its -v says is about this host, not a direct login on port 22 as oneself."""
    words = ["ssh", "-v"]
    if ssh.config_file != SshSettings().config_file:
        words += ["-F", ssh.config_file]
    for flag, value in (("-p", host.port), ("-l", host.user), ("-i", host.identity_file),
                        ("-J", host.proxy_jump)):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words + [host.host or host.name])


def _check_ssh(config: Config, host: HostConfig, transport: Transport,
               report: Report) -> bool:
    from fractui.fleet.link import LinkError  # paramiko: loaded only for an SSH host
    try:
        route = resolve(host, config.ssh.config_file)
    except SshConfigError as err:
        report.add("ssh", "fail", str(err), "fix that line of %s (or the file it names)" %
                   config.ssh.config_file)
        return False
    via = " via " + ", ".join(h.host for h in route.jumps) if route.jumps else ""
    where = "%s@%s:%d%s" % (route.target.user, route.target.host, route.target.port, via)
    try:
        transport.open()
    except UntrustedHostKey as err:
        report.add("ssh", "ok", "reached %s" % where)
        report.add("host key", "fail", str(err), err.fix())
        return False
    except LinkError as err:
        report.add("ssh", "fail", str(err), "check host, port, user and identity_file; "
                   "`%s` shows what ssh itself does" % _ssh_by_hand(host, config.ssh))
        return False
    report.add("ssh", "ok", "reached %s" % where)
    report.add("host key", "ok", "matches %s" % config.ssh.known_hosts)
    return True


def _check_exec(host: HostConfig, transport: ExecTransport, report: Report) -> bool:
    """The target found by exec_target (where there is one), then the exec program."""
    try:
        transport.open()
    except TransportError as err:
        if host.exec_target and transport.target is None:
            report.add("target", "fail", str(err), "run exec_target by hand: it must print "
                       "one line, the pod or container to exec into")
        else:
            report.add("exec", "fail", str(err), "install %s here, or name its full path in "
                       "exec" % transport.prefix[0])
        return False
    if transport.target is not None:
        report.add("target", "ok", "%s (from exec_target)" % transport.target)
    report.add("exec", "ok", "%s found: %s" % (transport.prefix[0], shlex.join(
        transport.prefix)))
    return True


def _check_agent(config: Config, host: HostConfig,
                 report: Report) -> Optional[Dict[str, Any]]:
    session = HostSession(host, config.ssh, build_agent_archive, reconnect_max_s=3600)
    session.start()
    try:
        session.settled.wait(config.ssh.settle_s)
        status = session.status
        if status.state not in ("online", "degraded") or status.hello is None:
            error = status.error or ""
            fix = SUDO_MISSING_FIX if error.startswith(SUDO_MISSING % host.name) else \
                SUDO_FIX if "sudo" in error else (
                    "see the error; the agent logs to %s/daemon.log on the host" % host.state_dir)
            report.add("agent", "fail", status.error or status.state, fix)
            return None
        hello = status.hello
        report.add("agent", "ok", agent_words(hello, host))
        return hello
    finally:
        session.stop()


def agent_words(hello: Dict[str, Any], host: HostConfig) -> str:
    """The agent a host's hello names: its version, protocol and backend."""
    return "agent %s, protocol %s, %s backend%s" % (
        hello["agent_version"], hello["protocol"], hello["backend"], (
            ", from the image (%s)" % host.agent_path) if host.agent == "image" else "")


def _resources(hello: Dict[str, Any]) -> str:
    """What jobs on the host may use, and where each number comes from (a pod's cgroup limits,
    or the machine: docs/kubernetes.md); an older agent does not say where."""
    limits = hello.get("limits") or {}

    def source(key: str) -> str:
        return " (%s)" % limits[key] if key in limits else ""
    cpus = float(hello["cpus"])
    return "%s%s, %d MiB RAM%s: what jobs here may use" % (
        count(cpus, "CPU"), source("cpus"), int(hello.get("memory_mib") or 0),
        source("memory_mib"))


def _check_hello(hello: Dict[str, Any], host: HostConfig, report: Report) -> None:
    privileges = hello.get("privileges") or {}
    mig_capable = [g for g in hello.get("gpus", []) if g.get("mig_capable")]
    # NVML did not start: the agent knows no GPU, so what it lists says nothing of MIG
    no_nvml = hello.get("driver_version") is None and bool(hello.get("problems"))
    if privileges.get("mig_changes"):
        report.add("privileges", "ok", "root" if privileges.get("root") else
                   "MIG changes allowed (simulated host)")
    elif mig_capable:
        report.add("privileges", "fail", "MIG is read-only: %s" % privileges.get("reason"),
                   'set become = "sudo" (with passwordless sudo) or reach the host as root')
    elif no_nvml:
        report.add("privileges", "skip", "not root; whether a GPU here needs MIG changes "
                   "needs NVML")
    else:
        report.add("privileges", "ok", "not root; no GPU here needs MIG changes")
    if hello.get("problems"):
        report.add("nvml", "fail", "; ".join(hello["problems"]),
                   "install the NVIDIA driver, and nvidia-ml-py's libnvidia-ml must load")
    else:
        report.add("nvml", "ok", "driver %s, %s" % (hello.get("driver_version"),
                                                     count(len(hello.get("gpus", [])), "GPU")))
    if hello.get("cpus") is not None:
        report.add("resources", "ok", _resources(hello))
    gpus = hello.get("gpus", [])
    if no_nvml:
        report.add("mig", "skip", "needs NVML")
    elif mig_capable:
        off = [g for g in mig_capable if not g.get("mig_mode")]
        report.add("mig", "warn" if off else "ok", ", ".join(
            "gpu%d %s" % (g["index"], "MIG on" if g.get("mig_mode") else "MIG off")
            for g in mig_capable), "fractui cannot slice a GPU with MIG off by MIG; it takes "
            "memory shares there" if off else None)
    else:
        report.add("mig", "ok", "no MIG-capable GPU")
    for g in gpus:
        missing = g.get("cap_layers_unavailable") or {}
        report.add("cap layers", "ok", "gpu%d: %s%s" % (g["index"], ", ".join(g.get(
            "cap_layers", [])), ("; not here: " + "; ".join(
                "%s (%s)" % kv for kv in sorted(missing.items()))) if missing else ""))
    _check_runtimes(hello, report)


def _check_runtimes(hello: Dict[str, Any], report: Report) -> None:
    """The container runtimes the agent found; none is a warning: jobs with an image are then
    refused there, bare jobs run."""
    found = hello.get("runtimes")
    if found is None:
        report.add("runtimes", "skip", "this agent does not report container runtimes")
        return
    have = ["%s %s" % (k, v) for k, v in found.items() if v]
    missing = "; ".join("%s (%s)" % kv for kv in sorted(
        (hello.get("runtimes_unavailable") or {}).items()))
    if have:
        report.add("runtimes", "ok", ", ".join(have) + ("; not here: " + missing
                                                        if missing else ""))
    else:
        report.add("runtimes", "warn", "no container runtime: jobs with an image are refused "
                   "here (%s)" % missing, "install podman (or docker, apptainer) on the host")


def _check_lingering(host: HostConfig, run: Runner, report: Report) -> None:
    """Where logind kills a user's processes at logout, the agent daemon dies with the SSH
    session that started it, unless the user lingers."""
    code, out, _ = run(["sh", "-c", "id -un; loginctl show-user \"$(id -un)\" -p Linger "
                        "2>/dev/null; grep -hs '^KillUserProcesses' /etc/systemd/logind.conf "
                        "/etc/systemd/logind.conf.d/*.conf"])
    lines = out.split()
    user = lines[0] if lines else "?"
    kill = any(line.strip().lower() == "killuserprocesses=yes" for line in lines)
    linger = any(line.strip().lower() == "linger=yes" for line in lines)
    if user == "root" or not kill:
        report.add("lingering", "ok", "processes outlive the SSH session (%s)" % (
            "root" if user == "root" else "KillUserProcesses is not yes"))
    elif linger:
        report.add("lingering", "ok", "KillUserProcesses=yes, but %s lingers" % user)
    else:
        report.add("lingering", "fail", "logind kills %s's processes at logout: the agent and "
                   "jobs would die with the SSH session" % user,
                   "sudo loginctl enable-linger %s" % user)


# The state dir's filesystem: made if missing (argv[2] "make"), then the longest mount point
# above it.
_STATE_DIR = r"""
import os, sys
path = os.path.realpath(sys.argv[1])
if sys.argv[2] == "make":
    os.makedirs(path, 0o700, exist_ok=True)
point, kind = "", ""
with open("/proc/self/mounts") as f:
    for line in f:
        fields = line.split()
        where = fields[1].replace("\\040", " ")
        inside = path == where or path.startswith(where.rstrip("/") + "/")
        if inside and len(where) >= len(point):
            point, kind = where, fields[2]
print(kind)
"""


def _check_state_dir(host: HostConfig, transport: Transport, report: Report) -> None:
    path = transport.state_dir
    # this runs as the login; with become the state dir is root's, which the login may not
    # reach: the agent, root, made it (its check came first), so only its mount is looked up
    code, out, err = transport.run(python_code(transport.python, _STATE_DIR) + [
        path, "look" if host.become else "make"])
    fstype = out.strip()
    if code != 0:
        lines = err.strip().splitlines()
        report.add("state dir", "fail", "%s: %s" % (path, lines[-1] if lines else
                                                    "exit status %d" % code),
                   "set state_dir to a writable local directory")
    elif fstype in NETWORK_FILESYSTEMS:
        report.add("state dir", "fail", "%s is on %s: SQLite's WAL and unix sockets break on "
                   "network filesystems" % (path, fstype), "set state_dir to a local disk, "
                   "e.g. /var/tmp/fractui-agent")
    elif host.transport == "exec" and fstype in CONTAINER_LAYERS:
        report.add("state dir", "warn", "%s is on %s, the container's own layer: the agent's "
                   "job records and logs go with the container (a new pod or container knows "
                   "nothing of the jobs it ran)" % (path, fstype),
                   "mount a volume at %s (a hostPath in a pod: deploy/kubernetes/daemonset.yaml; "
                   "podman or docker run -v DIR:%s)" % (path, path))
    else:
        report.add("state dir", "ok", "%s on %s" % (path, fstype or "local disk"))
