"""How fractui reaches one host's agent: the one interface every kind of transport gives.

A transport opens a way to the host (an SSH link, nothing for a local pipe, a lookup of the pod
or container for ``exec``), runs short commands there to completion (the Python check, doctor's
checks, the exec deploy), puts the agent there, starts ``serve --stdio`` as a byte stream, and
says afterwards why its link ended. Everything above it (the host session's reconnect, backoff
and states) is the same for every kind; errors come out as TransportError or AgentProcessError.
"""

from __future__ import annotations

import inspect
import logging
import os
import posixpath
import re
import signal
import subprocess
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, List, Optional, Sequence, Tuple

from fractui.config import HostConfig
from fractui.fleet.zipapp import AgentArchive
from remote_agent.daemon import trust

log = logging.getLogger("fractui.fleet")

MIN_PYTHON = (3, 9)
RUN_TIMEOUT_S = 30.0
RUN_OUTPUT_MAX = 64 * 1024  # what a short command's answer may hold; the rest is drained
Ran = Tuple[int, str, str]  # exit status, stdout, stderr
Runner = Callable[[Sequence[str]], Ran]

# Whether the agent named by its hash (argv[1]) is in place, whole (its sha256 is argv[2]) and
# where no other user can change it: its folder must pass the agent's own StrictModes rule
# (``remote_agent.daemon.trust.check_tree``, sent as its source since the agent is not there
# yet to run it), the file must be the login user's, writable by nobody else. Prints yes (run
# it) or no (put it there, again); exits 4 with the reason when the folder is refused, and
# FOLDER_FAILED when it cannot be read: any other end is the way there's, not the folder's.
FOLDER_FAILED = 5
_HAVE = inspect.getsource(trust) + """
import hashlib, sys
path, digest = os.path.abspath(sys.argv[1]), sys.argv[2]
try:
    check_tree(os.path.dirname(path), "agent_cache")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    whole = (st is not None and stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
             and not st.st_mode & 0o022)
    if whole:
        with open(path, "rb") as f:
            whole = hashlib.sha256(f.read()).hexdigest() == digest
except UnsafePath as err:
    print(err, file=sys.stderr)
    sys.exit(4)
except OSError as err:
    print(err, file=sys.stderr)
    sys.exit(%d)
print("yes" if whole else "no")
""" % FOLDER_FAILED


def said_partial(host: str, path: str, why: Optional[str] = None) -> None:
    """The log's words for an agent left half uploaded in the agent's folder (an upload cut
    short) that the next upload removed, or could not remove (``why``): then it stays, unused,
    and the upload goes on."""
    if why is None:
        log.info("%s: removed %s, an agent left half uploaded", host, path)
    else:
        log.warning("%s: cannot remove %s, an agent left half uploaded (%s); it stays there, "
                    "unused", host, path, why)


class TransportError(Exception):
    """The host cannot be reached, or its link broke; the message says where and why."""


class LoginShellError(TransportError):
    """The login's shell ran no command (nologin, an rc file that exits) or printed without
    end before it: the link is up, the login is what to change."""


class AgentProcessError(Exception):
    """The agent would not start on the host; the message says why and what to do."""


@dataclass
class Stream:
    """The agent's ``serve --stdio``: its stdout to read, a way to write its stdin, its stderr
    (read for its last words), and how to end it."""

    reader: BinaryIO
    write: Callable[[bytes], None]
    stderr: BinaryIO
    close: Callable[[], None]
    process: Optional["subprocess.Popen[bytes]"] = None  # the local process, where it is one


class Transport(ABC):
    """One host's way in. ``open`` first, ``close`` last (also after a failed ``open``)."""

    def __init__(self, cfg: HostConfig):
        self.cfg = cfg

    def open(self) -> None:
        """Reach the host (TransportError when it cannot be reached)."""

    @abstractmethod
    def run(self, words: Sequence[str], stdin: bytes = b"",
            timeout_s: float = RUN_TIMEOUT_S) -> Ran:
        """A short command to completion, ``stdin`` written to it: (status, stdout, stderr).
        A program the far side does not have is status 127 (as a shell or podman says it);
        TransportError when the way there fails (a broken link, no exec program here)."""

    @abstractmethod
    def start(self, words: Sequence[str]) -> Stream:
        """Start a long-running command (the agent's bridge) as a byte stream."""

    @property
    @abstractmethod
    def state_dir(self) -> str:
        """The host entry's state_dir as the agent's --state-dir there."""

    @abstractmethod
    def agent_command(self, archive: Callable[[], AgentArchive]) -> Tuple[List[str],
                                                                          Optional[bool]]:
        """The words that start the agent (its own words follow), once it can run there;
        and whether it was uploaded (None where nothing is ever uploaded)."""

    @property
    def python(self) -> str:
        """The interpreter on the far side that short checks run with."""
        return self.cfg.python

    def said(self) -> Optional[str]:
        """Words on why the link ended (what SSH warned of, how the exec program exited),
        to go beside the agent's own; None when there is nothing to add."""
        return None

    def ended(self) -> Optional[str]:
        """Why fractui ended the link itself (an SSH link that stalled), if it did: what the
        agent's end of the connection then says (it closed, a write failed) only echoes it."""
        return None

    def close(self) -> None:
        """End the link (the stream has its own close)."""


