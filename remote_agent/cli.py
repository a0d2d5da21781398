"""``python -m remote_agent``: the host agent's command line.

Verbs: ``serve --stdio`` (the bridge fractui runs over SSH), ``daemon`` (started by the bridge),
``shim`` (started by the daemon, one per job), ``simload`` (a simulated GPU workload), and for a
container image (deploy/kubernetes) ``pod`` (its entry) and ``hello`` (its liveness probe). Heavy
modules are imported per verb: a shim's start-up time is part of every job launch.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
from typing import List, Optional


STATE_DIR_HELP = "where the agent keeps its state"


def _state_dir(text: str) -> str:
    """An argparse type: a state dir named, not an empty word, which os.path.abspath reads as
    the current directory (a daemon's state then went where the command ran)."""
    if not text:
        raise argparse.ArgumentTypeError("is empty: name the directory the agent keeps its "
                                         "state in")
    return text


def _add_host_options(parser: argparse.ArgumentParser) -> None:
    from remote_agent.daemon import settings

    parser.add_argument("--state-dir", required=True, type=_state_dir, help=STATE_DIR_HELP)
    parser.add_argument("--backend", choices=("nvml", "sim"),
                        help="nvml (real GPUs, the default) or sim (simulated GPUs)")
    parser.add_argument("--sim", metavar="SPEC",
                        help="simulated GPUs on first start, e.g. 2xA100-80GB:mig,1xL4 "
                             "(implies --backend sim)")
    settings.add_options(parser)


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
    pod = verbs.add_parser("pod", help="a container's entry: start the daemon, then wait")
    _add_host_options(pod)
    hello = verbs.add_parser("hello", help="print the running daemon's hello (a liveness probe)")
    hello.add_argument("--state-dir", required=True, type=_state_dir, help=STATE_DIR_HELP)
    shim = verbs.add_parser("shim", help="own one job's process (the daemon starts it)")
    shim.add_argument("job_dir")
    shim.add_argument("report_fd", nargs="?", type=int)
    verbs.add_parser("simload", add_help=False, help="a simulated GPU workload")
    return parser


def _daemon_args(args: argparse.Namespace, backend: str) -> List[str]:
    """The options a bridge hands on to the daemon it starts."""
    from remote_agent.daemon.settings import from_args

    return ["--backend", backend] + (["--sim", args.sim] if args.sim else []) + \
        from_args(args).words()


def _daemonize(log_fd: int) -> None:
    """Double fork into a new session, stdio to the log: the SSH channel that started us can
    close, and the daemon lives on."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)


def run_daemon(args: argparse.Namespace, backend: str) -> int:
    from remote_agent.daemon.paths import AgentPaths
    from remote_agent.daemon.trust import UnsafePath, open_private, private_dir
    from remote_agent.jobs.powers import record_login
    from remote_agent.jobs.store import JobStore, StoreError

    try:
        paths = AgentPaths(os.path.abspath(args.state_dir))
        paths.check()
        lock = open_private(paths.lock_file, os.O_RDWR | os.O_CREAT, "daemon lock")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # a daemon already runs for this state dir: the bridge will use it
        # refused here, before detaching, so the reason reaches the bridge (and the admin)
        paths.check(contents=True)
        paths.make_socket_dir()
        if backend == "sim":
            private_dir(paths.sim_dir, "simulator directory")
        JobStore(paths.jobs_db).close()  # usable, and brought to this agent's version
        record_login(paths.sudo_logins, os.environ)
    except (UnsafePath, StoreError) as err:
        print("remote_agent: %s" % err, file=sys.stderr)
        return 2
    except (OSError, UnicodeError) as err:  # a file where a dir goes, a name no FS can hold
        print("remote_agent: the state dir %r cannot be used: %s" % (
            args.state_dir, err.strerror if isinstance(err, OSError) and err.strerror
            else err), file=sys.stderr)
        return 2
    if backend == "sim":
        from remote_agent.gpu import fake_pynvml as nv

        try:
            nv.sim_open(paths.sim_state, args.sim)
        except (ValueError, UnsafePath) as err:  # (another host's; swapped since the check)
            print("remote_agent: %s" % err, file=sys.stderr)
            return 2
        except OSError as err:  # its first write, on a full disk: before it detaches, said
            print("remote_agent: the simulated GPUs' state %s cannot be written: %s" % (
                paths.sim_state, err.strerror or err), file=sys.stderr)
            return 2
    else:
        try:
            import pynvml as nv
        except ImportError as err:
            print("remote_agent: the pynvml module (nvidia-ml-py) is not available: %s" % err,
                  file=sys.stderr)
            return 2
    from remote_agent.daemon.paths import code_hash
    from remote_agent.daemon.server import bind, run_daemon as serve_daemon, unbind, write_pid
    from remote_agent.daemon.settings import from_args
    from remote_agent.jobs.procs import proc_missing
    from remote_agent.service import Agent

    missing = proc_missing()
    if missing:  # (before it detaches: its launcher says it)
        print("remote_agent: %s" % missing, file=sys.stderr)
        return 2
    code = code_hash()  # of the code this daemon loaded, before anyone can change it
    # its socket (no inode left where sockets go: a full /tmp or /run), its pid file and its log
    # (a full state disk, or one with no inode left), refused before it detaches: after, its
    # words would go to its log alone
    doing = "listen on %s" % paths.socket
    listener = None
    pid_made = False
    try:
        listener = bind(paths)
        doing = "write the pid file %s" % paths.pid_file
        pid_fd = open_private(paths.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                              "pid file")
        pid_made = True
        try:
            write_pid(pid_fd)
            doing = "open the daemon log %s" % paths.log_file
            log_fd = open_private(paths.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                  "daemon log") if args.detach else -1
            if args.detach:
                doing = "detach the daemon"
                _daemonize(log_fd)  # its pid written again, by the daemon (``serve_daemon``)
        except BaseException:
            os.close(pid_fd)
            raise
    except (UnsafePath, OSError) as err:
        if listener is not None:  # nothing of this start is left for the next to find
            unbind(paths, listener, pid_made)
        if isinstance(err, UnsafePath):
            print("remote_agent: %s" % err, file=sys.stderr)
        else:
            print("remote_agent: cannot %s: %s" % (doing, err.strerror or err),
                  file=sys.stderr)
        return 2
    if not args.detach:
        os.close(pid_fd)  # the daemon is this process: its pid is written
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s remote_agent[%(process)d] %(levelname)s %(message)s")

    sim = nv if backend == "sim" else None
    try:
        return serve_daemon(paths, listener, pid_fd if args.detach else None,
                            lambda: Agent(nv, backend, sim=sim), from_args(args), code,
                            sim.sim_spec() if sim is not None else None)
    except (UnsafePath, StoreError) as err:
        print("remote_agent: %s" % err, file=sys.stderr)
        return 2


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simload"]:
        from remote_agent import simload

        return simload.main(argv[1:])
    args = _parser().parse_args(argv)
    os.umask(0o077)  # whatever the agent creates is its user's alone (docs/protocol.md)
    if args.verb == "shim":
        from remote_agent.jobs.shim import run

        return run(args.job_dir, args.report_fd)
    if args.verb == "hello":
        from remote_agent.daemon.pod import probe_hello

        return probe_hello(os.path.abspath(args.state_dir))
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
    if args.verb == "pod":
        from remote_agent.daemon.pod import run_pod

        return run_pod(os.path.abspath(args.state_dir), _daemon_args(args, backend))
    from remote_agent.daemon.bridge import bridge
    from remote_agent.daemon.settings import from_args

    return bridge(os.path.abspath(args.state_dir), backend, args.sim,
                  from_args(args).effective(backend), _daemon_args(args, backend))
