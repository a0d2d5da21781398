"""``serve --stdio``: a thin bridge from an SSH channel (stdin/stdout) to the host's daemon.

It starts the daemon when none runs — two bridges racing still give one daemon, because only the
holder of the state dir's lock may bind the socket — and hands over from an older daemon to this
newer agent version. Closing the bridge (the SSH channel) never stops a job.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Tuple

from remote_agent import __version__
from remote_agent.daemon.paths import AgentPaths, agent_command, agent_env
from remote_agent.gpu.models import parse_sim_spec

CONNECT_TIMEOUT_S = 15.0


class BridgeError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def version_tuple(version: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _connect(paths: AgentPaths) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(paths.socket)
    except OSError:
        sock.close()
        raise
    return sock


def _start_daemon(paths: AgentPaths, daemon_args: List[str]) -> None:
    """Start a daemon and wait for its launcher to return: it detaches once its checks passed,
    or fails here with the reason on our stderr."""
    proc = subprocess.run(agent_command() + ["daemon", "--state-dir", paths.state_dir, "--detach"]
                          + daemon_args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          env=agent_env(os.environ), cwd="/")
    if proc.returncode != 0:
        raise BridgeError("the agent daemon did not start (exit %d)" % proc.returncode,
                          proc.returncode)


def connect_or_start(paths: AgentPaths, daemon_args: List[str]) -> socket.socket:
    try:
        return _connect(paths)
    except OSError:
        pass
    _start_daemon(paths, daemon_args)
    deadline = time.time() + CONNECT_TIMEOUT_S
    while True:
        try:
            return _connect(paths)
        except OSError as err:
            if time.time() > deadline:
                raise BridgeError("no agent daemon answers on %s: %s (see %s)" % (
                    paths.socket, err, paths.log_file)) from err
            time.sleep(0.02)


def _ask(sock: socket.socket, method: str) -> Dict[str, Any]:
    sock.sendall(json.dumps({"jsonrpc": "2.0", "id": "bridge", "method": method}).encode()
                 + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise BridgeError("the agent daemon closed the connection during %s" % method)
        buf += chunk
    reply = json.loads(buf)
    if "error" in reply:
        raise BridgeError("%s failed: %s" % (method, reply["error"]["message"]))
    return reply["result"]


def _wait_gone(paths: AgentPaths, pid: int) -> None:
    """Until the old daemon has let go of the state dir's lock: it does so as it exits, even
    before its parent reaps it (a zombie still answers ``kill -0``)."""
    deadline = time.time() + CONNECT_TIMEOUT_S
    with open(paths.lock_file, "a") as lock:
        while time.time() < deadline:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                time.sleep(0.02)
                continue
            fcntl.flock(lock, fcntl.LOCK_UN)
            return
    raise BridgeError("the old agent daemon (pid %d) did not stop" % pid)


def open_daemon(paths: AgentPaths, backend: str, sim_spec: str,
                daemon_args: List[str]) -> socket.socket:
    """A connection to a daemon of this agent version (or newer) for this state dir."""
    sock = connect_or_start(paths, daemon_args)
    info = _ask(sock, "daemon.version")
    if version_tuple(info["version"]) < version_tuple(__version__):
        _ask(sock, "daemon.shutdown")
        sock.close()
        _wait_gone(paths, info["pid"])
        sock = connect_or_start(paths, daemon_args)
        info = _ask(sock, "daemon.version")
    if info["backend"] != backend:
        raise BridgeError("the agent daemon for %s runs the %s backend, not %s; use another "
                          "state dir" % (paths.state_dir, info["backend"], backend), 2)
    if sim_spec and parse_sim_spec(sim_spec) != parse_sim_spec(info["sim_spec"]):
        raise BridgeError("%s holds a simulated host with GPUs %r, not %r; use another state dir"
                          % (paths.state_dir, info["sim_spec"], sim_spec), 2)
    return sock


def relay(sock: socket.socket) -> int:
    """Copy stdin to the daemon and the daemon to stdout until either side ends."""
    stdin_done = threading.Event()

    def upstream() -> None:
        try:
            while True:
                chunk = os.read(0, 65536)
                if not chunk:
                    break
                sock.sendall(chunk)
        except OSError as err:
            print("remote_agent bridge: %s" % err, file=sys.stderr)
        finally:
            stdin_done.set()
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the daemon side is already gone; downstream will see it end

    threading.Thread(target=upstream, daemon=True).start()
    out = sys.stdout.buffer
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out.write(chunk)
            out.flush()
    except BrokenPipeError:
        return 0  # the client (the SSH channel) went away first: nothing left to tell it
    finally:
        sock.close()
    if not stdin_done.is_set():
        print("remote_agent bridge: the agent daemon closed the connection", file=sys.stderr)
        return 1
    return 0


def bridge(state_dir: str, backend: str, sim_spec: str, daemon_args: List[str]) -> int:
    paths = AgentPaths(state_dir)
    try:
        sock = open_daemon(paths, backend, sim_spec, daemon_args)
    except BridgeError as err:
        print("remote_agent: %s" % err, file=sys.stderr)
        return err.code
    return relay(sock)