class RemoteTransport(Transport):
    """A transport to another machine (SSH, exec): its Python is checked and the agent put
    there unless its image has it."""

    def agent_command(self, archive: Callable[[], AgentArchive]) -> Tuple[List[str],
                                                                          Optional[bool]]:
        problem = python_problem(self.cfg, self.run)
        if problem:
            raise AgentProcessError(problem)
        if self.cfg.agent == "image":
            path, uploaded = self.cfg.agent_path, False
        else:
            path, uploaded = self.deploy(archive())
        return ([] if self.cfg.become is None else ["sudo", "-n"]) + [
            self.cfg.python, path], uploaded

    @abstractmethod
    def deploy(self, archive: AgentArchive) -> Tuple[str, bool]:
        """Put the agent zipapp on the host unless it has this exact one (``has_agent``): its
        path there and whether it was uploaded."""

    def check_upload(self, path: str, archive: AgentArchive) -> None:
        """After an upload, the same check again: the folder may have been made by another
        user between the first check (when it did not exist) and the upload."""
        if not self.has_agent(path, archive):
            raise AgentProcessError("the agent put in %s on %s does not read back as it was sent "
                                    "(set agent_cache to a directory of your own)" % (
                                        posixpath.dirname(path), self.cfg.name))

    def has_agent(self, path: str, archive: AgentArchive) -> bool:
        """Whether ``path`` holds this very agent where only the login user (or root) can
        change it: a file there by that name is checked, not trusted (another user may have
        put it there, a full disk may have cut it). AgentProcessError when its folder is one
        another user could change, since the agent runs from it (as root, with sudo)."""
        code, out, err = self.run(trust.python_code(self.python, _HAVE) + [path, archive.sha256])
        if code == 0 and out.strip() in ("yes", "no"):
            return out.strip() == "yes"
        cache = posixpath.dirname(path)
        if code == 4:
            raise AgentProcessError("cannot put the agent in %s on %s: %s" % (
                cache, self.cfg.name, last_line(err)))
        raise AgentProcessError("cannot put the agent in %s on %s: %s" % (
            cache, self.cfg.name, self.cut_short(code, out, err)))

    def cut_short(self, code: int, out: str, err: str) -> str:
        """Why a check or upload in the agent's folder gave no answer, said as its cause: its
        own folder error (FOLDER_FAILED) is the folder's; any other end is the way there's,
        which a transport words as its own (exec: how its program ended)."""
        said = last_line(err or out)
        if code == FOLDER_FAILED:
            return "%s (set agent_cache to a writable directory)" % said
        return "it ended without its answer (%s)" % (said or "exit status %d" % code)


def python_problem(cfg: HostConfig, run: Runner) -> Optional[str]:
    """Why the host's python cannot run the agent, or None if it can."""
    code, out, err = run(trust.python_code(cfg.python, "print('%d.%d' % sys.version_info[:2])"))
    if code == 127:
        return "%s has no %s (set python = ... for this host)" % (cfg.name, cfg.python)
    if code != 0:
        return "%s -c failed on %s: %s" % (cfg.python, cfg.name, (err or out).strip()[:300] or
                                           "exit status %d, no output" % code)
    if not re.fullmatch(r"[0-9]{1,4}\.[0-9]{1,4}", out.strip()):  # (\d: any script's)
        return "%s on %s printed %r when asked for its version" % (
            cfg.python, cfg.name, out.strip()[:80])
    version = tuple(int(x) for x in out.strip().split("."))
    if version < MIN_PYTHON:
        return "%s on %s is Python %s; the agent needs %d.%d or newer (set python = ... for " \
               "this host)" % (cfg.python, cfg.name, out.strip(), *MIN_PYTHON)
    return None


def run_process(argv: Sequence[str], stdin: bytes, timeout_s: float) -> Ran:
    """Run a local program to completion, no shell: (status, stdout, stderr), each output cut
    at RUN_OUTPUT_MAX (a program that floods is drained, not kept). TransportError when the
    program cannot be started or does not end within ``timeout_s``."""
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as err:
        raise TransportError("cannot start %s: %s" % (argv[0], (
            "program not found" if isinstance(err, FileNotFoundError) else
            err.strerror or err))) from None
    outs: List[bytes] = [b"", b""]

    def drain(stream: Any, slot: int) -> None:
        while True:
            chunk = stream.read(65536)
            if not chunk:
                return
            if len(outs[slot]) < RUN_OUTPUT_MAX:
                outs[slot] += chunk[:RUN_OUTPUT_MAX - len(outs[slot])]

    def feed() -> None:
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except OSError:  # it ended (or was ended) without reading all: its status says why
            pass

    threads = [threading.Thread(target=drain, args=(s, i), daemon=True)
               for i, s in enumerate((proc.stdout, proc.stderr))]
    threads.append(threading.Thread(target=feed, daemon=True))
    for thread in threads:
        thread.start()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        try:  # its whole session: children (a kubectl credential plugin) go with it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it and its group ended just now
            pass
        proc.wait()
        raise TransportError("%s gave no answer within %g s" % (argv[0], timeout_s)) from None
    finally:
        for thread in threads:
            thread.join(5)
    out, err = (o.decode("utf-8", errors="replace") for o in outs)
    return proc.returncode, out, err


def how_ended(code: int) -> str:
    """A local program's exit status in words: a negative one is the signal that killed it."""
    if code >= 0:
        return "exited with status %d" % code
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "signal %d" % -code
    return "was killed by %s" % name


def last_line(text: str) -> str:
    """The last line a far command printed, cut short: what it said went wrong."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:1000] if lines else ""
