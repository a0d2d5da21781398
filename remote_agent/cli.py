"""``python -m remote_agent``: the host agent's command line.

Verbs: ``serve --stdio`` (the bridge fractui runs over SSH), ``daemon`` (started by the bridge),
``shim`` (started by the daemon, one per job) and ``simload`` (a simulated GPU workload). Heavy
modules are imported per verb: a shim's start-up time is part of every job launch.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
from typing import List, Optional


def _add_host_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", required=True, help="where the agent keeps its state")
    parser.add_argument("--backend", choices=("nvml", "sim"),
                        help="nvml (real GPUs, the default) or sim (simulated GPUs)")
    parser.add_argument("--sim", metavar="SPEC",
                        help="simulated GPUs on first start, e.g. 2xA100-80GB:mig,1xL4 "
                             "(implies --backend sim)")
    parser.add_argument("--mps", action="store_true",
                        help="MPS is enabled on this host: cap shares with MPS limits too")
    parser.add_argument("--hami-core-lib", metavar="PATH",
                        help="HAMi-core's libvgpu.so: cap shares with it too")
    parser.add_argument("--log-max-mib", type=int, default=64,
                        help="size cap of each job's log (default 64)")
    parser.add_argument("--retention-hours", type=float, default=168.0,
                        help="keep finished jobs and their logs this long (default 168)")
    parser.add_argument("--watchdog-grace", type=float, default=5.0,
                        help="seconds between SIGTERM and SIGKILL for a job over its cap")
    parser.add_argument("--cgroup-parent", metavar="PATH|auto|none",
                        help="cgroup v2 directory for per-job cgroups with the driver's memory "
                             "limits (default: auto on real GPUs, i.e. <cgroup2 mount>/fractui; "
                             "none under simulation)")


def _parser() -> argparse.ArgumentParser:
    from remote_agent import __version__

    parser = argparse.ArgumentParser(prog="python -m remote_agent",
                                     description="fractui's host agent")
    parser.add_argument("--version", action="version", version=__version__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    serve = verbs.add_parser("serve", help="bridge stdin/stdout to the host's agent daemon")
    serve.add_argument("--stdio", action="store_true", required=True,
                       help="read requests on stdin, write responses on stdout")
    _add_host_options(serve)
    daemon = verbs.add_parser("daemon", help="the per-host daemon (the bridge starts it)")
    _add_host_options(daemon)
    daemon.add_argument("--detach", action="store_true", help="detach fully once started")
    shim = verbs.add_parser("shim", help="own one job's process (the daemon starts it)")
    shim.add_argument("job_dir")
    shim.add_argument("report_fd", nargs="?", type=int)
    verbs.add_parser("simload", add_help=False, help="a simulated GPU workload")
    return parser


def host_option_words(sim: Optional[str], mps: bool, hami_core_lib: Optional[str]) -> List[str]:
    """The host options as command-line words (fractui builds the same when it starts us)."""
    out: List[str] = []
    if sim:
        out += ["--sim", sim]
    if mps:
        out.append("--mps")
    if hami_core_lib:
        out += ["--hami-core-lib", hami_core_lib]
    return out


def _daemon_args(args: argparse.Namespace, backend: str) -> List[str]:
    """The options a bridge hands on to the daemon it starts."""
    out = ["--backend", backend, "--log-max-mib", str(args.log_max_mib),
           "--retention-hours", str(args.retention_hours),
           "--watchdog-grace", str(args.watchdog_grace)]
    out += host_option_words(args.sim, args.mps, args.hami_core_lib)
    if args.cgroup_parent:
        out += ["--cgroup-parent", args.cgroup_parent]
    return out


def _cgroup_parent(choice: Optional[str], backend: str) -> Optional[str]:
    from remote_agent.jobs.caps import cgroup2_mount

    choice = choice or ("auto" if backend == "nvml" else "none")
    if choice == "none":
        return None
    if choice == "auto":
        mount = cgroup2_mount()
        return os.path.join(mount, "fractui") if mount else None
    return os.path.abspath(choice)


def _daemonize(log_path: str) -> None:
    """Double fork into a new session, stdio to the log: the SSH channel that started us can
    close, and the daemon lives on."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o077)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def run_daemon(args: argparse.Namespace, backend: str) -> int:
    from remote_agent.daemon.paths import AgentPaths

    paths = AgentPaths(os.path.abspath(args.state_dir))
    os.makedirs(paths.state_dir, mode=0o700, exist_ok=True)
    lock = open(paths.lock_file, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # a daemon already runs for this state dir: the bridge will use it
    if backend == "sim":
        from remote_agent.gpu import fake_pynvml as nv

        try:
            nv.sim_open(paths.sim_state, args.sim)
        except ValueError as err:
            print("remote_agent: %s" % err, file=sys.stderr)
            return 2
    else:
        try:
            import pynvml as nv
        except ImportError as err:
            print("remote_agent: the pynvml module (nvidia-ml-py) is not available: %s" % err,
                  file=sys.stderr)
            return 2
    if args.detach:
        _daemonize(paths.log_file)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s remote_agent[%(process)d] %(levelname)s %(message)s")
    with open(paths.pid_file, "w") as f:
        f.write("%d\n" % os.getpid())

    from remote_agent.daemon.server import run_daemon as serve_daemon
    from remote_agent.jobs.caps import CapSettings
    from remote_agent.jobs.supervisor import SupervisorSettings
    from remote_agent.service import Agent

    sim = nv if backend == "sim" else None
    agent = Agent(nv, backend, sim=sim)
    settings = SupervisorSettings(
        caps=CapSettings(mps=args.mps, hami_core_lib=args.hami_core_lib,
                         cgroup_parent=_cgroup_parent(args.cgroup_parent, backend)),
        log_max_bytes=args.log_max_mib << 20, retention_s=args.retention_hours * 3600,
        watchdog_grace_s=args.watchdog_grace)
    return serve_daemon(paths, agent, settings, sim.sim_spec() if sim is not None else None)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simload"]:
        from remote_agent import simload

        return simload.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.verb == "shim":
        from remote_agent.jobs.shim import run

        return run(args.job_dir, args.report_fd)
    backend = args.backend or ("sim" if args.sim else "nvml")
    if args.sim and backend != "sim":
        print("remote_agent: --sim needs the sim backend, not --backend %s" % backend,
              file=sys.stderr)
        return 2
    if args.sim:
        from remote_agent.gpu.models import parse_sim_spec

        try:
            parse_sim_spec(args.sim)
        except ValueError as err:
            print("remote_agent: %s" % err, file=sys.stderr)
            return 2
    if args.verb == "daemon":
        return run_daemon(args, backend)
    from remote_agent.daemon.bridge import bridge

    return bridge(os.path.abspath(args.state_dir), backend, args.sim, _daemon_args(args, backend))
