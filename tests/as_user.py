"""``fractui`` run as a plain OS user, as ``subprocess.run`` would run it, without loading
fractui's code afresh for every run.

The interpreter lives under root's 0700 home, so a run starts as root, loads fractui's code, then
drops to the user for good before it runs the verb. Loading the code is nearly all of a run's
time (about a second: Textual, paramiko, psycopg), so one process of this session loads it
once and forks for each run; the fork drops to the user, takes the caller's environment, working
directory and descriptors, and runs ``fractui.cli.main`` as ``python -c`` would, exiting through
the interpreter as usual. Each run is still a process of its own, as the user, with a loaded
state no other run has touched."""

from __future__ import annotations

import atexit
import json
import locale
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

from tests.conftest import REPO

# What the runs need loaded before they drop to the user (they cannot read it after).
IMPORTS = """
import importlib.readers, os, pwd, sys
import fractui.cli, fractui.commands, fractui.store_commands, fractui.scheduler.service
import fractui.tui.run, fractui.tui.app, fractui.tui.source
import encodings.idna, fractui.fleet.transport.ssh  # what a user's SSH to a host loads
import fractui.store.postgres  # psycopg and libpq too: they live where the user cannot read
import rich._unicode_data  # the cell widths' table rich loads at its first wide text
rich._unicode_data.load()
"""

# The loader: answers each connection to its socket with a child of its own, which forks the
# run and tells its pid, then how it ended. It ends when its stdin does (the tests' process).
LOADER = IMPORTS + """
import json, select, signal, socket, threading
assert threading.active_count() == 1, threading.enumerate()  # fork copies no thread's locks
listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
listener.bind(sys.argv[1])
listener.listen(64)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its children are reaped by the kernel
print("ready", flush=True)
while True:
    ready = select.select([listener, sys.stdin], [], [])[0]
    if sys.stdin in ready:
        os._exit(0)
    conn = listener.accept()[0]
    if os.fork() == 0:
        break
    conn.close()
listener.close()
signal.signal(signal.SIGCHLD, signal.SIG_DFL)
message, fds, _flags, _address = socket.recv_fds(conn, 1 << 20, 2)
run = json.loads(message)
pid = os.fork()
if pid:
    for fd in fds:
        os.close(fd)
    conn.send(json.dumps({"pid": pid}).encode())
    status = os.waitpid(pid, 0)[1]
    conn.send(json.dumps({"code": os.waitstatus_to_exitcode(status)}).encode())
    os._exit(0)
conn.close()
null = os.open(os.devnull, os.O_RDONLY)
for fd, to in ((null, 0), (fds[0], 1), (fds[1], 2)):
    os.dup2(fd, to)
    os.close(fd)
os.chdir(run["cwd"])
os.environ.clear()
os.environ.update(run["env"])
os.umask(run["umask"])
sys.argv = ["-c"] + run["argv"]
who = pwd.getpwnam(run["argv"][0])
os.setgroups([])
os.setgid(who.pw_gid)
os.setuid(who.pw_uid)
sys.exit(fractui.cli.main(run["argv"][1:]))
"""

_lock = threading.Lock()
_loader: Optional[subprocess.Popen] = None
_socket = ""


def _started() -> str:
    """The loader's socket, the loader started if it is not yet."""
    global _loader, _socket
    with _lock:
        if _loader is None or _loader.poll() is not None:
            folder = tempfile.mkdtemp(prefix="fractui-as-user-")
            path = os.path.join(folder, "loader")
            _loader = subprocess.Popen([sys.executable, "-c", LOADER, path], cwd=REPO,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert _loader.stdout.readline() == "ready\n", "the loader did not start"
            _socket = path
            atexit.register(_stop, _loader, folder)
        return _socket


def _stop(loader: subprocess.Popen, folder: str) -> None:
    loader.stdin.close()
    loader.wait(10)
    shutil.rmtree(folder, ignore_errors=True)


def _umask() -> int:
    """This process's umask, read without setting it (another thread may be running one)."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)


def run(user: str, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess:
    """``fractui ARGV`` as ``user``: what ``subprocess.run([...], capture_output=True,
    text=True, cwd=REPO, timeout=timeout, stdin=DEVNULL)`` gives."""
    words: List[str] = [user, *argv]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(_started())
        socket.send_fds(conn, [json.dumps({"argv": words, "env": dict(os.environ),
                                           "cwd": REPO, "umask": _umask()}).encode()],
                        [out_w, err_w])
        os.close(out_w)
        os.close(err_w)
        out_w = err_w = -1
        pid = json.loads(conn.recv(1 << 16))["pid"]
        got = _read_all({out_r: b"", err_r: b""}, time.monotonic() + timeout)
        if got is None:
            os.kill(pid, signal.SIGKILL)
            raise subprocess.TimeoutExpired(["fractui as %s" % user, *argv], timeout)
        code = json.loads(conn.recv(1 << 16))["code"]
    finally:
        conn.close()
        for fd in (out_r, err_r, out_w, err_w):
            if fd >= 0:
                os.close(fd)
    return subprocess.CompletedProcess(["fractui as %s" % user, *argv], code, _text(got[out_r]),
                                       _text(got[err_r]))


def _read_all(got: Dict[int, bytes], deadline: float) -> Optional[Dict[int, bytes]]:
    """Each descriptor read to its end, or None at the deadline."""
    with selectors.DefaultSelector() as sel:
        for fd in got:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            for key, _ in sel.select(left):
                data = os.read(key.fd, 1 << 16)
                if data:
                    got[key.fd] += data
                else:
                    sel.unregister(key.fd)
    return got


def _text(data: bytes) -> str:
    """As subprocess's text mode reads it."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace(
        "\r", "\n")
