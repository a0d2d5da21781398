"""The per-host daemon: one per state dir, serving any number of bridges on a unix socket.

It owns the GPUs (MIG changes serialised per GPU by the agent's locks) and the jobs (through the
supervisor, whose watchdog runs on a thread of its own), and pushes ``snapshot``, ``job`` and
``log`` notifications to the connections that asked for them, so clients never poll.
Notifications are sent by a thread of their own, and each connection's writes by one of its own:
a client that stops reading never holds up the watchdog, a launch or another client.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional

from remote_agent import PROTOCOL_VERSION, __version__
from remote_agent.daemon.paths import AgentPaths, agent_env, runtime_dir
from remote_agent.daemon.settings import AgentSettings, texts_digest
from remote_agent.daemon.trust import UnsafePath
from remote_agent.failing import Failures
from remote_agent.jobs.caps import CapSettings
from remote_agent.jobs.methods import job_methods
from remote_agent.jobs.output import read_from
from remote_agent.jobs.store import Job, StoreError
from remote_agent.jobs.supervisor import Supervisor, SupervisorSettings
from remote_agent.jobs.watch import TICK_S, Watchdog
from remote_agent.mig.health import GpuHealth
from remote_agent.mig.journal import MigJournal
from remote_agent.mig.made_again import MadeAgain
from remote_agent.rpc import jsonrpc as rpc
from remote_agent.rpc.jsonrpc import Dispatcher, Method, Params, RpcError
from remote_agent.serve import serve_stream
from remote_agent.service import Agent
from remote_agent.text import count

LOG_PUSHES_PER_TICK = 16  # log notifications (of at most PUSH_MAX_BYTES each) per job a tick
MAX_UNSENT_BYTES = 16 << 20  # queued for one connection, unread: beyond it the client is dropped
LOG_BACKLOG_BYTES = 2 << 20  # queued for one connection, past which no more of a log is read
PUSH_GAP_S = 0.05  # between two pushes of the logs at least
FLUSH_S = 10.0  # how long answers queued when a client's requests end may take to go out
# The host's own failures, answered with their class (docs/protocol.md, "Errors"), not as bugs.
HOST_FAILURES = {UnsafePath: rpc.NOT_PERMITTED, StoreError: rpc.HOST_FAILED,
                 OSError: rpc.HOST_FAILED}

log = logging.getLogger("remote_agent.daemon")


class Connection:
    """One bridge. Its replies and notifications are queued, in the order they are written, for
    a sender thread of its own: a client that stops reading (a bridge whose SSH link stalled)
    holds up no one else — not the threads that notify every subscriber — and once it leaves
    more than MAX_UNSENT_BYTES unread it is dropped."""

    def __init__(self, sock: socket.socket, daemon: "Daemon"):
        self.sock = sock
        self.daemon = daemon
        self.subscribed = False
        self.follows: Dict[int, int] = {}  # job id -> bytes of its current log already sent
        self._follow_lock = threading.Lock()  # follows: the client's thread and the pusher's
        self._unsent: Deque[bytes] = deque()
        self._unsent_bytes = 0
        self._queued = threading.Condition()  # guards the above, closed and ending
        self._ending = False  # the client's requests ended: send what is queued, then close
        self._stop_once_answered = False  # it asked daemon.shutdown (``flush``)
        self.closed = False
        self._sender = threading.Thread(target=self._send, name="conn-send", daemon=True)
        self._sender.start()

    # the writer interface serve_stream expects
    def write(self, data: bytes, if_subscribed: bool = False) -> None:
        """``if_subscribed``: a subscription's push, dropped once ``unsubscribe`` cleared the
        flag (read here, under the queue's lock, as that call clears it)."""
        with self._queued:
            if self.closed:
                raise BrokenPipeError("the connection was dropped")
            if if_subscribed and not self.subscribed:
                return
            if self._unsent_bytes and self._unsent_bytes + len(data) > MAX_UNSENT_BYTES:
                log.warning("dropping a connection that left %d bytes unread",
                            self._unsent_bytes)
                self._close_locked()
                raise BrokenPipeError("the connection left too much unread")
            self._unsent.append(data)
            self._unsent_bytes += len(data)
            self._queued.notify_all()

    def flush(self) -> None:
        """(serve_stream's, once an answer is queued.) A ``daemon.shutdown`` answered here
        stops the daemon now, not as it is asked: the daemon sends what is queued before it
        exits (``Daemon.serve``), so its asker (a bridge handing over) gets the answer, where
        a daemon that stopped as the method ran could exit before it was written."""
        if self._stop_once_answered:
            self.daemon.stopping.set()

    def unsent(self) -> int:
        """Bytes queued for the client and not yet taken by it."""
        with self._queued:
            return self._unsent_bytes

    def notify(self, method: str, params: Dict[str, Any], if_subscribed: bool = False) -> None:
        """A notification, written as an answer is (``rpc.dump``); one that is not JSON (a
        NaN: a bug of ours) is said and not sent, as the client would refuse its line.
        ``if_subscribed``: a subscription's push (``write``)."""
        try:
            line = rpc.dump({"jsonrpc": "2.0", "method": method, "params": params})
        except ValueError as err:
            log.error("a %s notification is not valid JSON (%s); not sent", method, err)
            return
        try:
            self.write(line.encode() + b"\n", if_subscribed)
        except OSError as err:
            log.info("dropping a connection that cannot take notifications: %s", err)

    def _send(self) -> None:
        """The sender thread: what is queued, in order, until the connection closes (or, once
        the client's requests ended, until all is sent)."""
        while True:
            with self._queued:
                while not self._unsent and not self.closed and not self._ending:
                    self._queued.wait()
                if self.closed or not self._unsent:
                    return
                data = self._unsent[0]
            try:
                self.sock.sendall(data)
            except OSError as err:
                log.info("connection ended while sending: %s", err)
                with self._queued:
                    self._close_locked()
                return
            with self._queued:
                self._unsent.popleft()
                self._unsent_bytes -= len(data)
                drained = not self._unsent_bytes
            if drained and self.follows:  # it took all it was sent: more of its logs now
                self.daemon.logs_taken.set()

    def _close_locked(self) -> None:
        """No more is queued or sent; a sender or reader blocked on the socket is woken."""
        if not self.closed:
            self.closed = True
            self._queued.notify_all()
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client closed it first

    def methods(self) -> Dict[str, Method]:
        """Every method this connection serves, composed here and only here: ``hello`` lists
        exactly this table."""
        daemon = self.daemon
        table = daemon.agent.methods()
        table.update(job_methods(daemon.supervisor, self.follow))
        table.update({
            "subscribe": Method(self.subscribe), "unsubscribe": Method(self.unsubscribe),
            "daemon.version": Method(daemon.version), "daemon.shutdown": Method(self.shutdown),
        })
        table["hello"] = daemon.agent.hello_method(lambda: table)
        return table

    def subscribe(self, p: Params) -> Dict[str, Any]:
        self.subscribed = True
        return {"snapshot": self.daemon.last_snapshot(),
                "jobs": [j.record() for j in self.daemon.supervisor.store.all()]}

    def shutdown(self, p: Params) -> Dict[str, Any]:
        """Stop serving, once this answer is queued (``flush``); jobs keep running under their
        shims for the next daemon to adopt."""
        self._stop_once_answered = True
        return {"stopping": True,
                "jobs_left_running": len(self.daemon.supervisor.store.active())}

    def unsubscribe(self, p: Params) -> Dict[str, Any]:
        """No push comes after this answer: one queued before the flag is cleared goes before
        it, and one a pusher holds meanwhile (it took the subscribers before) is dropped."""
        with self._queued:
            self.subscribed = False
        return {"subscribed": False}

    def follow(self, job_id: int, on: bool, offset: int) -> None:
        with self._follow_lock:
            if on:
                self.follows[job_id] = offset
            else:
                self.follows.pop(job_id, None)

    def push_log(self, job_id: int, params: Dict[str, Any], offset: Optional[int]) -> bool:
        """Sends one chunk of a followed log and records how far it went (``offset``; None:
        the last word, the follow ends) — only while the job is still followed, so a chunk
        read as the client unfollows is never sent after that answer, nor the follow taken
        up again. Whether it was sent."""
        with self._follow_lock:
            if job_id not in self.follows:
                return False
            self.notify("log", params)
            if offset is None:
                del self.follows[job_id]
            else:
                self.follows[job_id] = offset
            return True

    def serve(self) -> None:
        try:
            with self.sock.makefile("rb") as reader:
                serve_stream(Dispatcher(self.methods(), self.daemon.calls_failing,
                                        HOST_FAILURES), reader, self)
        except OSError as err:
            log.info("connection ended: %s", err)
        finally:
            self.finish()
            self.sock.close()

    def finish(self, flush_s: float = FLUSH_S) -> None:
        """The client's requests ended: what is queued (the answers to its last requests) goes
        out, for at most ``flush_s``, then the connection closes."""
        with self._queued:
            self._ending = True
            self._queued.notify_all()
        self._sender.join(flush_s)
        with self._queued:
            self._close_locked()
        self._sender.join()


def supervisor_settings(settings: AgentSettings, backend: str) -> SupervisorSettings:
    return SupervisorSettings(
        caps=CapSettings(mps=settings.mps, hami_core_lib=settings.hami_core_lib,
                         cgroup_parent=settings.effective(backend)["cgroup_parent"]),
        log_max_bytes=settings.log_max_mib << 20, retention_s=settings.retention_hours * 3600,
        watchdog_grace_s=settings.watchdog_grace_s, usage_sample_s=settings.usage_sample_s)


class Daemon:
    def __init__(self, paths: AgentPaths, agent: Agent, settings: AgentSettings, code_hash: str,
                 sim_spec: Optional[str]):
        self.paths = paths
        self.agent = agent
        self.settings = settings
        self.code_hash = code_hash
        self.sim_spec = sim_spec
        self.started_at = time.time()
        self.stopping = threading.Event()
        self.logs_taken = threading.Event()  # a follower took all it was sent (Connection)
        self.connections: List[Connection] = []
        self._conn_lock = threading.Lock()
        self._snapshot: Optional[Dict[str, Any]] = None
        self.failures = Failures(log)  # of its loops' steps: each said once, not each pass
        self.calls_failing = Failures(log, ("call", "calls"))  # by method, on any connection
        self._jobs_to_tell: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        # a simulated host's workloads reach its GPUs through the simulator in the agent's code
        job_env = {"FRACTUI_SIM_STATE": paths.sim_state,
                   "PYTHONPATH": agent_env({})["PYTHONPATH"]} \
            if agent.backend_kind == "sim" else {}
        self.supervisor = Supervisor(paths, agent, supervisor_settings(
            settings, agent.backend_kind), self.notify_job, job_env,
            paths.sim_state if agent.backend_kind == "sim" else None)
        agent.reserved = lambda: {j.instance for j in self.supervisor.store.active()
                                  if j.instance}
        agent.cap_probe = self.supervisor.cap_probe
        agent.journal = MigJournal(paths.mig_journal)
        agent.health = GpuHealth(paths.gpu_health)  # kept for the next daemon, as the journal
        agent.made_again = MadeAgain(path=paths.made_again)  # before the journal's rollbacks
        agent.xids.keep_in(paths.xid_events)
        agent.owners = self.supervisor.owners
        agent.runtimes = self.supervisor.runtimes.record()

    # -- methods --

    def version(self, p: Params) -> Dict[str, Any]:
        effective = self.settings.effective(self.agent.backend_kind)
        return {"version": __version__, "code_hash": self.code_hash,
                "settings": effective, "settings_digest": texts_digest(effective),
                "job_tracking": self.supervisor.cgroups.kind,
                "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
                "backend": self.agent.backend_kind, "sim_spec": self.sim_spec,
                "state_dir": self.paths.state_dir, "started_at": self.started_at}

    # -- notifications --

    def _subscribers(self) -> List[Connection]:
        with self._conn_lock:
            self.connections = [c for c in self.connections if not c.closed]
            return [c for c in self.connections if c.subscribed]

    def notify_job(self, job: Job) -> None:
        """Queued: the sender thread tells the subscribers, so no caller waits on a socket."""
        self._jobs_to_tell.put(job.record())

    def _tell_jobs(self) -> None:
        while True:
            record = self._jobs_to_tell.get()
            for conn in self._subscribers():
                conn.notify("job", record, if_subscribed=True)

    def last_snapshot(self) -> Optional[Dict[str, Any]]:
        if self._snapshot is None:
            self._snapshot = self._take_snapshot()
        return self._snapshot

    def _take_snapshot(self) -> Optional[Dict[str, Any]]:
        try:
            snap = self.agent.take_snapshot()
        except RpcError as err:
            self.failures.failed("snapshot", "snapshot failed: %s; taken again each %.1f s" % (
                err.message, TICK_S))
            return None
        self.failures.worked("snapshot", "snapshots are taken again")
        return snap

    def _push_snapshot(self) -> None:
        """Pushed to those subscribed once it is kept, not to those before it was taken: one
        that subscribed meanwhile was answered the snapshot before (``last_snapshot``)."""
        if not self._subscribers():
            self._snapshot = None
            return
        snap = self._take_snapshot()
        if snap is None:
            return
        old = self._snapshot
        self._snapshot = snap
        if old is None or {**old, "time": 0} != {**snap, "time": 0}:
            for conn in self._subscribers():
                conn.notify("snapshot", snap, if_subscribed=True)

    def _push_logs(self) -> None:
        with self._conn_lock:
            conns = [c for c in self.connections if c.follows and not c.closed]
        for conn in conns:
            for job_id, offset in list(conn.follows.items()):
                if conn.unsent() > LOG_BACKLOG_BYTES:
                    break  # it reads slower than the logs grow: it is sent more once it has read
                # a step of its own: one job's log failing to read holds up no other's
                self.failures.step("pushing job j%d's log" % job_id,
                                   functools.partial(self._push_log, conn, job_id, offset))

    def _push_log(self, conn: Connection, job_id: int, offset: int) -> None:
        """Pushes what job ``job_id``'s log has from ``offset`` on to ``conn``, a few bounded
        chunks a tick (no line grows with a log's size), and its end once the job has ended."""
        sup = self.supervisor
        job = sup.store.get(job_id)
        data = b""
        try:
            with sup.logs(job) if job else nullcontext(([], None)) as (paths, dir_fd):
                for _ in range(LOG_PUSHES_PER_TICK):
                    data, offset = read_from(paths[-1], offset, job is None or not job.active,
                                             dir_fd) if paths else (b"", offset)
                    if not data or not conn.push_log(job_id, {
                            "job": "j%d" % job_id,
                            "data": data.decode("utf-8", errors="replace")}, offset) or \
                            conn.unsent() > LOG_BACKLOG_BYTES:
                        break  # (or unfollowed meanwhile, or enough queued for now)
        except UnsafePath as err:  # not the agent's own file: never read it
            conn.push_log(job_id, {"job": "j%d" % job_id, "eof": True, "error": str(err)}, None)
            return
        if not data and (job is None or not job.active):
            conn.push_log(job_id, {"job": "j%d" % job_id, "eof": True}, None)

    # -- running --

    def monitor(self) -> None:
        """Pushes the snapshot each TICK_S, and followed logs then and as soon as a follower
        has taken all it was sent: each is sent its logs as fast as it reads them, not
        LOG_BACKLOG_BYTES a tick (about 4 MB/s), and a stalled one no faster than it reads."""
        snapshot_due = time.monotonic()
        while not self.stopping.is_set():
            started = time.monotonic()
            self.logs_taken.clear()  # (before the push: a follower draining it wakes the next)
            self.failures.step("pushing the logs", self._push_logs)  # one bad tick ends none
            if started >= snapshot_due:
                snapshot_due = started + TICK_S
                self.failures.step("pushing the snapshot", self._push_snapshot)
            self.logs_taken.wait(max(0.0, snapshot_due - time.monotonic()))
            # a job's lines of the meantime go in one push, not one each
            self.stopping.wait(max(0.0, started + PUSH_GAP_S - time.monotonic()))

    def serve(self, listener: socket.socket) -> None:
        self.agent.roll_back_cut_changes()  # before the jobs: a launch cut short made half
        adopted = self.supervisor.adopt()
        log.info("daemon %s (pid %d) serving %s; %s adopted", __version__, os.getpid(),
                 self.paths.socket, count(len(adopted), "job"))
        threading.Thread(target=Watchdog(self.supervisor).run, args=(self.stopping,),
                         name="watchdog", daemon=True).start()
        if self.agent.problem is None:
            threading.Thread(target=self.agent.xids.run, args=(self.stopping,), name="xid",
                             daemon=True).start()
        threading.Thread(target=self._tell_jobs, name="notify", daemon=True).start()
        threading.Thread(target=self.monitor, name="monitor", daemon=True).start()
        listener.settimeout(TICK_S)
        while not self.stopping.is_set():
            try:
                sock, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError as err:  # out of descriptors or memory: serve on, try again soon
                self.failures.failed("accepting", "cannot accept connections (%s): those open "
                                     "are served, and accepting is tried again each %.1f s" % (
                                         err, TICK_S))
                self.stopping.wait(TICK_S)
                continue
            self.failures.worked("accepting", "accepting connections again")
            sock.settimeout(None)
            conn = None
            try:
                conn = Connection(sock, self)
                threading.Thread(target=conn.serve, name="conn", daemon=True).start()
            except RuntimeError as err:  # no thread to spare: as with no descriptor, serve on
                self.failures.failed("serving", "cannot serve another connection (%s); each "
                                     "is closed until there are threads to spare" % err)
                if conn is not None:
                    conn.finish(0)  # its sender ends
                sock.close()
                self.stopping.wait(TICK_S)
                continue
            self.failures.worked("serving", "serving new connections again")
            with self._conn_lock:
                self.connections.append(conn)
        log.info("daemon stopping; %s running on under their shims",
                 count(len(self.supervisor.store.active()), "job"))
        with self._conn_lock:
            connections = list(self.connections)
        deadline = time.monotonic() + FLUSH_S  # what is queued goes out: daemon.shutdown's
        for conn in connections:  # answer among it, before the process exits
            conn.finish(max(0.0, deadline - time.monotonic()))


@dataclass
class Listener:
    """The daemon's socket, bound, and the inode of its file: the file is removed only while
    it is this socket's (``unbind``)."""
    sock: socket.socket
    ino: int


def bind(paths: AgentPaths) -> Listener:
    """The state dir's socket, bound (the caller holds the daemon lock, so a socket file left
    there belongs to a dead daemon) but not listening: a client's connect is refused, and
    tried again, until the daemon is ready and listens (``run_daemon``). Refused after its
    file is made, it leaves none."""
    paths.make_socket_dir()
    if paths.check_socket() is not None:
        os.unlink(paths.socket)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(paths.socket)
        listener = Listener(sock, os.stat(paths.socket).st_ino)
    except BaseException:
        sock.close()
        raise
    try:
        os.chmod(paths.socket, 0o600)
    except BaseException:
        unbind(paths, listener, pid_file=False)
        raise
    return listener


def unbind(paths: AgentPaths, listener: Listener, pid_file: bool) -> None:
    """What a daemon's start left, as it ends or fails after ``bind``: the socket closed and
    its file removed (while it is this one's), and the pid file where ``pid_file``."""
    listener.sock.close()
    try:
        if os.stat(paths.socket).st_ino == listener.ino:
            os.unlink(paths.socket)
    except FileNotFoundError:
        pass
    if pid_file:
        try:
            os.unlink(paths.pid_file)
        except FileNotFoundError:
            pass


def write_pid(fd: int) -> None:
    """This process's pid as the whole of the pid file at ``fd``, written over what it held:
    a few bytes within the block the file has already, so once a pid was written there the
    next takes no room, but on a copy-on-write filesystem (btrfs, ZFS), which writes even
    those anew: there a full disk can refuse it."""
    data = b"%d\n" % os.getpid()
    os.pwrite(fd, data, 0)  # (a regular file's few bytes: all written, or an error)
    os.ftruncate(fd, len(data))


def run_daemon(paths: AgentPaths, listener: Listener, pid_fd: Optional[int],
               make_agent: Callable[[], Agent], settings: AgentSettings, code_hash: str,
               sim_spec: Optional[str]) -> int:
    """Listens on ``listener`` (``bind``'s, bound before the daemon detached, so that a socket
    refused is said to its launcher) once ready, and serves until told to stop; the socket and
    the pid file are removed as it ends, a start that failed included: its pid's write there
    (``pid_fd``, a detached daemon's own over its launcher's, closed here), and its agent's,
    made here (``make_agent``, once detached: its NVML session is the daemon's)."""
    try:
        if pid_fd is not None:
            try:
                write_pid(pid_fd)
            except OSError as err:
                log.error("cannot write the pid file %s: %s", paths.pid_file,
                          err.strerror or err)
                return 2
            finally:
                os.close(pid_fd)
        try:
            agent = make_agent()
        except OSError as err:  # the simulated GPUs' state, written as NVML starts
            log.error("the GPUs cannot be opened: %s", err)
            return 2
        daemon = Daemon(paths, agent, settings, code_hash, sim_spec)
        signal.signal(signal.SIGTERM, lambda *_: daemon.stopping.set())
        why_not = runtime_dir().why_not
        if why_not:  # said once per daemon: its bridges find it in the same place
            log.warning("%s", why_not)
        listener.sock.listen(64)
        daemon.serve(listener.sock)
    finally:
        unbind(paths, listener, pid_file=True)
    return 0
