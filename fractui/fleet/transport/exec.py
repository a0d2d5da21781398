"""``transport = "exec"``: the agent reached through any program that ends in a byte stream to
it, e.g. ``podman exec -i agent`` or ``kubectl exec -i -n gpu POD --``: the agent's words follow
that argv, run as a subprocess of ours (never a shell). The Python check and the deploy go the
same way; where the agent comes with the image (``agent = "image"``) nothing is uploaded.

A pod that moves (a DaemonSet's pod is renamed when it is replaced) is named by a lookup:
``exec_target`` is run at each connect and its one line of output replaces ``{target}`` in the
words of ``exec``.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import shutil
import subprocess
from typing import List, Optional, Sequence, Tuple

from fractui.config import EXEC_TARGET, HostConfig, SshSettings
from fractui.fleet.transport.base import (FOLDER_FAILED, RUN_TIMEOUT_S, AgentProcessError,
                                          Ran, RemoteTransport, Stream, TransportError,
                                          how_ended, last_line, log, run_process,
                                          said_partial)
from fractui.fleet.transport.local import process_stream
from fractui.fleet.zipapp import AgentArchive
from remote_agent.daemon.trust import python_code

# The names ``mkstemp`` gives the upload helper's partials (8 characters of [a-z0-9_]): only
# files so named are ever removed as ones left half uploaded
PARTIAL_NAME = re.compile(r"\.agent-[a-z0-9_]{8}\.part")
# How long a partial is left unwritten before a sweep may take it for one an upload cut short
# left: a live upload writes its ~200 KB and fsyncs them within seconds; an hour holds a
# stalled filesystem, and the clocks of a shared volume's server and its machines apart.
PARTIAL_STALE_S = 3600

# The agent's bytes from stdin (argv[3] of them: an exec program that never passes on the end
# of stdin cannot hang it) to the path in argv[1], checked against the sha256 in argv[2],
# renamed into place atomically: an agent starting from that path never sees half a file.
# Its mode is set through its descriptor, never by its name: the folder may be one another
# user made since it was checked (refused after, ``check_upload``), who could have put a link
# in its place, and a chmod by name gave the file it named, any of root's, 0644. The folder's
# errors exit FOLDER_FAILED: any other end (the helper or the exec program killed, a container
# gone) is the exec stream's, not the folder's.
#
# Its partial (``mkstemp``'s name, PARTIAL_NAME) is removed on any failure it lives through,
# a SIGTERM, SIGHUP or SIGINT included (made an exception, a SIGINT as a SIGTERM: never a
# KeyboardInterrupt's traceback; held back from the partial's making until the try that
# removes it, and from the rename into place until the helper is done with the partial: such
# a signal then ends it by its default action, the agent in place). One a
# SIGKILL left is removed by a later upload, once its own is in place (``sweep``): each file
# so named, the helper's user's, a regular file (opened with no link followed), that no upload
# writes now: unwritten for PARTIAL_STALE_S by its mtime (a writer that holds no lock, an older
# fractui's helper or one on another machine of a shared volume, writes its partial within
# seconds), and whose flock the sweep takes, while it holds it, and only while its name still
# names the file it locked. The writer holds that flock from its partial's making to its rename
# (none where the folder's filesystem has no locks, ENOLCK or ENOSYS: the age alone then
# keeps it); a writer whose new partial was so removed before it locked it (its link count 0)
# makes another. Each removal (or failure to remove, which fails nothing) is said on stdout,
# one JSON list a line, for the log.
_PUT = """\
import errno, fcntl, hashlib, json, os, re, signal, stat, sys, tempfile, time
PARTIAL_NAME = re.compile(%r)
STALE_S = %r
ENDS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
path, digest, size = sys.argv[1], sys.argv[2], int(sys.argv[3])


def ended(signum, frame):
    raise SystemExit(128 + signum)


def locked(fd, wait):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.ENOSYS):
            raise


def put(folder, data):
    while True:
        signal.pthread_sigmask(signal.SIG_BLOCK, ENDS)
        fd, part = tempfile.mkstemp(dir=folder, prefix='.agent-', suffix='.part')
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, ENDS)
            with os.fdopen(fd, 'wb') as f:
                locked(f.fileno(), True)
                if not os.fstat(f.fileno()).st_nlink:
                    continue
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                os.fchmod(f.fileno(), 0o644)
                signal.pthread_sigmask(signal.SIG_BLOCK, ENDS)
                os.replace(part, path)
                return
        except BaseException:
            try:
                os.unlink(part)
            except FileNotFoundError:  # (a sweep took it: the error is the one to say)
                pass
            raise


def stale(folder, name):
    full = os.path.join(folder, name)
    st = os.lstat(full)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        return
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        held = os.fstat(fd)
        if (held.st_dev, held.st_ino) != (st.st_dev, st.st_ino):
            return
        try:
            locked(fd, False)
        except BlockingIOError:
            return
        if time.time() - os.fstat(fd).st_mtime < STALE_S:
            return
        now = os.lstat(full)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(full)
            print(json.dumps(['removed', full]))
    finally:
        os.close(fd)


def sweep(folder):
    try:
        names = os.listdir(folder)
    except OSError as err:
        print(json.dumps(['unread', folder, str(err)]))
        return
    for name in names:
        if PARTIAL_NAME.fullmatch(name):
            try:
                stale(folder, name)
            except FileNotFoundError:  # (gone since it was listed: another sweep's)
                pass
            except OSError as err:
                print(json.dumps(['left', os.path.join(folder, name), str(err)]))


for sig in ENDS:
    signal.signal(sig, ended)
