"""The per-job shim: starts one job, copies its output, records how it ended; outlives the daemon.

``python -m remote_agent shim JOB_DIR [REPORT_FD]``. The daemon writes ``JOB_DIR/spec.json`` and
starts the shim in a session of its own. The shim forks the job, which — before it runs any of its
own code — starts a session (and process group) of its own, joins its cgroup where it has one,
records its pid (``started.json``), takes its output pipe as stdout and stderr, sets the base
umask, becomes its user and enters its cwd; the exact reason any step fails is reported, and whose
fault it is (``fault_of``: the job's, or the host's, which another host may not share). When the
job's first process ends, whatever it left behind is killed and ``exit.json`` records the end.

A shim may die (it is a process like any other): the job runs on, and the daemon finds, watches and
stops it without it (remote_agent/jobs/procs.py). No write of the shim's can end the job: a log
that cannot grow drops output (remote_agent/jobs/output.py), and the files that record the job
are written again until there is room. Kept to the standard library and light imports: its
start-up time is part of every launch.

Files in JOB_DIR: ``shim.claim`` (the one shim that may run this job: created exclusively),
``shim.lock`` (held for the shim's life: a daemon tells a live shim by failing to lock it),
``started.json``, ``output.pipe``, ``output.log`` and ``output.log.1``, ``exit.json``;
``hami-region.json`` (REGION_RECORD), where the job has a HAMi-core region.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from remote_agent.daemon.trust import (DAMAGE, SET_ASIDE, UnsafePath, in_folder, open_dir,
                                       open_private, read_private, record, temporary_name,
                                       write_private)
from remote_agent.failing import Failures
from remote_agent.jobs.env import JOB_UMASK
from remote_agent.jobs.output import (LOG_NAME, PIPE_NAME, CappedLog, make_pipe, open_reader,
                                      pipe_id)
from remote_agent.jobs.procs import PROC_FDS, JobProcs, proc_info, proc_missing
from remote_agent.jobs.region import REGION_RECORD, remove_region
from remote_agent.programs import missing_interpreter, unsearchable
from remote_agent.rpc.jsonrpc import HOST, JOB
from remote_agent.text import said

RETRY_S = 1.0  # how often a record that could not be written is tried again
DRAIN_AFTER_END_S = 5.0  # output still arriving after the job ended (a process that escaped)


def write_json(path: str, data: Dict[str, Any], durable: bool = True,
               dir_fd: Optional[int] = None) -> None:
    """Atomically, so a reader sees the whole file or none of it (``dir_fd``: as
    ``write_private``'s)."""
    write_private(path, json.dumps(data).encode(), durable, dir_fd=dir_fd)


def _say(text: str) -> None:
    """A line for shim.log, the shim's stderr. It is on the state dir's disk: where that is full
    the line is lost, and only the line: a failed write here would end the thread or the shim
    that is retrying the very record the disk refused, leaving a running job unrecorded."""
    try:
        os.write(2, ("shim: %s\n" % text).encode("utf-8", "replace"))  # nothing held back
    except OSError:
        pass  # nowhere left to say it; what it would say is being retried


class _Said(logging.Handler):
    """The shim's log lines, said as ``_say`` says them."""

    def emit(self, record: logging.LogRecord) -> None:
        _say(record.getMessage())


def _failures() -> Failures:
    log = logging.getLogger("remote_agent.shim")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(_Said())
    return Failures(log)


# A record that cannot be written yet is said once, not at each try (a line a second into
# shim.log, on the full disk that refused it), and once more when it is written.
FAILURES = _failures()


@dataclass(frozen=True)
class JobFolder:
    """The job's folder as the shim opened it at its start: every file the shim (and the job,
    before its exec) writes goes into that very folder, through a descriptor of it (each call's
    ``dir_fd``; its words name the file by its path), never through its name again. A state
    dir wiped by hand (or lost) while the job runs lets the next daemon make a folder of the
    same name for a new job (its ids start again at j1): a write by name would land there, the
    old job's end read as the new one's."""

    path: str  # its name, for the words
    fd: int

    @classmethod
    def open(cls, path: str) -> "JobFolder":
        return cls(path, open_dir(path, "job directory"))

    def named(self, name: str) -> str:
        """``name`` in the folder, as the words say it (and as calls given ``dir_fd`` take it)."""
        return os.path.join(self.path, name)

    def has(self, name: str) -> bool:
        """Whether ``name`` is in this very folder (a symlink there is, whatever it names)."""
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def removed(self) -> bool:
        """Whether it was removed since the shim opened it: a removed directory has no link
        left, and nothing can be made in it again. On NFS, one another client removed cannot
        be looked at at all (ESTALE): removed as well. Another failure of the look is no sign
        either way: not removed, so the write is tried again and its own failure said."""
        try:
            return os.fstat(self.fd).st_nlink == 0
        except OSError as err:
            return err.errno == errno.ESTALE


# The steps before the job's process runs that are the job's own (its user, its cwd, its
# program), and the errors that say the host's trouble of the moment even there (no process,
# memory, descriptor or room to be had; an I/O error; a network or FUSE mount whose server is
# gone or stale; its program open for writing in a process of this host's, ETXTBSY, which
# only this kernel's writers cause), not the job's: ``fault_of``.
JOB_STEPS = ("become user ", "enter its cwd ", "run ")
HOST_ERRNOS = frozenset((errno.EAGAIN, errno.ENOMEM, errno.ENFILE, errno.EMFILE, errno.EIO,
                         errno.ENOSPC, errno.EDQUOT, errno.ESTALE, errno.ENOTCONN,
                         errno.ETIMEDOUT, errno.ETXTBSY))


def fault_of(step: str, err: BaseException) -> str:
    """Whose fault a step that failed before the job's process ran is (``exit.json``'s
    "fault", the launch's error class, docs/protocol.md): the job's (JOB: it can never start
    as given, wherever it goes) where one of its own steps was refused for what it names; else
    the host's (HOST: a fork refused, a full disk, a spec a crash damaged, /proc missing):
    nothing ran, so another host may start it, and the admin sends it there."""
    if step.startswith(JOB_STEPS) and not (isinstance(err, OSError) and
                                           err.errno in HOST_ERRNOS):
        return JOB
    return HOST


class NotStarted(Exception):
    """Why the job's process was not started: nothing of it ran, and its end says so (a
    start failure, as a job's own failed first step is: ``_not_started``), and whose fault
    it is (``fault_of``)."""

    def __init__(self, why: str, fault: str):
        super().__init__(why)
        self.fault = fault


@contextmanager
def _step(words: str) -> Iterator[None]:
    """A step before the job's process exists: its failure (the disk, a file refused) is why
    the job did not start ("cannot WORDS: why"), never a traceback, which the daemon reads as
    a job lost, whether it ran unknown."""
    try:
        yield
    except (OSError, UnsafePath) as err:
        raise NotStarted("cannot %s: %s" % (words, err), fault_of(words, err)) from err


def write_json_until_done(folder: JobFolder, name: str, data: Dict[str, Any],
                          first: Optional[Callable[[], bool]] = None) -> None:
    """A record the daemon needs (how the job ended): on a full disk, tried until it fits.
    ``first`` (the job's log closed, saying what output a full disk dropped: the daemon takes
    the job's last line from the log as it reads this record) is tried before each try until
    it answers True, and once more after the record, where the room came between the two.
    Where its temporary file's name holds what the agent refuses to write through
    (``UnsafePath``: a symlink, a FIFO, a directory, another's file), that is put out of the
    way (``_clear``) and the write tried again: the name is this shim's own, and a job of the
    agent's user that put one there once and ended would else leave its end unrecorded for
    good. Not where the job's folder was removed (by hand, or the state dir with it): no
    daemon can read the record there, and no room will ever come for it; a folder of that
    name now is another job's. Said, given up. (``data`` is the shim's own numbers and
    words: json.dumps escapes any character to ASCII, so its encoding cannot fail.)"""
    said = folder.named(name)
    done_first = False
    while True:
        done_first = first is None or done_first or first()
        try:
            write_json(said, data, dir_fd=folder.fd)
        except (OSError, UnsafePath) as err:
            if folder.removed():  # (not a passing EIO or EACCES, nor a full disk)
                _say("cannot write %s: its folder is gone (removed since this shim started the "
                     "job; a folder of that name now is another job's), so nothing is written "
                     "(%s)" % (said, err))
                return
            why = "%s; %s" % (err, _clear(folder, said)) if isinstance(err, UnsafePath) \
                else str(err)
            FAILURES.failed(said, "cannot write %s yet (%s); trying again each %g s" % (
                said, why, RETRY_S))
            time.sleep(RETRY_S)
            continue
        FAILURES.worked(said, "wrote %s" % said)
        if first is not None and not done_first:
            first()
        return


def _clear(folder: JobFolder, path: str) -> str:
    """What sits at this shim's own temporary name for ``path`` (``temporary_name``: its pid
    in it, so no other writer of the agent's uses it), out of the way, in words that say so
    or why it could not be. A symlink, a FIFO, a socket, a device or another's file is
    unlinked: the name alone goes, never what a link names. A directory is set aside in the
    job's folder under a fresh name (``SET_ASIDE``): a rename moves the name alone, so nothing
    in it is walked, followed or removed (a mount there stays, and says EBUSY); the daemon's
    prune removes it with the folder, as it removes all the job left there."""
    name = in_folder(temporary_name(path), folder.fd)
    try:
        os.unlink(name, dir_fd=folder.fd)
    except IsADirectoryError:
        aside = "%s%s%s" % (name, SET_ASIDE, os.urandom(4).hex())
        try:
            os.rename(name, aside, src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
        except OSError as err:
            return "it cannot be set aside: %s" % (err.strerror or err)
        return "set it aside as %s" % folder.named(aside)
    except OSError as err:
        return "it cannot be removed: %s" % (err.strerror or err)
    return "removed it"


def _child(spec: Dict[str, Any], out_fd: int, spare_fd: int, folder: JobFolder,
           errors: int, region: Optional[str]) -> None:
    """In the forked child: become the job, then exec it. Never returns; a failed step writes
    its fault (``fault_of``) and reason to ``errors`` (closed by a successful exec). The job
    keeps ``spare_fd``, a read end of its own output pipe: while any of its processes lives
    the pipe has a reader, so its writes never fail even when neither its shim nor a daemon
    is there to copy them (they wait in the pipe for the next daemon)."""
    step = "start a session"
    try:
        os.setsid()
        os.set_inheritable(spare_fd, True)
        if spec.get("cgroup"):
            step = "join its cgroup %s" % spec["cgroup"]
            with open(os.path.join(spec["cgroup"], "cgroup.procs"), "w") as procs:
                procs.write("0")
        me = proc_info(os.getpid())
        try:  # the daemon finds the job by it even if this shim dies at once
            write_json(folder.named("started.json"), {
                "pid": os.getpid(), "start_ticks": me.start_ticks if me else None,
                "started_at": time.time(), "pipe": pipe_id(spare_fd)}, False, folder.fd)
        except (OSError, UnsafePath):
            pass  # a full disk, or a name refused: the shim reports the pid, and writes it
        step = "open its stdin and output"
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP, signal.SIGINT,
                    signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)  # an ignored signal would stay ignored in it
        for index, name in spec.get("passed", {}).items():  # (as the agent, before the user)
            named = folder.named(name)
            step = "open %s" % named
            fd = open_private(named, os.O_RDONLY, "job file", dir_fd=folder.fd)
            os.set_inheritable(fd, True)
            spec["argv"][int(index)] = "/dev/fd/%d" % fd
        os.umask(JOB_UMASK)
        user = spec.get("user")
        if user:
            step = "become user %s" % user["name"]
            os.initgroups(user["name"], user["gid"])
            os.setgid(user["gid"])
            os.setuid(user["uid"])
        if region:
            step = "make the directory of its HAMi-core region %s" % region
            os.mkdir(region, 0o700)
            spec["env"][spec["hami_region"]] = os.path.join(region, "cudevshr.cache")
        step = "enter its cwd %s" % spec["cwd"]
        os.chdir(spec["cwd"])
        step = "run %s" % spec["argv"][0]
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except BaseException as err:  # noqa: B902 - whatever it is, the daemon gets its words
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        if isinstance(err, FileNotFoundError) and step == "run %s" % spec["argv"][0]:
            why = missing_interpreter(spec["argv"][0], os.pathsep.join(
                os.get_exec_path(spec["env"]))) or why
        if isinstance(err, PermissionError) and step == "run %s" % spec["argv"][0]:
            why = unsearchable(spec["argv"][0], os.pathsep.join(
                os.get_exec_path(spec["env"]))) or why
        try:
            os.write(errors, ("%s %s" % (fault_of(step, err), said("cannot %s: %s" % (
                step, why)))).encode())
        finally:
            os._exit(127)


def _pipe_ends(reader: int) -> Tuple[int, int]:
    """The job's write end of the FIFO ``reader`` reads, and its spare read end, opened
    through /proc (``_spawn``)."""
    pipe = os.path.join(PROC_FDS, str(reader))
    out_fd = os.open(pipe, os.O_WRONLY)  # the shim reads it: never blocks
    try:
        return out_fd, os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    except BaseException:
        os.close(out_fd)
        raise


def _spawn(spec: Dict[str, Any], reader: int, folder: JobFolder,
           region: Optional[str]) -> int:
    """Fork and exec the job with the FIFO the shim reads (``reader``) as its output: its pid
    once it runs its program; NotStarted, with why, where it could not. Its ends are opened
    from the shim's own descriptor, never by name: a FIFO swapped in at the name since the
    shim opened it has no reader, and a write end opened there would wait for one for good
    (the job never started, its shim hung)."""
    try:
        out_fd, spare_fd = _pipe_ends(reader)
    except OSError as err:
        raise NotStarted("cannot open its output pipe: %s" % (proc_missing() or err),
                         fault_of("open its output pipe", err)) from err
    try:
        with _step("start its process"):
            errors_r, errors_w = os.pipe()  # both close on exec: EOF with nothing said: it ran
            try:
                pid = os.fork()
            except BaseException:
                os.close(errors_r)
                os.close(errors_w)
                raise
    except BaseException:
        os.close(out_fd)
        os.close(spare_fd)
        raise
    if pid == 0:
        os.close(errors_r)
        _child(spec, out_fd, spare_fd, folder, errors_w, region)
    os.close(errors_w)
    os.close(out_fd)
    os.close(spare_fd)
    why = b""
    while True:
        chunk = os.read(errors_r, 4096)
        if not chunk:
            break
        why += chunk
    os.close(errors_r)
    if why:
        os.waitpid(pid, 0)
        fault, _, words = why.decode("utf-8", errors="replace").partition(" ")
        raise NotStarted(words, fault)
    return pid


def run(job_dir: str, report_fd: Optional[int]) -> int:
    os.umask(0o077)
    if report_fd is not None:
        os.set_inheritable(report_fd, False)  # the job must not hold the daemon's pipe
    try:
        folder = _claim(job_dir)
    except (OSError, UnsafePath) as err:  # nothing is claimed: the daemon fences the job off
        _say("cannot claim the job (%s); nothing ran" % err)
        return 1
    if folder is None:
        return 0  # another shim is starting this job, or started it: never start a job twice
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)

    spec: Dict[str, Any] = {}
    log: Optional[CappedLog] = None
    region: Optional[str] = None
    try:
        spec = _read_spec(folder)
        log = CappedLog(folder.named(LOG_NAME), spec["log_max_bytes"], folder.fd)
        with _step("make its output pipe"):
            make_pipe(folder.named(PIPE_NAME), folder.fd)
            reader = open_reader(job_dir, dir_fd=folder.fd)
            os.set_blocking(reader, True)
        region = _region(spec, folder)
        pid = _spawn(spec, reader, folder, region)
    except NotStarted as err:
        _remove_region(region, _job_uid(spec))
        _not_started(folder, log, err, report_fd)
        return 0
    me = proc_info(pid, ended_too=True)  # its start time names it even if it ended already
    job = JobProcs(pid, me.start_ticks if me else None, spec.get("cgroup"))
    started = {"pid": pid, "start_ticks": job.start_ticks, "started_at": time.time(),
               "pipe": pipe_id(reader)}
    _report(report_fd, started)
    recorded = _recorded(folder, started)

    def copy() -> None:
        while log.take(reader):
            pass

    copier = threading.Thread(target=copy, name="output", daemon=True)
    copier.start()
    _, status = os.waitpid(pid, 0)
    ended_at = time.time()
    job.signal(signal.SIGKILL)  # what the job left behind ends with it
    _remove_region(region, _job_uid(spec))
    copier.join(DRAIN_AFTER_END_S)
    # the log is closed with the end unless a process that left the job holds its pipe (the
    # copier copies on): that log is left be
    copied = not copier.is_alive()
    recorded.join()  # how it started, before how it ended
    code = os.waitstatus_to_exitcode(status)
    result: Dict[str, Any] = {"ended_at": ended_at}
    if code < 0:
        result["signal"] = -code
    else:
        result["code"] = code
    write_json_until_done(folder, "exit.json", result, log.close if copied else None)
    return 0


