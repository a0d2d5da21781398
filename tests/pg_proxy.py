"""A loopback TCP proxy between fractui and a test's PostgreSQL that reads the frontend
protocol's messages as they pass, so a test cuts the link at a message of its choosing: before
it reaches the server (nothing of it is run), or after the server has run it and answered
(its answer never reaches the client: a commit made whose reply was lost). Or it stalls the
link there rather than cut it: the connection stays open and nothing more passes, as with a
server stopped or hung, or a link that holds — until the test restores it. Real sockets, a
real server; nothing is answered in the server's place."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import struct
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from fractui.store import open_store
from fractui.store.base import Store

LOOPBACK = "127.0.0.1"
# the untyped requests a client may send before its startup message: the server answers
# each with one byte ('N' or 'S'/'G'), before any typed message
_NEGOTIATIONS = (80877103, 80877104)  # SSLRequest, GSSENCRequest
_PROTOCOL_3 = 196608
_WAIT_S = 10.0  # the most a cut waits for the server to finish a message it was sent

BEFORE, AFTER = "before", "after"


@dataclasses.dataclass(frozen=True)
class Sent:
    """One message a client sent: which connection (in the order they came), its type byte
    and its SQL (a simple Query's, a Parse's, or the statement a Bind runs), if any."""
    link: int
    kind: str
    sql: Optional[str]

    @property
    def statement(self) -> bool:
        """Whether it starts a statement's run: a simple Query, or a Bind (of a statement just
        parsed, or prepared before: psycopg prepares one it runs often, then sends no Parse).
        Cut before it, the statement is not run; after it, run through its Sync."""
        return self.kind in ("Q", "B")


@dataclasses.dataclass
class _Cut:
    """Where the next cut falls: the statement for which ``which`` says yes, counted from when
    it was armed; ``where``: BEFORE it goes up, or AFTER the server answered it (through its
    Sync, in the extended protocol); ``down``: every connection refused after it. ``stall``:
    the link is held open, passing nothing more, rather than closed (and with ``down``, every
    link held, and every new connection taken and never answered)."""
    which: Callable[[int, Sent], bool]
    where: str
    down: bool
    stall: bool = False
    seen: int = 0


class PgProxy:
    """Forwards 127.0.0.1:``port`` to the server on ``target_port``; ``url(db)`` is a URL
    through it. ``cuts``: how many cuts fell since the last was armed, ``fell`` the statement
    it fell at."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.cuts = 0
        self.fell: Optional[Sent] = None  # the statement the last cut fell at
        self.refusing = False
        self.moving = threading.Event()  # cleared: every link holds, passing nothing
        self.moving.set()
        self.released = threading.Event()  # set: links stalled at a cut are let go (closed)
        self._held: List[socket.socket] = []  # connections taken while stalled, never answered
        self._cut: Optional[_Cut] = None
        self._lock = threading.Lock()
        self._links: List[Tuple[socket.socket, socket.socket]] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="pgproxy-accept").start()

    def url(self, db: str, user: str = "postgres") -> str:
        return "postgresql://%s@%s:%d/%s" % (user, LOOPBACK, self.port, db)

    # -- what a test asks --

    def cut_at(self, nth: int, where: str, down: bool = False, stall: bool = False) -> None:
        """Cut at the ``nth`` statement (0: the next) any client sends from now."""
        self._arm(_Cut(lambda i, _m: i == nth, where, down, stall))

    def cut_on(self, sql: str, where: str, down: bool = False,
               past: Optional[str] = None, stall: bool = False) -> None:
        """Cut at the next statement whose SQL starts with ``sql`` (case-insensitive); ``past``:
        the next on a connection that sent one starting with ``past`` first (the COMMIT of
        one write, not of the writes before it)."""
        passed: set = set()

        def which(_i: int, m: Sent) -> bool:
            if past is None or m.link in passed:
                return _starts(m, sql)
            if _starts(m, past):
                passed.add(m.link)
            return False
        self._arm(_Cut(which, where, down, stall))

    def stall(self) -> None:
        """Every link holds from now, open and passing nothing, and every new connection is
        taken and never answered: a server stopped (SIGSTOP) or hung, as its clients see it."""
        self.released.clear()
        self.moving.clear()

    def _arm(self, cut: _Cut) -> None:
        with self._lock:
            self._cut = cut
            self.cuts = 0

    def disarm(self) -> None:
        with self._lock:
            self._cut = None

    def refuse(self) -> None:
        """Every open connection cut, and every new one closed as it comes."""
        self.refusing = True
        with self._lock:
            links, self._links = self._links, []
        for pair in links:
            _close(*pair)

    def restore(self) -> None:
        """Connections let through again (a cut armed and not yet fallen is dropped); a link
        stalled at a cut, and a connection taken while stalled, closed; the others held by
        ``stall`` pass again, as a server resumed."""
        self.disarm()
        self.refusing = False
        with self._lock:
            held, self._held = self._held, []
        for client in held:
            _close(client)
        self.released.set()
        self.moving.set()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.restore()  # (a stalled link's threads end)
        self.refuse()

    # -- the links --

    def _accept(self) -> None:
        number = 0
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            if not self.moving.is_set():  # taken, and never answered
                with self._lock:
                    self._held.append(client)
                continue
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for end in (client, upstream):  # (a message at a time: no Nagle's wait on each)
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._links.append((client, upstream))
            link = _Link(self, number, client, upstream)
            number += 1
            threading.Thread(target=link.up, daemon=True, name="pgproxy-up").start()
            threading.Thread(target=link.down, daemon=True, name="pgproxy-down").start()

    def _falls(self, message: Sent) -> Optional[_Cut]:
        """The cut that falls at ``message``, if one does (it is disarmed then)."""
        with self._lock:
            cut = self._cut
            if cut is None or not message.statement:
                return None
            cut.seen += 1
            if not cut.which(cut.seen - 1, message):
                return None
            self._cut = None
            self.cuts += 1
            self.fell = message
            if cut.stall:  # held until the test restores the link
                self.released.clear()
            if cut.down and cut.stall:
                self.stall()
            elif cut.down:
                self.refusing = True
            return cut


