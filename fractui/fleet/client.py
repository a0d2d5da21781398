"""A JSON-RPC client for one agent connection (an SSH channel or a local pipe).

One reader thread per connection hands replies to the callers waiting for them and pushed
notifications to a callback, so calls may come from any thread and the UI thread never reads
the network itself.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from typing import Any, BinaryIO, Callable, Dict, Optional

from fractui.store.model import storable
from fractui.words import as_typed, quoted
from remote_agent.failing import TRIES, Failures
from remote_agent.rpc.jsonrpc import (MAX_ANSWER_BYTES, MAX_LINE_BYTES, PARSE_ERROR,
                                      START_FAILED)

# how many things a host names are said one by one failing in one way (a job's malformed
# record, a listener failing on its notifications, a notification's method whose handling
# fails): a hostile agent names as many as it likes, and past these the log and the host's
# state say only that there are more
SAID_ONE_BY_ONE = 20

HOST_WORDS_MOST = 100
"""Characters of a string a host sent (a notification's method, a job's id, a line that is no
message) that the log and the host's state quote; past them it is cut, saying its length: an
agent's line may be up to MAX_LINE_BYTES long, and a hostile one names as many as it likes."""
AGENT_ERROR_MOST = 2000
"""Characters of an agent's error words (its error's message, a failed start's reason) kept:
they say why, and are logged, kept in the store and shown, so longer than HOST_WORDS_MOST."""


def host_words(text: Any, bare: bool = False, most: int = HOST_WORDS_MOST) -> str:
    """A string a host sent, as fractui's words quote it: in quotes with its escapes, or
    ``bare`` as it is where short and printable (``fractui.words``), cut past ``most``
    characters with its length. The one place a host's strings are cut for the log."""
    text = text if isinstance(text, str) else str(text)
    return as_typed(text, most) if bare else quoted(text, most)


log = logging.getLogger("fractui.fleet")

NOT_JSON, NOT_RPC = "JSON", "JSON-RPC messages"
TOO_LONG = "within the %d bytes of an answer line" % MAX_ANSWER_BYTES
"""A line longer than the agent ever writes one (remote_agent.rpc.jsonrpc): read no further
than that (a host that writes without end grew the admin's memory without end), and the rest
of it dropped as it comes."""
IGNORED = (NOT_JSON, NOT_RPC, TOO_LONG)
"""What the agent's lines must be, each said once a connection where lines come that are not,
and how many when it ends (a broken or hostile host writes as many as it likes, and the
admin's journal took a warning each; said again after each good message, a host that wrote
one between two bad lines still had one for each)."""

Notify = Callable[[str, Dict[str, Any]], None]


def _error_words(words: str) -> str:
    """An agent's error words as it said them (as every store keeps them: ``storable``, as
    they may be a job's reason), or quoted cut (``host_words``) where longer than
    AGENT_ERROR_MOST characters."""
    words = storable(words)
    return words if len(words) <= AGENT_ERROR_MOST else host_words(words, most=AGENT_ERROR_MOST)


ERROR_DATA_READ = ("class", "reason", "degraded")
"""What of an agent error's ``data`` the admin reads (docs/protocol.md): its class, a failed
start's exact reason, and what a MIG change that could not be rolled back left."""


def _error_data(data: Any) -> Dict[str, str]:
    """Of an agent error's ``data``, the texts the admin reads (``ERROR_DATA_READ``), cut as its
    message (``_error_words``): the rest, which nothing reads, is left out (kept whole, a
    hostile agent's data was as long as its answer line, held with the error and its job)."""
    if not isinstance(data, dict):
        return {}
    return {key: _error_words(data[key]) for key in ERROR_DATA_READ
            if isinstance(data.get(key), str)}


class AgentCallError(Exception):
    """The agent answered with a JSON-RPC error. ``message`` keeps the agent's words as it
    said them; shown (``str``), the agent's "this host" names the host it is."""

    def __init__(self, method: str, error: Dict[str, Any], host: Optional[str] = None):
        self.method = method
        code = error.get("code")
        self.code = code if type(code) is int else None  # a code is a number, not words
        self.message = _error_words(str(error.get("message") or "error %s" % (code,)))
        self.data = _error_data(error.get("data"))
        self.host = host
        super().__init__(self.message.replace("this host", host) if host else self.message)

    @property
    def left_changed(self) -> bool:
        """Whether the agent says its change failed and could not be rolled back: the GPU is
        not as it was (``data.degraded``, docs/protocol.md), so the change is audited."""
        return bool(self.data.get("degraded"))

    def reason(self) -> str:
        """What went wrong, without the agent's lead-in where it gives its exact reason apart
        (``data.reason`` of START_FAILED, docs/protocol.md): "the job cannot start: cannot run
        x" said after our own "cannot start on HOST:" said it twice."""
        reason = self.data.get("reason") if isinstance(self.data, dict) else None
        if self.code != START_FAILED or not reason:
            return str(self)
        return reason.replace("this host", self.host) if self.host else reason


class ConnectionLost(Exception):
    """The connection ended before the reply came; ``method``: the call it was waiting on."""

    def __init__(self, reason: str, method: Optional[str] = None):
        super().__init__(reason)
        self.method = method


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Optional[Dict[str, Any]] = None