def _claim(job_dir: str) -> Optional[JobFolder]:
    """The job's folder, once this shim holds its lock and has claimed the job; None where
    another shim has (it starts the job, or started it). OSError or UnsafePath where it cannot
    (a full disk, a file refused, the folder gone): nothing is left claimed, so the daemon
    fences the job off as never started. The lock first, then the claim: a claim whose lock is
    free is a dead shim's (or the daemon's, which fences off a start it gave up on), never one
    still about to start. The lock is held for the shim's life."""
    folder = JobFolder.open(job_dir)
    lock = open_private(folder.named("shim.lock"), os.O_RDWR | os.O_CREAT, "shim lock",
                        dir_fd=folder.fd)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    try:
        fd = os.open("shim.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600,
                     dir_fd=folder.fd)
    except FileExistsError:
        return None
    try:
        os.write(fd, str(os.getpid()).encode())
    except OSError:  # a full disk: an empty claim would read as a shim's, the job as lost
        os.unlink("shim.claim", dir_fd=folder.fd)
        raise
    finally:
        os.close(fd)
    return folder


# The spec the daemon writes (``Supervisor._start``): what the shim and the job's first process
# read of it. A damaged one (cut short by a crash, edited by hand) ends the start in its words.
_SPEC = record({"argv": (list,), "env": (dict,), "cwd": (str,), "cgroup": (str, type(None)),
                "log_max_bytes": (int,), "user": (dict, type(None)),
                "hami_region": (str, type(None)), "region": (str, type(None)),
                "passed": (dict,)},
               ("argv", "env", "cwd", "log_max_bytes"))
