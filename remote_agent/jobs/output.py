"""A job's output: a named pipe the job writes to, and a size-capped log that never fails it.

The job's stdout and stderr are the write end of ``output.pipe`` (a FIFO in its job dir). Its
shim copies the pipe into ``output.log``; the daemon keeps a spare read end open, so a job whose
shim died still has a reader (and its writes never fail with EPIPE) while the daemon lives, and
the daemon copies the output from then on. A copier looks at the pipe's bytes with tee(2), writes
them, and only then takes them out of the pipe: whenever a copier dies (the shim, the daemon),
what it had not written is still in the pipe for the next one, which may copy again what the
dead one wrote just before it died (at least once, never lost). The job's pipe is held only for
the tee, never while the log is written: a log write that stalls (a slow disk) fills the pipe
and then waits the job's writes as any full pipe does, a wait SIGKILL ends. A log write that
fails — a full disk, an I/O error — drops that output and never raises: the job must not die
because its log cannot grow. Once a write succeeds again, the log says how much was dropped and
why.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from remote_agent.daemon.trust import UnsafePath, in_folder, open_dir, open_private
from remote_agent.failing import Failures
from remote_agent.text import said

PIPE_NAME = "output.pipe"
LOG_NAME = "output.log"
CHUNK = 65536
SPLICE_F_NONBLOCK = 2


# a log refused where it is read (a FIFO, a socket or a symlink in its place): said once in the
# daemon's log while it stays so, however many pushes and reads meet it, and once when it is read
REFUSED = Failures(logging.getLogger("remote_agent.jobs"), ("read", "reads"))


def dropped_note(count: int, why: str) -> str:
    return ("[fractui: %d bytes of the job's output were dropped: its log could not be written "
            "(%s)]" % (count, why))


def _libc_tee() -> Optional[Callable[[int, int, int, int], int]]:
    """tee(2) from the C library (Python has no os.tee); None where this Python has no ctypes or
    its C library no tee: the copy is then a read and a write."""
    try:
        import ctypes
        call = ctypes.CDLL(None, use_errno=True).tee
    except (ImportError, OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
    call.restype = ctypes.c_ssize_t

    def tee(pipe: int, copy: int, count: int, flags: int) -> int:
        while True:
            got = call(pipe, copy, count, flags)
            if got >= 0:
                return got
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise OSError(err, os.strerror(err))  # EAGAIN reads as BlockingIOError
    return tee


_tee = _libc_tee()


class CappedLog:
    """Appends to ``output.log``; past half the cap it becomes ``output.log.1`` and a new one
    starts, so the two together never exceed the cap. ``dir_fd``: its folder, opened already
    (``open_private``'s): the log is made, opened and rotated in that very folder."""

    def __init__(self, path: str, max_bytes: int, dir_fd: Optional[int] = None):
        self.path = path
        self.dir_fd = dir_fd
        self.half = max(4096, max_bytes // 2)
        self.fd: Optional[int] = None
        self.size = 0
        self.dropped = 0
        self.why = ""
        self.peeks = _tee is not None  # False where tee is refused: bytes are read out at once
        self._seen: Optional[Tuple[int, int]] = None  # a pipe of our own that tee copies into

    def take(self, pipe: int) -> int:
        """Copy what ``pipe`` holds (up to CHUNK bytes) into the log, or count it dropped if
        the log cannot be written, and only then take it out of the pipe: how many bytes that
        was, 0 once every writer closed the pipe; BlockingIOError if a non-blocking pipe is
        empty."""
        data, left_in, packets = self._look(pipe)
        if not data:
            return 0
        self._keep(data)
        taken = 0
        while left_in and taken < len(data):  # those bytes: this copier is their one reader
            # a packet read in part loses its rest (pipe(7)): packets are read whole
            got = os.read(pipe, CHUNK if packets else len(data) - taken)
            if not got:
                break
            taken += len(got)
            if taken > len(data):  # the rest of a packet tee copied in part: kept too
                self._keep(got[len(got) - (taken - len(data)):])
        if packets:
            self.peeks = False  # a job that writes packets: its output is read as it comes
        return len(data)

    def note(self, text: str) -> None:
        """A line of the agent's own (why the job did not start, where the daemon took over),
        on a line of its own; not written where the log cannot be (it is not the job's)."""
        if self._said():
            self._line(text)

    def close(self) -> bool:
        """Say what was dropped if there is room now, then close: whether the log says all
        (nothing dropped, or that it was). Called again, it tries again (the log opened anew
        to say it)."""
        said = self._said()
        self._unsee()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return said

    def _keep(self, data: bytes) -> None:
        lost = self._put(data) if self._said() else len(data)  # _said may clear dropped
        self.dropped += lost

    def _look(self, pipe: int) -> Tuple[bytes, bool, bool]:
        """The next bytes of ``pipe``, whether they are still in it (copied by tee; read out
        of it where tee cannot be used: refused, or any failure of the copy's own pipe, which
        takes nothing from the job's), and whether the job writes packets (O_DIRECT: a read
        takes one packet, so the copy took more than one read)."""
        if self.peeks:
            flags = 0 if os.get_blocking(pipe) else SPLICE_F_NONBLOCK
            try:
                if self._seen is None:
                    self._seen = os.pipe()
                got = _tee(pipe, self._seen[1], CHUNK, flags)  # type: ignore[misc]
                data, reads = b"", 0
                while len(data) < got:
                    data += os.read(self._seen[0], got - len(data))
                    reads += 1
                return data, True, reads > 1
            except BlockingIOError:
                raise  # nothing in the pipe now
            except OSError:
                self._unsee()  # what it holds is stale; the job's pipe still has it all
                self.peeks = False
        return os.read(pipe, CHUNK), False, False

    def _unsee(self) -> None:
        for fd in self._seen or ():
            os.close(fd)
        self._seen = None

    def _said(self) -> bool:
        """Whether the log says what was dropped (or nothing was): output goes after that."""
        if self.dropped and self._line(dropped_note(self.dropped, self.why)):
            return False
        self.dropped = 0
        return True

    def _line(self, text: str) -> int:
        """A line of the agent's words (which may name a path that is no UTF-8: ``said``)."""
        return self._put(said(text).encode() + b"\n", own_line=True)

    def _put(self, data: bytes, own_line: bool = False) -> int:
        """Write all of ``data`` (``own_line``: after a newline if the log ends inside a line);
        returns how many bytes could not be written."""
        view = memoryview(data)
        try:
            if self.fd is not None and self.size and self.size + len(data) + own_line > self.half:
                os.close(self.fd)
                self.fd = None
                name = in_folder(self.path, self.dir_fd)
                os.replace(name, name + ".1", src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            if self.fd is None:
                self.fd = open_private(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, "log",
                                       dir_fd=self.dir_fd)
                self.size = os.fstat(self.fd).st_size
            if own_line and self.size and os.pread(self.fd, 1, self.size - 1) != b"\n":
                view = memoryview(b"\n" + data)
            while view:
                written = os.write(self.fd, view)
                self.size += written
                view = view[written:]
        except (OSError, UnsafePath) as err:  # a full disk; a FIFO put in its place
            self.why = (err.strerror if isinstance(err, OSError) else None) or str(err)
            return len(view)
        return 0


PUSH_MAX_BYTES = 1 << 20  # of a log, in one `log` notification: a line stays far below the cap


def read_from(path: str, offset: int, final: bool = False,
              dir_fd: Optional[int] = None) -> Tuple[bytes, int]:
    """A followed job's log from ``offset`` (from its start if it is shorter: it rotated): at
    most PUSH_MAX_BYTES, ending on a whole UTF-8 character, and the offset to follow on from.
    So at the log's end too, unless it is ``final`` (its job has ended): a character the job
    has written half of is pushed once it is whole, where decoded in halves it read as two
    U+FFFD, though ``job.logs`` read it whole. A final log's last bytes are pushed as they
    are: nothing will finish them. ``dir_fd``: its folder, opened already."""
    fd = open_log(path, dir_fd)
    try:
        size = os.fstat(fd).st_size
        start = offset if offset <= size else 0
        data = os.pread(fd, min(size - start, PUSH_MAX_BYTES), start)
    finally:
        os.close(fd)
    if start + len(data) < size or not final:
        data = data[:whole_characters(data)]
    return data, start + len(data)


def open_log(path: str, dir_fd: Optional[int] = None) -> int:
    """A job's log (or its rotated part) opened to be read, for a push or ``job.logs``: one
    that is not the agent's own regular file is refused as it is seen, never waited on
    (``open_private``), and the refusal, raised to the reader, is said in the daemon's log.
    ``dir_fd``: its folder, opened already (``open_private``'s)."""
    try:
        fd = open_private(path, os.O_RDONLY, "log", dir_fd=dir_fd)
    except UnsafePath as err:
        REFUSED.failed(path, "%s; it is not read until it is" % err)
        raise
    REFUSED.worked(path, "%s is read again" % path)
    return fd


def whole_characters(data: bytes) -> int:
    """How much of ``data`` ends on a whole UTF-8 character (an output cut inside one keeps its
    start for the next push; bytes that are no UTF-8 at all are cut anywhere)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 \
                else 4 if byte >> 3 == 0b11110 else 1
            return len(data) - back if need > back else len(data)
    return len(data)


def make_pipe(path: str, dir_fd: Optional[int] = None) -> None:
    """The job's output FIFO, 0600 (kept if a shim made it before); ``dir_fd``: as
    ``open_private``'s."""
    try:
        os.mkfifo(in_folder(path, dir_fd), 0o600, dir_fd=dir_fd)
    except FileExistsError:
        pass


def open_reader(job_dir: str, made: Optional[Sequence[int]] = None,
                dir_fd: Optional[int] = None) -> int:
    """A non-blocking read end of the output FIFO in ``job_dir`` (never blocks, even with no
    writer): the directory opened once, never through a symlink, the agent's that nobody else
    may write (or ``dir_fd``, the shim's, opened so already), and the FIFO opened in it as
    ``open_private`` opens one (no symlink; the agent's, nobody else's to read or write); with
    ``made`` (``pipe_id`` of the one its shim made, as the shim recorded it), refused unless it
    is that very FIFO. A name swapped since the shim made it (the directory, or another FIFO
    of the agent's user put in its place) is never followed."""
    folder = open_dir(job_dir, "job directory") if dir_fd is None else dir_fd
    try:
        fd = open_private(os.path.join(job_dir, PIPE_NAME), os.O_RDONLY | os.O_NONBLOCK,
                          "output pipe", fifo=True, dir_fd=folder)
    finally:
        if dir_fd is None:
            os.close(folder)
    if made is not None and pipe_id(fd) != list(made):
        os.close(fd)
        raise UnsafePath("refusing output pipe %s: it is not the FIFO the job's shim made "
                         "(its device and inode %.80r), another was put in its place" % (
                             os.path.join(job_dir, PIPE_NAME), list(made)))
    return fd


def pipe_id(fd: int) -> List[int]:
    """Which FIFO ``fd`` is an end of ([device, inode]), as the shim records it."""
    st = os.fstat(fd)
    return [st.st_dev, st.st_ino]


DRAIN_CHUNKS = 64  # a daemon's copy of one job's pipe in one go: 4 MiB, then the next pass


def drain(fd: int, log: CappedLog) -> bool:
    """Copy what the pipe holds now into the log, at most DRAIN_CHUNKS chunks (a job that
    enlarged its pipe and writes on does not hold up the watchdog's pass); True once every
    writer has closed it."""
    try:
        for _ in range(DRAIN_CHUNKS):
            if not log.take(fd):
                return True
    except BlockingIOError:
        pass  # writers remain, nothing more for now
    return False


class _Held:
    def __init__(self, fd: int):
        self.fd = fd
        self.log: Optional[CappedLog] = None  # set once the daemon copies the output itself
        self.folder: Optional[int] = None  # the job's folder, opened, that ``log`` is kept in


class Outputs:
    """The daemon's read end of each running job's output pipe: while the daemon lives a job
    has a reader even if its shim dies, and the daemon then copies the output itself."""

    def __init__(self, jobs_dir: str, log_max_bytes: int):
        self.jobs_dir = jobs_dir
        self.log_max_bytes = log_max_bytes
        self._lock = threading.Lock()
        self._held: Dict[int, _Held] = {}

    def _dir(self, job_id: int) -> str:
        return os.path.join(self.jobs_dir, "j%d" % job_id)

    def hold(self, job_id: int, made: Optional[Sequence[int]] = None) -> None:
        """Open the job's pipe (once; ``made``: which FIFO its shim made, where it recorded
        it); a job whose pipe is gone has nothing to hold."""
        with self._lock:
            if job_id in self._held:
                return
            try:
                fd = open_reader(self._dir(job_id), made)
            except FileNotFoundError:
                return
            self._held[job_id] = _Held(fd)

    def take_over(self, job_id: int, made: Optional[Sequence[int]] = None) -> bool:
        """Copy what the job's pipe holds into its log, as its dead shim did; True the first
        time (the log says from where the agent keeps it). ``made``: as for ``hold``."""
        self.hold(job_id, made)
        with self._lock:
            held = self._held.get(job_id)
            if held is None:
                return False
            first = held.log is None
            if first:  # kept in the folder opened now, never through its name again
                held.folder = open_dir(self._dir(job_id), "job directory")
                held.log = CappedLog(os.path.join(self._dir(job_id), LOG_NAME),
                                     self.log_max_bytes, held.folder)
                held.log.note("[fractui: the job's shim ended; the agent keeps its output "
                              "from here]")
            drain(held.fd, held.log)
        return first

    def release(self, job_id: int) -> None:
        """An ended job: the last of its output kept (if the daemon was copying it), closed."""
        with self._lock:
            held = self._held.pop(job_id, None)
        if held is None:
            return
        try:
            if held.log is not None:
                drain(held.fd, held.log)
        finally:
            if held.log is not None:
                held.log.close()
            if held.folder is not None:
                os.close(held.folder)
            os.close(held.fd)
