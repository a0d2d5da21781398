"""The agent as a container's entry and its liveness probe (deploy/kubernetes).

In a pod fractui reaches the agent with ``kubectl exec ... serve --stdio``, as it reaches a host
over SSH; the pod's own process only has to keep the container up. ``pod`` starts the daemon as a
bridge would (detached, so a bridge can hand it over to another one without ending the
container) and then waits, reaping the processes orphaned to it where it is the container's pid 1.
``hello`` asks the running daemon for ``hello`` over its socket: it never starts a daemon and
never hands one over, so a probe running with the image's default settings cannot replace a
daemon that fractui started with its config's.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import List

from remote_agent.daemon.bridge import BridgeError, ask, connect, connect_or_start
from remote_agent.daemon.paths import AgentPaths
from remote_agent.daemon.trust import UnsafePath


def _reap(_signum: int, _frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _stop(_signum: int, _frame: object) -> None:
    sys.exit(0)


def run_pod(state_dir: str, daemon_args: List[str]) -> int:
    """Start the state dir's daemon unless one runs, then wait until SIGTERM.

    Orphans are reaped only once the daemon's launcher was waited for: a reaping of any child
    while it ran could take the launcher's exit, which Python reads as 0 (ECHILD), and a daemon
    that did not start would be waited for as if it had."""
    signal.signal(signal.SIGTERM, _stop)  # pid 1 of a container gets no default handler
    signal.signal(signal.SIGINT, _stop)
    try:
        connect_or_start(AgentPaths(state_dir), daemon_args).close()
    except (BridgeError, UnsafePath) as err:
        print("remote_agent: %s" % err, file=sys.stderr)
        return err.code if isinstance(err, BridgeError) else 2
    print("remote_agent: the agent daemon for %s runs; waiting for kubectl exec sessions"
          % state_dir, file=sys.stderr, flush=True)
    signal.signal(signal.SIGCHLD, _reap)
    _reap(signal.SIGCHLD, None)  # any child that ended before the handler was set
    while True:
        signal.pause()


def probe_hello(state_dir: str) -> int:
    """Print the running daemon's ``hello`` as one JSON line: 0 if it answered, else 1."""
    paths = AgentPaths(state_dir)
    try:
        sock = connect(paths)
    except UnsafePath as err:
        print("remote_agent: %s" % err, file=sys.stderr)
        return 1
    except OSError as err:
        print("remote_agent: no agent daemon answers for %s: %s" % (state_dir, err),
              file=sys.stderr)
        return 1
    try:
        with sock:
            result = ask(sock, "hello")
    except (BridgeError, OSError, ValueError) as err:
        print("remote_agent: hello failed: %s" % err, file=sys.stderr)
        return 1
    try:
        print(json.dumps(result, sort_keys=True), flush=True)
    except BrokenPipeError:
        # the reader left (``| head``): quiet, as a shell's pipeline ends, and no second
        # error at exit when Python flushes stdout again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:
        print("remote_agent: hello answered, but its answer could not be written: %s" % err,
              file=sys.stderr)
        return 1
    return 0