_USER = record({"name": (str,), "uid": (int,), "gid": (int,)}, ("name", "uid", "gid"))


def _read_spec(folder: JobFolder) -> Dict[str, Any]:
    """The job's spec (``spec.json``); NotStarted where it cannot be read, is not there, or is
    damaged."""
    path = folder.named("spec.json")
    with _step("read its spec"):
        data = read_private(path, "job spec", folder.fd)
    if data is None:  # (the daemon wrote it before it started this shim: removed since)
        raise NotStarted("cannot read its spec: %s is not there" % path, HOST)
    try:
        spec = _SPEC(json.loads(data))
        argv = spec["argv"]
        if not argv or not all(isinstance(word, str) for word in argv):
            raise ValueError("argv is %.80r" % (argv,))  # (cut: it may be long)
        if spec.get("user") is not None:
            _USER(spec["user"])
        if spec.get("hami_region") and spec.get("region") is None:
            raise KeyError("region")  # (a region's variable, and no region named)
        for index, name in spec.get("passed", {}).items():
            if not (isinstance(name, str) and index.isdigit() and int(index) < len(argv)):
                raise ValueError("passed holds %.80r: %.80r" % (index, name))
    except DAMAGE as err:
        raise NotStarted("cannot read its spec: %s is damaged (%s: %s)" % (
            path, type(err).__name__, err), fault_of("read its spec", err)) from err
    return spec