class AgentClient:
    def __init__(self, reader: BinaryIO, write: Callable[[bytes], None],
                 on_notify: Optional[Notify] = None, on_close: Optional[Callable[[], None]] = None,
                 name: str = "agent"):
        self._reader = reader
        self._write = write
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: Dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._on_notify = on_notify
        self._on_close = on_close
        self.name = name
        self.closed = threading.Event()
        self.close_reason = "closed"
        self.heard_at = time.monotonic()  # when the agent last sent a line
        self._failures = Failures(log, TRIES)  # the callback's, by notification: said once
        self._garbled = Failures(log, ("line", "lines"))  # the lines that are no message
        threading.Thread(target=self._read, name="agent-reader-%s" % name, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in iter(self._line, b""):
                self.heard_at = time.monotonic()
                if len(line) > MAX_ANSWER_BYTES and not line.endswith(b"\n"):
                    self._ignored(TOO_LONG, line)
                    while line and not line.endswith(b"\n"):
                        line = self._line()
                    continue
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    self._ignored(NOT_JSON, line)
                    continue
                if not isinstance(message, dict) or not isinstance(message.get("id", 0), int):
                    self._ignored(NOT_RPC, line)
                    continue
                if "id" not in message:
                    self._notify(message)
                    continue
                with self._lock:
                    pending = self._pending.pop(message["id"], None)
                if pending is not None:
                    pending.reply = message
                    pending.done.set()
        except (OSError, ValueError, EOFError) as err:
            self.close_reason = str(err) or type(err).__name__
        except Exception as err:  # the transport's own errors (paramiko's): end, and say why
            log.exception("reading from the agent on %s", self.name)
            self.close_reason = "%s: %s" % (type(err).__name__, err)
        else:
            self.close_reason = "the agent closed the connection"
        finally:
            for kind in IGNORED:  # how many, where there were any
                self._garbled.worked(kind, "%s: the connection ended, and with it the lines "
                                     "that are not %s" % (self.name, kind))
            self.closed.set()
            with self._lock:
                waiting, self._pending = list(self._pending.values()), {}
            for pending in waiting:
                pending.done.set()
            if self._on_close is not None:
                self._on_close()

    def _line(self) -> bytes:
        """The next line from the agent, or as much of it as an answer line may hold and a
        byte more; b"" at its end."""
        return self._reader.readline(MAX_ANSWER_BYTES + 1)

    def _ignored(self, kind: str, line: bytes) -> None:
        """A line from the agent that is not ``kind`` (the host's to write, as many as it
        likes): the first of the connection said, with the line; how many, as it ends."""
        self._garbled.failed(kind, "%s: ignoring lines from its agent that are not %s (said "
                             "once a connection), the first: %s" % (
                                 self.name, kind, host_words(line.decode(errors="replace"))),
                             same=kind)

    def waiting(self) -> bool:
        """Whether a call waits for its answer (the agent answers a connection's requests in
        turn: a long one, a GPU reset, holds the others)."""
        with self._lock:
            return bool(self._pending)

    def _notify(self, message: Dict[str, Any]) -> None:
        """One pushed notification to the callback; a callback that fails is logged with
        its stack (once while it fails so on that notification: an agent pushes a snapshot
        every second or so; by its method, of which a host may name as many as it likes: at most
        SAID_ONE_BY_ONE), and the connection goes on."""
        if self._on_notify is None:
            return
        params = message.get("params")
        method = str(message.get("method", ""))
        try:
            self._on_notify(method, params if isinstance(params, dict) else {})
        except Exception as err:
            self._failures.failed(("notify", method), "handling a %s notification from %s "
                                  "failed (%s: %s)" % (host_words(method), self.name,
                                                       type(err).__name__, err),
                                  logging.ERROR, True, cap=SAID_ONE_BY_ONE)
        else:
            self._failures.worked(("notify", method), "the %s notifications from %s are "
                                  "handled again" % (host_words(method), self.name))

    def call(self, method: str, params: Optional[Dict[str, Any]] = None,
             timeout_s: float = 60.0) -> Any:
        if self.closed.is_set():
            raise ConnectionLost(self.close_reason, method)
        req_id = next(self._ids)
        message = {"jsonrpc": "2.0", "id": req_id, "method": method}
        if params:
            message["params"] = params
        line = json.dumps(message).encode() + b"\n"
        if len(line) > MAX_LINE_BYTES:  # the agent would refuse it with no id to answer to
            raise AgentCallError(method, {"code": PARSE_ERROR, "message": (
                "the request is %d bytes, and the agent takes at most %d in one line" % (
                    len(line), MAX_LINE_BYTES))}, self.name)
        pending = _Pending()
        with self._lock:
            self._pending[req_id] = pending
        try:
            with self._write_lock:
                self._write(line)
        except (OSError, ValueError, EOFError) as err:  # ValueError: its pipe closed by
            with self._lock:  # another thread; EOFError: paramiko's, its link ended mid-write
                self._pending.pop(req_id, None)
            raise ConnectionLost("sending %s failed: %s" % (method, str(err) or type(
                err).__name__), method) from err
        if not pending.done.wait(timeout_s):
            with self._lock:
                self._pending.pop(req_id, None)
            raise ConnectionLost("no reply to %s within %g s" % (  # (0.5 s: not "0 s")
                method, round(timeout_s, 1)), method)
        if pending.reply is None:
            raise ConnectionLost(self.close_reason, method)
        if "error" in pending.reply:
            error = pending.reply["error"]
            raise AgentCallError(method, error if isinstance(error, dict) else {
                "message": "a malformed error answer: %r" % (error,)}, self.name)
        return pending.reply.get("result")
