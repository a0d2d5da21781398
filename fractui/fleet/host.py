"""One host of the fleet: reached, deployed to, and kept connected by a worker thread.

States (shown with the last error, never hidden): ``connecting``; ``online`` (the agent answers);
``degraded`` (connected, but the agent reports a problem: NVML failed, MIG read-only for lack of
root, another protocol); ``offline`` (unreachable; retried with backoff); ``untrusted`` (host key
unknown, changed or revoked: nothing is sent until the admin has trusted a new host's key).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple, Type

from fractui import __version__
from fractui.config import HostConfig, SshSettings
from remote_agent.failing import PAST_CAP, TRIES, Failures
from fractui.fleet import answers, sshlog
from fractui.fleet.client import (SAID_ONE_BY_ONE, AgentCallError, AgentClient,
                                  ConnectionLost, host_words)
from fractui.fleet.hostkeys import UntrustedHostKey
from fractui.fleet.sshconfig import SshConfigError
from fractui.fleet.transport.base import AgentProcessError, Transport, TransportError
from fractui.fleet.transport.kinds import transport_for
from fractui.fleet.zipapp import AgentArchive
from remote_agent import JOB_KEYS, PROTOCOL_VERSION
from remote_agent.gpu.models import mig_geometry
from remote_agent.jobs.store import FINISHED
from remote_agent.mig import health
from remote_agent.mig.layout import misfit
from remote_agent.rpc.jsonrpc import PROTOCOL_MISMATCH

log = logging.getLogger("fractui.fleet")

STATES = ("connecting", "online", "degraded", "offline", "untrusted")
PROBE_S = 15.0  # silence from a connected agent after which it is asked whether it answers
PROBE_WAIT_S = 30.0  # how long it then has to answer
STDERR_LINE_BYTES = 2000  # of a line of the agent's stderr read at once: a longer one, in parts
_ABOUT_JOBS = ("answer", "malformed", "listener")  # the failures said by the job they are about
CallAgent = Callable[..., Any]  # (method, params=None) -> result


def _ssh_errors() -> Tuple[Type[BaseException], ...]:
    """paramiko's own error, where paramiko is loaded: only an SSH host's transport raises it,
    and only that transport loads paramiko (transport.kinds), so a fleet of local and exec
    hosts runs without it. Another host's thread may be importing paramiko right now: its
    module is then in sys.modules without the class yet, and no error of a class not yet
    defined can have been raised, so there is nothing of it to catch."""
    error = getattr(sys.modules.get("paramiko.ssh_exception"), "SSHException", None)
    return (error,) if error is not None else ()


class HostUnavailable(Exception):
    """A call to a host that is not connected now; says what state it is in and why."""


class AnswerLost(HostUnavailable):
    """The connection ended (or went silent) after the request was sent: the agent may have
    carried it out. ``reason`` says how the connection ended."""

    def __init__(self, host: str, method: str, reason: str):
        super().__init__("%s: the connection was lost waiting for the answer to %s: %s" % (
            host, method, reason))
        self.host, self.method, self.reason = host, method, reason


class AnswerMalformed(AnswerLost):
    """The agent answered, but not in the shape the fleet reads (``answers``): what it did is
    not known, as with an answer lost."""

    def __init__(self, host: str, method: str, said: str):
        HostUnavailable.__init__(self, "%s: the agent's answer to %s was malformed: %s" % (
            host, method, said))
        self.host, self.method, self.reason = host, method, "malformed: " + said


@dataclass
class HostStatus:
    name: str
    state: str = "connecting"
    error: Optional[str] = None
    since: float = field(default_factory=time.time)
    hello: Optional[Dict[str, Any]] = None
    snapshot: Optional[Dict[str, Any]] = None
    jobs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    uploaded: Optional[bool] = None  # whether the last connect had to upload the agent

    def take(self, record: Dict[str, Any], only_new: bool = False) -> Optional[str]:
        """Keeps a job's record (``only_new``: unless one of it is kept). A host may name a new
        job at every push, so past ``answers.JOBS_MOST`` records the oldest ended one gives
        way; with none ended the new one is left out: what was, said (or None)."""
        ident = record["id"]
        if ident in self.jobs:
            if not only_new:
                self.jobs[ident] = record
            return None
        if len(self.jobs) >= answers.JOBS_MOST:
            ended = [(rec.get("ended_at") or 0, key) for key, rec in self.jobs.items()
                     if rec.get("state") in FINISHED]
            if not ended:
                return "its agent's record of job %s was left out: it lists %d jobs that " \
                       "have not ended, the most taken of a host" % (host_words(ident, True),
                                                                     len(self.jobs))
            del self.jobs[min(ended)[1]]
        self.jobs[ident] = record
        return None

    def forget_ended(self, before: float) -> Set[str]:
        """Forgets the records of jobs that ended before ``before`` (epoch seconds): the
        agent forgets them then too (its retention) and tells no one, so a connection that
        lasts weeks would otherwise keep every job it ever ran, walked by every pass.
        Returns what the jobs forgotten were named by: their ids and keys."""
        ended = [key for key, rec in self.jobs.items()
                 if rec.get("state") in FINISHED
                 and isinstance(rec.get("ended_at"), (int, float))
                 and rec["ended_at"] < before]
        gone = set(ended) | {self.jobs[key].get("key") for key in ended}
        for key in ended:
            del self.jobs[key]
        return {name for name in gone if isinstance(name, str)}

    def record(self) -> Dict[str, Any]:
        """The host as ``fractui status --json`` shows it (documented in docs/cli.md)."""
        gpus = (self.snapshot or {}).get("gpus") or (self.hello or {}).get("gpus") or []
        agent = None
        if self.hello:
            agent = {k: self.hello.get(k) for k in ("agent_version", "protocol", "backend",
                                                    "driver_version", "host", "privileges")}
        return {"name": self.name, "state": self.state, "error": self.error,
                "since": self.since, "agent": agent, "gpus": gpus,
                "jobs": sorted(self.jobs.values(), key=lambda j: j.get("created_at") or 0)}


def agent_args(cfg: HostConfig, state_dir: str) -> List[str]:
    """The agent's words for this host: its state dir, simulated GPUs and every agent setting
    of its config entry (a daemon running with other settings is handed over)."""
    return ["serve", "--stdio", "--state-dir", state_dir] + (
        ["--sim", cfg.sim] if cfg.sim else []) + cfg.agent_settings().words()


# What to do when sudo -n refuses the agent's command.
SUDO_FIX = ("allow the login passwordless sudo for the agent's command (docs/cli.md, \"How hosts "
            "are reached\", gives the sudoers line), or reach the host as root")
# A become host's error where its login finds no sudo to run, and what to do then.
SUDO_MISSING = "sudo is not found on %s"
SUDO_MISSING_FIX = ("install sudo on the host, on the login's PATH there, or reach the host as "
                    "root and drop become")


class _Conn:
    """An agent connection: its client, how to end it, the last lines of its stderr, and the
    transport it came over."""

    def __init__(self, client: AgentClient, close: Callable[[], None], stderr_stream: Any,
                 transport: Transport):
        self.client = client
        self.close = close
        self.transport = transport
        self.stderr: Deque[str] = deque(maxlen=20)
        self._drain = threading.Thread(target=self._read_stderr, args=(stderr_stream,),
                                       daemon=True)
        self._drain.start()

    def _read_stderr(self, stream: Any) -> None:
        try:
            for raw in iter(lambda: stream.readline(STDERR_LINE_BYTES), b""):
                self.stderr.append(raw.decode("utf-8", errors="replace").rstrip())
        except Exception:  # the link's end, as the reader of stdout will say; kept, not printed
            log.debug("the agent's stderr ended", exc_info=True)

    def why_it_ended(self) -> str:
        """The agent's last words, once it has said them all."""
        self._drain.join(timeout=2)
        return " | ".join(self.stderr)