def _not_started(folder: JobFolder, log: Optional[CappedLog], err: NotStarted,
                 report_fd: Optional[int]) -> None:
    """The end of a job whose process was not started: why in its log, and why and whose
    fault it is in ``exit.json`` (written until it fits) and to the launching daemon, which
    records it ended with that reason and answers the launch by its fault."""
    why = str(err)
    if log is None:  # its spec not read: no cap is known, and a line is all it takes
        log = CappedLog(folder.named(LOG_NAME), 0, folder.fd)
    log.note(why)
    log.close()
    write_json_until_done(folder, "exit.json", {"error": why, "fault": err.fault,
                                                "ended_at": time.time()})
    _report(report_fd, {"error": why, "fault": err.fault})


def _region(spec: Dict[str, Any], folder: JobFolder) -> Optional[str]:
    """The directory of the job's HAMi-core region (None where it has none), recorded in
    its folder before the job can make it, so a daemon removes it where this shim dies;
    NotStarted where it cannot be recorded (nothing then runs)."""
    if not spec.get("hami_region"):
        return None
    region = spec["region"]  # (named by the daemon, and kept in its table: ``Job.region``)
    with _step("record its HAMi-core region %s" % region):
        write_json(folder.named(REGION_RECORD), {"path": region, "uid": _job_uid(spec)},
                   False, folder.fd)  # (as started.json: no fsync holds up a launch)
    return region