data = sys.stdin.buffer.read(size)
if hashlib.sha256(data).hexdigest() != digest:
    print('%%d bytes of %%d came, not the ones sent' %% (len(data), size), file=sys.stderr)
    sys.exit(3)
folder = os.path.dirname(path)
try:
    os.makedirs(folder, 0o700, exist_ok=True)
    put(folder, data)
except OSError as err:
    print(err, file=sys.stderr)
    sys.exit(%d)
for sig in ENDS:
    signal.signal(sig, signal.SIG_DFL)  # (the agent is in place: a signal now cuts the sweep)
signal.pthread_sigmask(signal.SIG_UNBLOCK, ENDS)
sweep(folder)
""" % (PARTIAL_NAME.pattern, PARTIAL_STALE_S, FOLDER_FAILED)


class ExecTransport(RemoteTransport):

    def __init__(self, cfg: HostConfig, ssh: SshSettings):
        super().__init__(cfg)
        self.timeout_s = ssh.connect_timeout  # for the target lookup
        self.prefix: List[str] = list(cfg.exec or ())
        self.target: Optional[str] = None
        self.stream: Optional[Stream] = None

    def open(self) -> None:
        if self.cfg.exec_target:
            self.target = find_target(self.cfg, self.timeout_s)
            self.prefix = [w.replace(EXEC_TARGET, self.target) for w in self.cfg.exec or ()]
        if shutil.which(self.prefix[0]) is None:
            raise TransportError("the exec program %s is not found on this machine (exec = %s)"
                                 % (self.prefix[0], shlex.join(self.prefix)))

    @property
    def state_dir(self) -> str:
        return self.cfg.state_dir

    def run(self, words: Sequence[str], stdin: bytes = b"",
            timeout_s: float = RUN_TIMEOUT_S) -> Ran:
        return run_process(self.prefix + list(words), stdin, timeout_s)

    def start(self, words: Sequence[str]) -> Stream:
        try:
            self.stream = process_stream(self.prefix + list(words))
        except OSError as err:
            raise TransportError("cannot start %s: %s" % (self.prefix[0], err.strerror or err)
                                 ) from None
        return self.stream

    def deploy(self, archive: AgentArchive) -> Tuple[str, bool]:
        cfg = self.cfg
        path = posixpath.join(cfg.agent_cache, archive.name)
        if self.has_agent(path, archive):
            return path, False
        code, out, err = self.run(python_code(cfg.python, _PUT) + [
            path, archive.sha256, str(len(archive.data))], stdin=archive.data)
        if code == 0:
            self._say_swept(out)
            self.check_upload(path, archive)
            return path, True
        if code == 3:
            raise AgentProcessError(
                "the agent put through exec on %s arrived damaged: %s (the exec program "
                "changed or cut its stdin)" % (cfg.name, last_line(err)))
        raise AgentProcessError("cannot put the agent in %s on %s: %s" % (
            cfg.agent_cache, cfg.name, self.cut_short(code, out, err)))

    def _say_swept(self, out: str) -> None:
        """The upload helper's removals of partials left by uploads cut short, in the log as
        the SSH transport says its own (``said_partial``)."""
        for line in out.splitlines():
            try:
                what, path, *why = json.loads(line)
            except ValueError:
                log.warning("%s: the upload helper said %r, which is none of its words",
                            self.cfg.name, line[:200])
                continue
            if what == "unread":
                log.warning("%s: cannot read %s for agents left half uploaded (%s); any there "
                            "stay, unused", self.cfg.name, path, *why)
            else:
                said_partial(self.cfg.name, path, why[0] if why else None)

    def cut_short(self, code: int, out: str, err: str) -> str:
        """The folder's own errors as the folder's; any other end (the helper or the exec
        program killed, a container gone) as the exec stream's, with how its program ended
        (a killed helper is status 137 as podman and kubectl say it)."""
        if code == FOLDER_FAILED:
            return super().cut_short(code, out, err)
        said = last_line(err or out)
        return ("the exec stream ended before its answer: %s %s%s; the next connect tries "
                "again" % (self._shown(), how_ended(code), " (%s)" % said if said else ""))

    def _shown(self) -> str:
        """The exec program as said: its name, and the target it was looked up to reach."""
        return self.prefix[0] + (" (target %s)" % self.target if self.target else "")

    def said(self) -> Optional[str]:
        """How the exec program ended, once it has (it has, or soon will, when its stream
        ended)."""
        proc = self.stream.process if self.stream is not None else None
        if proc is None:
            return None
        try:
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None
        return "exec: %s %s" % (self._shown(), how_ended(code))


def find_target(cfg: HostConfig, timeout_s: float) -> str:
    """The one line ``exec_target`` prints: the pod or container to exec into now."""
    argv = list(cfg.exec_target or ())
    shown = shlex.join(argv)
    try:
        code, out, err = run_process(argv, b"", timeout_s)
    except TransportError as error:
        raise TransportError("exec_target (%s): %s" % (shown, error)) from None
    if code != 0:
        raise TransportError("exec_target (%s) failed with status %d: %s" % (
            shown, code, last_line(err or out) or "no output"))
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines:
        raise TransportError("exec_target (%s) found no target: it printed nothing" % shown)
    if len(lines) > 1:
        raise TransportError("exec_target (%s) found %d targets (%s): it must print one line"
                             % (shown, len(lines), ", ".join(lines[:5]) + (
                                 ", ..." if len(lines) > 5 else "")))
    if lines[0].startswith("-") or not lines[0].isprintable():
        raise TransportError("exec_target (%s) printed %r, which cannot name a target" % (
            shown, lines[0][:80]))
    return lines[0]