class HostSession:
    """Keeps one host connected from a worker thread; safe to call from any thread."""

    def __init__(self, cfg: HostConfig, ssh: SshSettings, archive: Callable[[], AgentArchive],
                 on_change: Optional[Callable[[HostStatus], None]] = None,
                 reconnect_max_s: float = 30.0):
        self.cfg = cfg
        self.ssh = ssh
        self.archive = archive
        self.on_change = on_change
        self.reconnect_max_s = reconnect_max_s
        self.status = HostStatus(cfg.name)
        # called with every notification the agent pushes (method, params), e.g. for logs -f
        self.listeners: List[Callable[[str, Dict[str, Any]], None]] = []
        # called with the status after each change, as on_change is (the scheduler's wakes)
        self.watchers: List[Callable[[HostStatus], None]] = []
        # called on every (re)connect before the host counts as back online, with a way to
        # call its agent and the agent's job records: where the scheduler stops stale copies
        self.connect_hooks: List[Callable[[str, CallAgent, Dict[str, Dict[str, Any]]], None]] = []
        self._conn: Optional[_Conn] = None
        self._transport: Optional[Transport] = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self.settled = threading.Event()
        # notifications of a connection not yet installed (None once it is)
        self._early: Optional[List[Tuple[str, Dict[str, Any]]]] = None
        self._malformed: Dict[str, str] = {}  # "snapshot", "job ID" or "job" -> what was wrong
        self._failures = Failures(log, TRIES)  # what fails at every push or reconnect, said once
        self._mended: Set[str] = set()  # where its agent's values were mended, said once each
        self._cut: Dict[str, str] = {}  # what of its agent's answers was left out, by kind
        self._mended_lock = threading.Lock()
        self._lag = 0.0  # how far its agent's clock is behind this one's (``_dated_locked``)
        self._thread = threading.Thread(target=self._run, name="host-%s" % cfg.name,
                                        daemon=True)
        sshlog.keeper()

    # -- public --

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends its worker; of a session never started too (what would have started it was
        refused), so that the clean-up after a refusal says the refusal, not a RuntimeError."""
        self._stop.set()
        self._wake.set()
        self._drop()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def connect_no_more(self) -> None:
        """The connection it has serves on until it ends (or ``stop``); then the worker ends
        rather than connect again. For a caller about to shut the agent down through it (the
        demo's stop): a session that reconnected would start the agent again."""
        self._stop.set()
        self._wake.set()

    def call(self, method: str, params: Optional[Dict[str, Any]] = None,
             timeout_s: float = 60.0) -> Any:
        conn = self._conn
        if conn is None or self.status.state not in ("online", "degraded"):
            raise HostUnavailable("%s is %s%s" % (self.cfg.name, self.status.state, (
                ": " + self.status.error) if self.status.error else ""))
        params = checked_by_key(self.status.hello, method, params)
        try:
            result = self._checked(method, conn.client.call(method, params, timeout_s),
                                   params)
        except ConnectionLost as err:
            raise AnswerLost(self.cfg.name, method, _lost_why(conn, str(err))) from err
        if method == "job.launch":
            # the agent tells its job's record on another thread, which may come after this
            # answer: kept now, so no view taken meanwhile misses a job that runs (a record
            # told first is newer, and stays)
            with self._lock:
                left = self.status.take(result, only_new=True)
            self._jobs_left_out(left)
        return result

    # -- state --

    def _set(self, state: str, error: Optional[str] = None, **changes: Any) -> None:
        with self._lock:
            self._set_locked(state, error, **changes)
        self._changed()

    def _set_locked(self, state: str, error: Optional[str] = None, **changes: Any) -> None:
        if state != self.status.state or error != self.status.error:
            self.status.since = time.time()
        self.status.state = state
        self.status.error = error
        for name, value in changes.items():
            setattr(self.status, name, value)

    def _notify(self, method: str, params: Dict[str, Any]) -> None:
        judged = method in ("snapshot", "job")  # kept in the host's state
        checked = judged or method == "log"  # (a followed job's output: read, not kept)
        said = answers.problem(method, params) if checked else None
        about = _about(params) if method != "snapshot" else None
        if said is not None:  # kept from everyone: the last good one stands, the host says why
            # (said once while they come malformed, in whatever way: each push may quote
            # another of the host's values, and the host pushes as often as it likes; a job's
            # records by the job, so a good record of another mends nothing)
            self._failures.failed(_malformed(method, about), "%s: ignoring a malformed %s from "
                                  "its agent: %s" % (self.cfg.name, _what(method, about), said),
                                  same=method, cap=SAID_ONE_BY_ONE)
        else:
            if checked:
                for name in {_malformed(method, about), _malformed(method, None)}:
                    self._failures.worked(name, "%s: its agent's %s is well formed again" % (
                        self.cfg.name, _what(method, name[-1])))
            params = self._mend(method, params, about)
            self._tell(method, params, about)
        if not judged:
            return
        gone: Set[str] = set()
        left: Optional[str] = None
        with self._lock:
            self._mark_locked(method, params, said)
            if self._early is not None:  # connecting: newer than what subscribe answered
                if said is None:
                    self._early.append((method, params))
                return
            if said is None:
                left = _apply(self.status, method, params)
                if method == "snapshot":
                    self._dated_locked(params)
                gone = self.status.forget_ended(
                    time.time() - self._lag - self.cfg.retention_hours * 3600)
            if self.status.state in ("online", "degraded") and self.status.hello is not None:
                self._set_problem_locked()
        self._forget_failures(gone, "is forgotten, as its agent forgets it")
        if said is None:
            self._jobs_left_out(left)
        self._changed()

    def _forget_failures(self, gone: Set[str], why: str) -> None:
        """Says no more what failed about the jobs ``gone`` (their records forgotten, as their
        agent forgets them, or not among its records as it connects): no call, record or
        notification about them is to come, so none would mend it, and failing for ever they
        would fill the SAID_ONE_BY_ONE said of their kind, leaving every later failure of it
        unsaid over a connection of months. The marks of its answers and records about them
        in the host's state go too: else the host read degraded for as long, by a launch
        answered malformed whose job then ran and ended, never to be launched again."""
        with self._lock:
            marks = [key for key in self._malformed for name in gone
                     if key == "job " + name or (key.startswith("answer ") and key.endswith(
                         _of(name)))]
            for key in marks:
                del self._malformed[key]
            if marks and self.status.state in ("online", "degraded") and (
                    self.status.hello is not None):
                self._set_problem_locked()
        for kind in _ABOUT_JOBS if gone else ():
            for name in self._failures.failing(kind):
                if name[-1] in gone:
                    self._failures.worked(name, "%s: job %s %s: what failed about it (%s) "
                                          "is said no more" % (self.cfg.name,
                                                               host_words(name[-1], True), why,
                                                               name[1]))

    def _tell(self, method: str, params: Dict[str, Any], about: Optional[str]) -> None:
        """Hands the notification to each listener. One that fails keeps neither the others
        nor the host's own record of it from going on: said with its stack once while it fails
        on that method's notifications of that job (so one that fails on one job's, beside
        others, is not said mended at each of theirs), once when it mends, or is removed."""
        listeners = list(self.listeners)
        for listener in listeners:
            name = ("listener", method, listener, about)
            try:
                listener(method, params)
            except Exception as err:
                self._failures.failed(name, "%s: what listens to its %s notifications%s "
                                      "failed (%s: %s)" % (
                                          self.cfg.name, host_words(method, True), _of(about),
                                          type(err).__name__, err),
                                      logging.ERROR, True, cap=SAID_ONE_BY_ONE)
            else:
                self._failures.worked(name, "%s: what listens to its %s notifications%s goes "
                                      "through again" % (self.cfg.name,
                                                          host_words(method, True), _of(about)))
        for name in self._failures.failing("listener"):
            if name[2] not in listeners and name[3] is not PAST_CAP:  # gone: said no more
                self._failures.worked(name, "%s: what listened to its %s notifications%s "
                                      "listens no more" % (self.cfg.name,
                                                           host_words(name[1], True),
                                                           _of(name[3])))

    def _dated_locked(self, snapshot: Optional[Dict[str, Any]]) -> None:
        """How far the agent's clock is behind this one's, by the time of ``snapshot``, just
        heard (0 where it is not behind, or an older agent's snapshot has no time). The agent
        dates an ended job and prunes it by its own clock: by this one alone, a host whose
        clock is behind by more than the retention had a job's end forgotten as it came, and
        the scheduler ended the job as lost. A snapshot heard late makes the lag longer, and
        a record is kept longer: never forgotten before its agent forgets it."""
        when = (snapshot or {}).get("time")
        if isinstance(when, (int, float)):
            self._lag = max(0.0, time.time() - when)

    def _mark_locked(self, method: str, params: Any, said: Optional[str]) -> None:
        """Mark a malformed snapshot or job record (``said``: what is wrong) until a good
        snapshot, or a good record of that job, comes; or clear its mark. A job record whose id
        cannot be read is marked as such until any good job record comes."""
        ident = params.get("id") if method == "job" and isinstance(params, dict) else None
        keys = [method] if method == "snapshot" else (
            ["job %s" % ident] if isinstance(ident, str) else []) + ["job"]
        if said is None:
            for key in keys:
                self._malformed.pop(key, None)
            return
        if method == "job" and keys[0] not in self._malformed and len(
                self._malformed) > SAID_ONE_BY_ONE:  # (the one snapshot is marked as itself)
            keys, said = ["job"], "and more, past %d marked one by one" % SAID_ONE_BY_ONE
            ident = None  # (the mark that any good job record clears)
        self._malformed[keys[0]] = "its agent sent a malformed %s, ignored: %s" % (
            _what(method, ident if isinstance(ident, str) else None), said)

    def _mark_answer(self, method: str, about: Optional[str], said: Optional[str]) -> None:
        """Marks the host failing by an answer to ``method`` (about job ``about``) found
        malformed (``said``), until that call about that job is answered well again or the
        host connects again: a good answer to another call, or about another job, mends none,
        so an agent whose calls fail one after another reads failing, not online. Past
        SAID_ONE_BY_ONE marks, one more says there are more (as job records' marks do)."""
        key = "answer %s%s" % (method, _of(about))
        with self._lock:
            if said is None:
                changed = self._malformed.pop(key, None) is not None
            else:
                if key not in self._malformed and len(self._malformed) > SAID_ONE_BY_ONE:
                    key, said = "answer", "and more, past %d marked one by one" % (
                        SAID_ONE_BY_ONE)
                changed = True
                self._malformed[key] = "its agent answered %s malformed: %s" % (
                    key[len("answer "):] or "calls", said)
            if not changed or self.status.state not in ("online", "degraded") or (
                    self.status.hello is None):
                return
            self._set_problem_locked()
        self._changed()

    def _set_problem_locked(self) -> None:
        """The connected host's state: degraded by its agent's problems and the snapshot or
        job records it sent malformed (each until a good one of it comes); else online."""
        problems = [hello_problem(self.status.hello or {}, self.status.snapshot)] + [
            said for _key, said in sorted(self._malformed.items())] + [
            said for _key, said in sorted(self._cut.items())]
        problem = "; ".join(p for p in problems if p) or None
        self._set_locked("degraded" if problem else "online", problem)

    def _changed(self) -> None:
        """Tells ``on_change`` and the watchers. One that fails keeps neither the others nor
        the host's worker from going on (a worker ended by it would never connect the host
        again): its failure is logged with its stack once while it repeats, and said once
        more when all of them go through again."""
        failed = False
        for hear in ([self.on_change] if self.on_change is not None else []) + list(
                self.watchers):
            try:
                hear(self.status)
            except Exception as err:
                failed = True
                self._failures.failed("listeners", "%s: what listens to its changes failed "
                                      "(said once while it fails)" % self.cfg.name,
                                      logging.ERROR, True, "%s: %s" % (type(err).__name__, err))
        if not failed:
            self._failures.worked("listeners", "%s: what listens to its changes hears them "
                                  "again" % self.cfg.name)

    # -- the worker --

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            if self.status.state not in ("offline", "untrusted"):
                self._set("connecting", self.status.error)
            try:
                conn = self._connect()
            except UntrustedHostKey as err:
                self._set("untrusted", str(err))
                self.settled.set()
            except (TransportError, SshConfigError, AgentProcessError, OSError, EOFError,
                    ConnectionLost, AgentCallError, *_ssh_errors()) as err:
                self._set("offline", str(err) or type(err).__name__)
                self.settled.set()
            except Exception as err:  # a bug of ours must not kill the host's worker: show it
                # (its stack once while it fails so, not at every try to connect)
                self._failures.failed("connect", "connecting to %s failed (%s: %s)" % (
                    self.cfg.name, type(err).__name__, err), logging.ERROR, True)
                self._set("offline", "internal error: %s: %s (the stack is in %s)" % (
                    type(err).__name__, err, sshlog.debug_log_path()))
                self.settled.set()
            else:
                self._failures.worked("connect", "connecting to %s works again" % self.cfg.name)
                self.settled.set()
                backoff = 0.5
                if self._stop.is_set():  # stopped while connecting: stop's _drop found no
                    self._drop()         # connection to close yet, so this one is closed here
                    break
                why = self._silent(conn) or _lost_why(conn, conn.client.close_reason)
                if not self._stop.is_set():  # said before the drop, which can wait on the
                    self._set("offline", "connection lost: %s" % why)  # link (10 s, local)
                self._drop()
            self._wake.wait(backoff)
            self._wake.clear()
            backoff = min(backoff * 2, self.reconnect_max_s)

    def _silent(self, conn: _Conn) -> Optional[str]:
        """Until the connection ends (None), or the agent stops answering (why). A quiet host
        pushes nothing, so after PROBE_S without a word from the agent it is asked for
        something cheap; no answer within PROBE_WAIT_S (a stopped agent, an SSH link that
        stalled without closing) ends the connection, so the host reads offline and is
        reached afresh, rather than online with what it said last. Not while a call is in
        flight: the agent answers a connection's requests in turn, so the probe would wait
        behind a long one (a GPU reset) and cut it off; that call has its own timeout."""
        client = conn.client
        methods = (self.status.hello or {}).get("methods") or ()
        probe = "daemon.version" if "daemon.version" in methods else "hello"
        while True:
            quiet = PROBE_S - (time.monotonic() - client.heard_at)
            if client.closed.wait(quiet if quiet > 0 else PROBE_S):
                return None
            if time.monotonic() - client.heard_at < PROBE_S or client.waiting():
                continue  # a call in flight waits on its own timeout, and the probe behind it
            try:
                client.call(probe, None, PROBE_WAIT_S)
            except AgentCallError:
                pass  # it answered
            except ConnectionLost:
                if not client.closed.is_set():
                    return "the agent did not answer for %.0f s" % (
                        time.monotonic() - client.heard_at)

    def _sudo_missing(self) -> bool:
        """Whether the login finds no sudo to run (status 127, as the transport says a
        program the far side does not have): asked where a become host's agent ended at once,
        which its sudo's words alone do not tell (each shell says it its own way)."""
        with self._lock:
            transport = self._transport
        if transport is None:
            return False
        try:
            return transport.run(["sudo", "-V"])[0] == 127
        except TransportError as err:
            log.debug("%s: whether sudo is there cannot be asked: %s", self.cfg.name, err)
            return False

    def _drop(self) -> None:
        """End the connection (the worker and ``stop`` may both get here)."""
        with self._lock:
            conn, self._conn = self._conn, None
            transport, self._transport = self._transport, None
        for close in ([conn.close] if conn else []) + ([transport.close] if transport else []):
            try:
                close()
            except (EOFError, OSError, *_ssh_errors()) as err:
                # closing what the network already closed: the end we wanted
                log.debug("%s: closing a dead connection: %r", self.cfg.name, err)

    def _connect(self) -> _Conn:
        with self._lock:
            self._early, self._malformed = [], {}
        conn = self._start()
        try:
            hello = conn.client.call("hello", {"protocol": PROTOCOL_VERSION,
                                               "client": "fractui %s" % __version__},
                                     self.ssh.hello_wait_s)
        except ConnectionLost as err:
            conn.close()
            said = conn.why_it_ended()
            if self.cfg.become is not None and "password is required" in said:
                raise AgentProcessError(
                    "sudo -n was refused on %s (%s): %s" % (self.cfg.name, said, SUDO_FIX)) from err
            if self.cfg.become is not None and self._sudo_missing():
                raise AgentProcessError((SUDO_MISSING + ' (become = "sudo"; it said: %s): %s') % (
                    self.cfg.name, said or "nothing", SUDO_MISSING_FIX)) from err
            raise AgentProcessError("the agent on %s did not answer: %s%s" % (
                self.cfg.name, _lost_why(conn, str(err)), " (it said: %s)" % said if said
                else "")) from err
        except AgentCallError as err:
            conn.close()
            image = self.cfg.agent == "image" and err.code == PROTOCOL_MISMATCH
            raise AgentProcessError("the agent on %s refused hello: %s%s" % (
                self.cfg.name, err.message, (
                    " (its agent is the image's, %s: use an image with fractui %s's agent, or "
                    "leave out agent = \"image\" to have fractui upload its own)" % (
                        self.cfg.agent_path, __version__)) if image else "")) from err
        hello = self._refuse_malformed(conn, "hello", hello)
        subscribed = self._refuse_malformed(conn, "subscribe",
                                            conn.client.call("subscribe", None,
                                                             self.ssh.hello_wait_s))
        for name in self._failures.failing("malformed"):  # each record it has is well formed
            if name[1] == "job" and name[2] is not PAST_CAP:
                self._failures.worked(name, "%s: its agent's %s is well formed again (as it "
                                      "answered on connecting)" % (self.cfg.name,
                                                                  _what("job", name[2])))
        jobs = {j["id"]: j for j in subscribed["jobs"]}
        named = {n[-1] for kind in _ABOUT_JOBS for n in self._failures.failing(kind)
                 if isinstance(n[-1], str)}  # (not a failure about no job, nor PAST_CAP's)
        self._forget_failures(named - set(jobs) - {j.get("key") for j in jobs.values()},
                              "is not among its agent's jobs as it connects")
        hooked = True

        def call(method: str, params: Optional[Dict[str, Any]] = None) -> Any:
            """A hook's call, on this connection before it is the session's: as ``call``."""
            params = checked_by_key(hello, method, params)
            return self._checked(method, conn.client.call(method, params,
                                                          self.ssh.connect_timeout), params)
        for hook in list(self.connect_hooks):
            try:
                hook(self.cfg.name, call, dict(jobs))
            except (AgentCallError, ConnectionLost, AnswerMalformed) as err:
                # the next pass retries; said once while it fails so, in whatever words of the
                # agent's (they are the host's, and a host that drops each connection made is
                # connected again within a second), but again where ours differ: another
                # call failed, or another kind of error (a connection lost is lost whichever
                # call waited: where it ends is the host's timing)
                hooked = False
                self._failures.failed("on connect", "%s: on connect: %s: %s" % (
                    self.cfg.name, err.method, err), same=type(err).__name__ if isinstance(
                        err, ConnectionLost) else "%s %s %s" % (
                            type(err).__name__, err.method, getattr(err, "code", "")))
        if hooked:
            self._failures.worked("on connect", "%s: what runs on connect goes through "
                                  "again" % self.cfg.name)
        with self._lock:  # what subscribe answered, then what was pushed since, in order
            self.status.hello, self.status.snapshot, self.status.jobs = (
                hello, subscribed.get("snapshot"), jobs)
            self._dated_locked(self.status.snapshot)
            left = [_apply(self.status, method, params) for method, params in self._early or ()]
            self._early = None
        self._jobs_left_out(next((words for words in reversed(left) if words), None))
        self._conn = conn
        with self._lock:
            self._set_problem_locked()
        self._changed()
        return conn

    def _checked(self, method: str, result: Any, params: Any = None) -> Any:
        """``result``, the agent's answer to ``method`` (asked with ``params``: about a job,
        where they name one), if it has the shape the fleet reads (``answers``) and is the
        record of the job asked for, mended as the store keeps it; else AnswerMalformed,
        logged."""
        about = _about(params)
        said = answers.problem(method, result) or _for_another(method, params, result)
        name = ("answer", method, about)  # by the job: a good answer about another mends none
        self._mark_answer(method, about, said)
        if said is not None:  # said once while it answers so, in any words (at every reconnect)
            self._failures.failed(name, "%s: a malformed answer to %s%s from its agent: %s" % (
                self.cfg.name, method, _of(about), said), same=method, cap=SAID_ONE_BY_ONE)
            raise AnswerMalformed(self.cfg.name, method, said)
        self._failures.worked(name, "%s: its agent's answers to %s%s are well formed again" % (
            self.cfg.name, method, _of(about)))
        return self._mend(method, result, about)

    def _mend(self, method: str, value: Any, about: Optional[str]) -> Any:
        """``value``, the agent's well-formed answer to ``method`` or its notification, as
        every store keeps it (``answers.mended``: the store refused a job's end said with a
        NUL, or with a count past its column, and the job held its GPU). What was changed is
        said once for each place it is in (a host pushes as often as it likes)."""
        said: answers.Said = []
        value = answers.mended(method, value, said)
        cut = "; ".join({where: words for where, words, cut in said if cut}.values())
        what = _what(method, about) if method in ("snapshot", "job") else "answer to %s%s" % (
            method, _of(about))
        self._left_out(method, "its agent's %s was cut: %s" % (what, cut) if cut else None)
        for where, words, cut in said:
            if cut:
                continue  # (said while its answers are so, by _left_out)
            with self._mended_lock:
                new = where not in self._mended
                self._mended.add(where)
            if new:
                log.warning("%s: what its agent said%s: %s (said once)", self.cfg.name,
                            _of(about), words)
        return value

    def _jobs_left_out(self, left: Optional[str]) -> None:
        """Says the job record just left out (``left``), or, with none, that none is left out
        where its records are fewer than the most kept again (a record kept anew, beside
        those left out, is no room for them)."""
        with self._lock:
            room = len(self.status.jobs) < answers.JOBS_MOST
        if left is not None or room:
            self._left_out("jobs", left)

    def _left_out(self, kind: str, said: Optional[str]) -> None:
        """What was left out of its agent's last answers of ``kind`` (a method's, or ``jobs``:
        its job records past the most kept), or None where nothing was: said in the log once
        while they are so and once when they are not, and in the host's state meanwhile."""
        name = ("left out", kind)
        if said is None and name not in self._failures.failing("left out"):
            return
        with self._lock:
            if said is None:
                self._cut.pop(kind, None)
            else:
                self._cut[kind] = said
            if self.status.state in ("online", "degraded") and self.status.hello is not None:
                self._set_problem_locked()
        if said is None:
            self._failures.worked(name, "%s: nothing of its agent's %s is left out any more" % (
                self.cfg.name, host_words(kind, True)))
        else:
            self._failures.failed(name, "%s: %s" % (self.cfg.name, said), same=kind)

    def _refuse_malformed(self, conn: _Conn, method: str, result: Any) -> Any:
        """No host is taken on with a malformed hello or subscribe answer: what the fleet
        reads of it could not be read, and a job record left out would read as a job the agent
        does not have (the scheduler would fail it while it runs). Returns it mended."""
        try:
            return self._checked(method, result)
        except AnswerMalformed as err:
            conn.close()
            raise AgentProcessError(str(err)) from err

    def _client(self, reader: Any, write: Callable[[bytes], None]) -> AgentClient:
        return AgentClient(reader, write, on_notify=self._notify, name=self.cfg.name)

    def _start(self) -> _Conn:
        """Open the host's transport, check its Python, put the agent there and start it."""
        transport = transport_for(self.cfg, self.ssh)
        self._transport = transport
        try:
            transport.open()
            command, uploaded = transport.agent_command(self.archive)
            self.status.uploaded = uploaded
            stream = transport.start(command + agent_args(self.cfg, transport.state_dir))
        except BaseException:
            self._transport = None
            transport.close()
            raise
        return _Conn(self._client(stream.reader, stream.write), stream.close, stream.stderr,
                     transport)


def _lost_why(conn: _Conn, reason: str) -> str:
    """How a connection ended, with what its transport says about it (what paramiko warned
    of, how an exec program exited) if it says anything; why the transport ended it, where it
    did (a stalled link), rather than the echo of that. The connection's own transport: the
    session's may be dropped (or another) by the time a call's caller asks."""
    ended = conn.transport.ended()
    if ended:
        return ended
    said = conn.transport.said()
    return "%s (%s)" % (reason, said) if said else reason


def _about(params: Any) -> Optional[str]:
    """The job a call or a notification is about, where it names one: a call names it
    ``job`` (a launch, by its ``key``), a job's record and a log's lines by ``id`` and
    ``job``. Failures of one job's are said apart from another's by it."""
    for key in ("job", "id", "key"):
        value = params.get(key) if isinstance(params, dict) else None
        if isinstance(value, str):
            return value
    return None


def _for_another(method: str, params: Any, result: Dict[str, Any]) -> Optional[str]:
    """Where an agent's job record, answered to a call that names its job (by its agent's id,
    or a launch by its key), names another: taken, it would be that job's record."""
    if answers.SHAPES.get(method) is not answers.JOB or not isinstance(params, dict):
        return None
    for asked, named in (("job", "id"), ("key", "key")):
        if isinstance(params.get(asked), str) and not same_agent_job(params[asked],
                                                                     result[named]):
            return "%s.%s: %s answers for job %s" % (method, named, host_words(
                result[named]), host_words(params[asked]))
    return None


_AGENT_REF = re.compile("j?([0-9]{1,18})")  # how its agent looks a job up (``Supervisor.find``)


def same_agent_job(asked: str, named: str) -> bool:
    """Whether a call that asked for job ``asked`` is answered by the record ``named``: its
    agent finds a job by its id or its number (``j12``, ``12``, ``012``), as docs/protocol.md
    says, and answers its record, whose id is ``j12`` (``fractui stop gpu-a/12``)."""
    if asked == named:
        return True
    ours, theirs = _AGENT_REF.fullmatch(asked), _AGENT_REF.fullmatch(named)
    return ours is not None and theirs is not None and int(ours.group(1)) == int(
        theirs.group(1))


def _malformed(method: str, about: Optional[str]) -> Tuple[Optional[str], ...]:
    """The name a malformed notification is said by: a snapshot's, one job's record, or a
    push of any job's output (one name for the host: a host that pushes as often as it
    likes for as many jobs as it likes is said once). A name about no job ends in None, as
    every failure's about no job does: one ending in text is about the job it names."""
    return "malformed", method, about if method == "job" else None


def _what(method: str, about: Optional[str]) -> str:
    """A notification's words: the snapshot, the record of job ``about`` or a job record, a
    push of job ``about``'s output or of a job's."""
    if method == "snapshot":
        return "snapshot"
    if method == "log":
        return "push of %s output" % (
            "job %s's" % host_words(about, True) if about is not None else "a job's")
    return "record of job %s" % host_words(about, True) if about is not None else "job record"


def _of(about: Optional[str]) -> str:
    return "" if about is None else " about job %s" % host_words(about, True)


def _apply(status: HostStatus, method: str, params: Dict[str, Any]) -> Optional[str]:
    """Takes a pushed snapshot or job record; what was left out (``HostStatus.take``)."""
    if method == "snapshot":
        status.snapshot = params
        return None
    return status.take(params)


def checked_by_key(hello: Optional[Dict[str, Any]], method: str,
                   params: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """A call's params as this host's agent takes them: the ``key`` a caller names an agent's
    job by, beside its id, is the agent's check that the id still means that job (JOB_KEYS);
    an agent whose hello does not list it (older) is asked without it, as before, rather than
    refused a param it does not know; a key of None (the caller knows none: a job named by
    hand) is left out too. So every caller names the key it knows."""
    if not params or "key" not in params or method + ".key" not in JOB_KEYS:
        return params
    listed = (hello or {}).get("features")
    if params["key"] is not None and isinstance(listed, list) and method + ".key" in listed:
        return params
    return {k: v for k, v in params.items() if k != "key"}


def hello_problem(hello: Dict[str, Any],
                  snapshot: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """What makes a connected host degraded, if anything. A snapshot is newer than hello: the
    GPUs it marks degraded (a MIG change that failed and could not be undone) stand in for
    those hello listed."""
    problems = list(hello.get("problems") or [])
    if snapshot is not None:
        problems = [p for p in problems if not health.is_gpu_problem(p)] + [
            health.problem(g["index"], g["degraded"]) for g in snapshot.get("gpus") or []
            if g.get("degraded")]
    problems += [said for said in map(unreadable_layout, (snapshot or hello).get("gpus") or [])
                 if said]
    if problems:
        return "; ".join(problems)
    privileges = hello.get("privileges") or {}
    if any(g.get("mig_capable") for g in hello.get("gpus", [])) and not privileges.get(
            "mig_changes", True):
        return "MIG is read-only: %s" % privileges.get("reason")
    return None


def unreadable_layout(gpu: Dict[str, Any]) -> Optional[str]:
    """Why a GPU in MIG mode gives nothing to place on, if it does: fractui's model table
    (which placement plans by) has no MIG geometry for its model, or its instances as the agent
    reports them cannot be on one GPU of that geometry."""
    if not gpu.get("mig_mode"):
        return None
    geo = mig_geometry(gpu["name"])
    if geo is None:
        return "GPU %d (%s) is in MIG mode, and fractui has no MIG table for its model: " \
               "nothing is placed on it" % (gpu["index"], gpu["name"])
    said = misfit(geo, gpu.get("instances") or [])
    if said is None:
        return None
    return "GPU %d's MIG instances are not ones a %s can hold (%s): nothing is placed on " \
           "it" % (gpu["index"], geo.model, said)