def _remove_region(region: Optional[str], uid: int) -> None:
    """The job's HAMi-core region (``remove_region``), as the job ends."""
    if region is None:
        return
    try:
        remove_region(region, uid)
    except (UnsafePath, OSError) as err:
        _say("cannot remove the job's HAMi-core region %s: %s" % (region, err))


def _job_uid(spec: Dict[str, Any]) -> int:
    """The uid the job runs as: its user's, else the agent's."""
    return spec["user"]["uid"] if spec.get("user") else os.getuid()


def _recorded(folder: JobFolder, started: Dict[str, Any]) -> threading.Thread:
    """``started.json``, where the job's own write of it failed (a full disk): written by a
    thread of the shim's until it fits, so that a daemon that could not record the start the
    shim reported (its table on the same full disk) finds the job by it once there is room,
    rather than leaving it running unwatched and unstoppable."""
    def write() -> None:
        if not folder.has("started.json"):
            write_json_until_done(folder, "started.json", started)

    thread = threading.Thread(target=write, name="started", daemon=True)
    thread.start()
    return thread


def _report(report_fd: Optional[int], data: Dict[str, Any]) -> None:
    """Tell the launching daemon at once, so a launch needs no polling."""
    if report_fd is None:
        return
    try:
        os.write(report_fd, (json.dumps(data) + "\n").encode())
        os.close(report_fd)
    except OSError as err:  # the daemon is gone; started.json / exit.json tell the next one
        _say("could not report to the daemon: %s" % err)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None))
