"""``serve --stdio``: a thin bridge from an SSH channel (stdin/stdout) to the host's daemon.

It starts the daemon when none runs — two bridges racing still give one daemon, because only the
holder of the state dir's lock may bind the socket — and hands over from a daemon that runs other
code (an older version, or the same version changed) or other settings than it would start, so a
new agent or a changed config reaches the host on the next connection; the new daemon re-adopts
every job. Before it connects it checks the socket's directory and the socket as tmux does, so it
never talks to a socket another local user planted. Closing the bridge never stops a job.
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
from typing import Any, Dict, List, Optional, Tuple

from remote_agent import __version__
from remote_agent.daemon.paths import AgentPaths, agent_command, agent_env, code_hash
from remote_agent.daemon.settings import texts_digest
from remote_agent.daemon.trust import UnsafePath, open_private
from remote_agent.digits import whole
from remote_agent.gpu.models import parse_sim_host
from remote_agent.jobs.powers import record_login
from remote_agent.text import REPLACEMENT, said_all

CONNECT_TIMEOUT_S = 15.0


class BridgeError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def version_tuple(version: str) -> Tuple[int, ...]:
    parts = (whole(part, sys.maxsize) for part in version.split("."))
    return tuple(part for part in parts if part is not None)


def connect(paths: AgentPaths, folder: str = "") -> socket.socket:
    """Connect to the daemon's socket (in the socket dir ``folder``, where given) once it and
    its directory are checked (UnsafePath if another user could have made them); OSError when
    there is none to connect to."""
    folder = folder or paths.socket_dir
    if not paths.check_socket_dir(folder) or paths.check_socket(folder) is None:
        raise FileNotFoundError("no socket at %s" % paths.socket_in(folder))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(paths.socket_in(folder))
    except OSError:
        sock.close()
        raise
    return sock


def connect_any(paths: AgentPaths) -> socket.socket:
    """``connect``, else to a daemon of an earlier agent that listens where it put its socket
    (/tmp/fractui-UID), so it is found and handed over from. That place is only looked in:
    where another user made it, it is passed by, and said so (a daemon of ours never listened
    there), so it stops no agent."""
    try:
        return connect(paths)
    except OSError as err:
        missing = err
    for folder in paths.old_socket_dirs:
        try:
            return connect(paths, folder)
        except UnsafePath as err:
            print("remote_agent: not looking for an earlier agent's daemon in %s: %s" % (
                folder, err), file=sys.stderr)
        except OSError:
            continue  # no earlier daemon there: the usual case
    raise missing


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
        return connect_any(paths)
    except OSError:
        pass  # none runs: one is started, and listens in the socket dir
    _start_daemon(paths, daemon_args)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        try:
            return connect(paths)
        except OSError as err:
            if time.monotonic() > deadline:
                raise BridgeError("no agent daemon answers on %s: %s (see %s)" % (
                    paths.socket, err, paths.log_file)) from err
            time.sleep(0.02)


def ask(sock: socket.socket, method: str) -> Dict[str, Any]:
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
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    with os.fdopen(open_private(paths.lock_file, os.O_RDWR | os.O_CREAT, "daemon lock")) as lock:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                time.sleep(0.02)
                continue
            fcntl.flock(lock, fcntl.LOCK_UN)
            return
    raise BridgeError("the old agent daemon (pid %d) did not stop" % pid)


def why_hand_over(info: Dict[str, Any], code: str, settings: Dict[str, Any]) -> Optional[str]:
    """Why a running daemon (its ``daemon.version``) must make way for the one this bridge would
    start, or None to use it. A newer version is used as it is: a bridge never downgrades.
    Its settings are read as ``daemon.version`` says them (a path that is no UTF-8 reads
    U+FFFD there), so a path of this kind reads the same on both sides; and two paths that
    differ only in such bytes, which read alike there, are told apart by their digests
    (``settings_digest``)."""
    digest = texts_digest(settings)
    settings = said_all(settings)
    theirs, ours = version_tuple(info["version"]), version_tuple(__version__)
    if theirs > ours:
        return None
    if theirs < ours:
        return "it runs agent %s, older than %s" % (info["version"], __version__)
    if info.get("code_hash") != code:
        return "it runs other code (%s, not %s)" % (info.get("code_hash"), code)
    running = info.get("settings") or {}
    changed = sorted(k for k in set(running) | set(settings) if running.get(k) != settings.get(k))
    if not changed and info.get("settings_digest", digest) != digest:
        return "its settings differ: %s (in a byte that is no UTF-8, said as U+FFFD)" % (
            ", ".join(sorted(k for k, v in settings.items()
                             if isinstance(v, str) and REPLACEMENT in v)))
    if changed:
        return "its settings differ: %s" % "; ".join(
            "%s %r, now %r" % (k, running.get(k), settings.get(k)) for k in changed)
    return None


def open_daemon(paths: AgentPaths, backend: str, sim_spec: str, settings: Dict[str, Any],
                daemon_args: List[str]) -> socket.socket:
    """A connection to a daemon for this state dir that runs this agent's code (or a newer
    version) with these settings; one that does not is handed over, its jobs re-adopted."""
    code = code_hash()
    sock = connect_or_start(paths, daemon_args)
    info = ask(sock, "daemon.version")
    why = why_hand_over(info, code, settings)
    if why:
        print("remote_agent: handing over from the running daemon (pid %d): %s" % (
            info["pid"], why), file=sys.stderr)
        ask(sock, "daemon.shutdown")
        sock.close()
        _wait_gone(paths, info["pid"])
        sock = connect_or_start(paths, daemon_args)
        info = ask(sock, "daemon.version")
        why = why_hand_over(info, code, settings)
        if why:  # another bridge started it meanwhile, with its own: two configs disagree
            print("remote_agent: using the daemon another connection started, though %s"
                  % why, file=sys.stderr)
    if info["backend"] != backend:
        raise BridgeError("the agent daemon for %s runs the %s backend, not %s; use another "
                          "state dir" % (paths.state_dir, info["backend"], backend), 2)
    if sim_spec and parse_sim_host(sim_spec) != parse_sim_host(info["sim_spec"]):
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


def bridge(state_dir: str, backend: str, sim_spec: str, settings: Dict[str, Any],
           daemon_args: List[str]) -> int:
    paths = AgentPaths(state_dir)
    try:
        sock = open_daemon(paths, backend, sim_spec, settings, daemon_args)
    except BridgeError as err:
        print("remote_agent: %s" % err, file=sys.stderr)
        return err.code
    except UnsafePath as err:
        print("remote_agent: %s" % err, file=sys.stderr)
        return 2
    try:  # a login whose sudo reached a daemon another one started holds its powers too
        record_login(paths.sudo_logins, os.environ)
    except (UnsafePath, OSError) as err:  # unrecorded, the login could be given a job
        sock.close()
        print("remote_agent: the sudo logins %s cannot be recorded: %s" % (
            paths.sudo_logins, err), file=sys.stderr)
        return 2 if isinstance(err, UnsafePath) else 1
    return relay(sock)