class _Link:
    """One client's connection and the server's, pumped each way by a thread of its own."""

    def __init__(self, proxy: PgProxy, number: int, client: socket.socket,
                 upstream: socket.socket):
        self.proxy, self.number = proxy, number
        self.client, self.upstream = client, upstream
        self.negotiating = 0  # one-byte answers the server still owes
        self.parsed: Dict[str, str] = {}  # each statement's name (or "") -> its SQL
        self.lose_answers = threading.Event()  # the client no longer hears the server
        self.answered = threading.Event()  # the server's ReadyForQuery since the cut
        self.lock = threading.Lock()

    def up(self) -> None:
        """Client to server, message by message."""
        try:
            started = False
            while True:
                if not started:
                    head = _read(self.client, 8)
                    length, code = struct.unpack("!ii", head)
                    body = head + _read(self.client, length - 8)
                    if code in _NEGOTIATIONS:
                        with self.lock:
                            self.negotiating += 1
                    else:
                        started = code == _PROTOCOL_3 or started
                    self.upstream.sendall(body)
                    continue
                head = _read(self.client, 5)
                kind, length = head[:1].decode("latin-1"), struct.unpack("!i", head[1:])[0]
                whole = head + _read(self.client, length - 4)
                cut = self.proxy._falls(self._sent(kind, whole[5:]))
                if cut is not None and cut.where == BEFORE:
                    if cut.stall:  # held open both ways, until the test lets it go
                        self.lose_answers.set()
                        self.proxy.released.wait()
                    break
                if cut is not None:  # AFTER: no answer comes down from before it goes up
                    self.lose_answers.set()
                if cut is None:  # (one that fell goes up, stalled after it or not)
                    self.proxy.moving.wait()
                self.upstream.sendall(whole)
                if cut is not None:  # and the rest of its batch goes up
                    self._lose_after(kind, cut.stall)
                    return
        except OSError:
            pass
        _close(self.client, self.upstream)

    def _sent(self, kind: str, body: bytes) -> Sent:
        sql = None
        if kind == "Q":
            sql = body.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif kind == "P":  # its name, then its text
            name, text = body.split(b"\0", 2)[:2]
            sql = self.parsed[name.decode("utf-8", "replace")] = text.decode("utf-8", "replace")
        elif kind == "B":  # its portal's name, then its statement's
            sql = self.parsed.get(body.split(b"\0", 2)[1].decode("utf-8", "replace"))
        return Sent(self.number, kind, sql)

    def _lose_after(self, kind: str, stall: bool) -> None:
        """The rest of the message's batch (through its Sync) goes up; the client hears
        nothing more, and its connection is closed once the server answered it all (``stall``:
        once the test lets it go)."""
        while kind not in ("Q", "S", "X"):
            head = _read(self.client, 5)
            kind, length = head[:1].decode("latin-1"), struct.unpack("!i", head[1:])[0]
            whole = head + _read(self.client, length - 4)
            self.proxy._falls(self._sent(kind, whole[5:]))
            self.upstream.sendall(whole)
        self.answered.wait(_WAIT_S)
        if stall:
            self.proxy.released.wait()
        _close(self.client, self.upstream)

    def down(self) -> None:
        """Server to client: its one-byte negotiation answers, then typed messages."""
        buf = b""
        try:
            while True:
                chunk = self.upstream.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    with self.lock:
                        if self.negotiating and buf:
                            self.negotiating -= 1
                            self._pass(buf[:1])
                            buf = buf[1:]
                            continue
                    if len(buf) < 5:
                        break
                    length = struct.unpack("!i", buf[1:5])[0]
                    if len(buf) < 1 + length:
                        break
                    message, buf = buf[:1 + length], buf[1 + length:]
                    self._pass(message)
                    if message[:1] == b"Z" and self.lose_answers.is_set():
                        self.answered.set()
        except OSError:
            pass
        self.answered.set()
        if not self.lose_answers.is_set():
            _close(self.client, self.upstream)

    def _pass(self, data: bytes) -> None:
        self.proxy.moving.wait()
        if not self.lose_answers.is_set():
            self.client.sendall(data)


def _starts(message: Sent, sql: str) -> bool:
    return (message.sql or "").lstrip().upper().startswith(sql.upper())


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


@dataclasses.dataclass
class Stores:
    """A database's store reached directly (set-up, and reading back what was made) and one
    reached through the proxy (the store under the test's cut or stall)."""
    direct: Store
    proxied: Store
    proxy: PgProxy
    db: str
    sql: Callable[[str], List[tuple]]


@contextlib.contextmanager
def proxied_stores(pg_server: Any) -> Iterator[Stores]:
    """Stores of a new database of ``pg_server`` (a tests.pg.PgServer), closed afterwards."""
    db = pg_server.new_database()
    direct = open_store(pg_server.url(db))
    proxy = PgProxy(pg_server.port)
    proxied = open_store(proxy.url(db))
    try:
        yield Stores(direct, proxied, proxy, db, lambda text: pg_server.sql(text, db=db))
    finally:
        proxy.close()  # first: a call a test gave up on still waits on a link it holds
        proxied.close()
        direct.close()
