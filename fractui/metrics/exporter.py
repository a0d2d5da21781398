"""The /metrics endpoint: served while the scheduler it hears from holds the lease, stopped as
soon as it does not (docs/decisions.md, "Prometheus metrics: who serves them").

A scrape builds its families from what is already in memory — the fleet's host views, read
through ``hosts``, and the scheduler's last report, read under a lock — so it never queries the
store or calls an agent, and the scheduler never waits on a scrape.
"""

from __future__ import annotations

import errno
import http.client
import logging
import os
import pwd
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.core import Metric

from fractui.config import Config
from fractui.metrics.families import families
from fractui.metrics.loglines import Bounded
from fractui.metrics.state import MetricsState, PassReport
from fractui.sched.fleetview import HostView
from fractui.store.model import Job
from remote_agent.failing import TRIES, Failures

log = logging.getLogger("fractui.metrics")

PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: a pass takes milliseconds on a quiet fleet (docs/benchmarks.md), seconds when a
store or a host is slow."""

# What one client may hold of the endpoint (docs/metrics.md, "Limits"): read when a connection
# comes, so a test may set them small.
CONNECTIONS = 16
"""Connections served at once at each address: Prometheus scrapes a target on one at a time.
Past it, the oldest that has sent no request is closed (or, where each is being answered, the
new one is refused), so idle or slow clients hold a bounded number of threads and cannot keep a
scrape out."""
REQUEST_SECONDS = 10.0
"""A connection's socket timeout: each read of its request and each write of its answer. A
scrape sends its request at once and reads the answer as it comes."""
HEAD_BYTES = 16384
"""A request's headers, all together (Prometheus sends under 1 KiB). http.server's own bounds,
100 lines of 64 KiB, let one connection hold 6.5 MiB."""
LOG_LINES = 20
"""The endpoint's lines from what its clients do (a request refused, the connection bound
reached and left), at INFO or above, said in each ``LOG_WINDOW_S`` across its addresses: past
them one line counts the rest. One a connection let any client flood the scheduler's log."""
LOG_WINDOW_S = 60.0


class Exporter:
    """Serves the fleet's metrics on ``address`` while the reports say the lease is held."""

    def __init__(self, address: Tuple[str, int], config: Config,
                 hosts: Callable[[], Sequence[HostView]],
                 clock: Callable[[], float] = time.time):
        self.address = address
        self.config = config
        self.hosts = hosts
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        # by holder: a standby that takes the lease over serves on the same address, and its
        # counts, under the same labels, would step back to its own (a counter reset)
        self.passes = Histogram("fractui_scheduler_pass_duration_seconds",
                                "How long the scheduler's full passes take, by the holder "
                                "that ran them", ["holder"], buckets=PASS_BUCKETS,
                                registry=self.registry)
        self.registry.register(_Collector(self))
        self._app = make_wsgi_app(self.registry)
        self._lock = threading.Lock()
        self._jobs: Sequence[Job] = ()
        self._copies: Mapping[str, Mapping[str, int]] = {}
        self._last_pass: Optional[float] = None
        self._store_lead = 0.0
        self._held = False
        self._holder = ""
        self._store_ok = True
        self._servers: List[WSGIServer] = []  # one per address the name has
        self._serving = threading.Lock()  # the scheduler's thread opens, a stop may close
        self._failures = Failures(log, TRIES)  # the bind error, said once while it repeats
        self._said = Bounded(log, lambda: LOG_LINES, lambda: LOG_WINDOW_S)  # its clients' lines

    @property
    def serving(self) -> bool:
        return bool(self._servers)

    def report(self, report: PassReport) -> None:
        """The scheduler's news after a turn (on its thread): kept for the next scrape, and the
        endpoint opened or closed as the lease was taken or lost."""
        with self._lock:
            if report.jobs is not None:
                self._jobs = tuple(report.jobs)
                self._copies = dict(report.copies or {})
                self._last_pass = report.at
            if report.store_lead is not None:
                self._store_lead = report.store_lead
            self._held, self._store_ok = report.held, report.store_ok
            self._holder = report.holder
        self._said.flush()  # (what its clients' lines left unsaid, once their window ended)
        if report.held:
            passes = self.passes.labels(report.holder)  # (its series, 0 before its first)
            if report.seconds is not None:
                passes.observe(report.seconds)
            self._open()
        else:
            self.close()

    def state(self) -> MetricsState:
        """What a scrape reports now."""
        with self._lock:
            jobs, last, held, ok = self._jobs, self._last_pass, self._held, self._store_ok
            holder, copies, lead = self._holder, self._copies, self._store_lead
        return MetricsState(now=self.clock(), holder=holder, hosts=self.hosts(), jobs=jobs,
                            teams=self.config.teams,
                            queues=[q.name for q in self.config.queues], lease_held=held,
                            store_reachable=ok, last_pass=last, copies=copies,
                            store_lead=lead)

    def _open(self) -> None:
        with self._serving:
            if not self._servers:
                self._bind()

    def _bind(self) -> None:
        """Listens on every address the name has (``addresses``), or on none: one left out
        would be another local user's to answer scrapes on in the holder's place. All are
        bound before any serves, so one that cannot be leaves no other answering meanwhile."""
        host, port = self.address
        bound: List[WSGIServer] = []
        at = ""
        try:
            for family, addr in addresses(host, port):
                at = "" if addr == host else " (%s)" % addr
                bound.append(_Server(family, (addr, port), self._app, self._said))
        except OSError as err:  # the port is taken (a holder that lost the lease still has it)
            for server in bound:
                server.server_close()
            held = holders(port) if err.errno == errno.EADDRINUSE else ""
            self._failures.failed("listen", "metrics: cannot listen on %s%s ([metrics] "
                                  "listen%s): %s%s; tried again every pass" % (
                                      _at(host, port), at, " in %s" % self.config.path
                                      if self.config.path else "", err.strerror or err, held),
                                  logging.ERROR, same=str(err) + at + held)
            return
        for server in bound:
            threading.Thread(target=server.serve_forever, name="metrics-%s" % (
                server.server_address[0]), daemon=True).start()
        self._servers = bound
        self._failures.worked("listen", "metrics: can listen on %s again" % _at(host, port))
        on = [s.server_address[0] for s in bound]
        log.info("metrics: serving http://%s/metrics%s while this scheduler holds the "
                 "lease", _at(host, port), "" if on == [host] else " (on %s)" % ", ".join(on))

    def close(self) -> None:
        """Stops serving (the lease is lost, or the scheduler stops); the port is free after."""
        with self._serving:
            servers, self._servers = self._servers, []
        for server in servers:
            server.shutdown()
            server.server_close()
        self._said.flush(stopping=True)
        if servers:
            log.info("metrics: stopped serving (the lease is not held)")


class _Logged(WSGIRequestHandler):
    """The server's requests in fractui's log, not on stderr as http.server writes them: a
    scrape at debug, a request refused (not HTTP) as a warning naming its client.
    prometheus-client's own server drops both (a private handler of its own). A connection
    has ``REQUEST_SECONDS`` for each read and write and ``HEAD_BYTES`` for its headers."""

    server: _Server

    def setup(self) -> None:
        self.timeout = REQUEST_SECONDS
        super().setup()
        self.wfile = _Output(self.wfile, self.address_string())

    def handle(self) -> None:
        try:
            super().handle()
        except OSError as err:  # (a timeout, a client's reset) not a server's fault: no trace
            log.debug("metrics: the connection from %s ended unanswered: %s",
                      self.address_string(), err)

    def parse_request(self) -> bool:
        """Reads the headers (no more than ``HEAD_BYTES``: past them, a 431), and marks the
        connection answered, no longer one to close for room, once they are in; one closed
        before (for room, or by a stop) is not answered: its headers ended at the cut."""
        rfile, self.rfile = self.rfile, _Head(self.rfile, HEAD_BYTES)
        try:
            ok = super().parse_request()
        finally:
            self.rfile = rfile
        return ok and self.server.answering(self.request)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics: %s " + format, self.address_string(), *args)

    def log_error(self, format: str, *args: object) -> None:
        self.server.said.warning("metrics: a request from %s failed: " + format,
                                 self.address_string(), *args)


class _Output:
    """A connection's output: a write that times out (a client that stopped reading) is said,
    and ends the answer as a client's reset does, which wsgiref ends quietly (a timeout, it
    printed with its traceback on the scheduler's stderr)."""

    def __init__(self, wfile: Any, client: str):
        self.wfile = wfile
        self.client = client

    def write(self, data: bytes) -> int:
        try:
            return int(self.wfile.write(data))
        except TimeoutError as err:
            log.debug("metrics: %s read nothing for %g s: its answer cut short", self.client,
                      REQUEST_SECONDS)
            raise ConnectionAbortedError("%s read nothing for %g s" % (
                self.client, REQUEST_SECONDS)) from err

    def __getattr__(self, name: str) -> Any:  # flush, close, closed
        return getattr(self.wfile, name)


class _Head:
    """A request's input while http.server reads its headers: a line that would take them
    past ``left`` bytes raises HTTPException, which http.server answers 431."""

    def __init__(self, rfile: Any, left: int):
        self.rfile = rfile
        self.left = left

    def readline(self, size: int = -1) -> bytes:
        line: bytes = self.rfile.readline(
            self.left + 1 if size < 0 else min(size, self.left + 1))
        self.left -= len(line)
        if self.left < 0:
            raise http.client.HTTPException("headers over %d bytes" % HEAD_BYTES)
        return line


class _Server(ThreadingWSGIServer):
    """prometheus-client's server (a thread a connection, daemon threads that no close waits
    for), bound and listening at one address of ``family`` once made, serving only once
    ``serve_forever`` runs: ``start_http_server`` does both at once, and takes the resolver's
    first address of a name alone. It keeps at most ``CONNECTIONS`` open, and closes those
    that have sent no request when it is closed."""

    def __init__(self, family: int, address: Tuple[str, int], app: Callable[..., Any],
                 said: Bounded):
        self.address_family = family
        self.said = said  # the endpoint's lines from its clients, bounded across its servers
        self._lock = threading.Lock()
        # each open connection, oldest first: whether its request is in (being answered)
        self._open: Dict[socket.socket, bool] = {}
        self._full = Failures(said, ("connection", "connections"))  # said once while full
        super().__init__(address, _Logged)  # (a bind that fails calls server_close)
        self.set_app(app)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Room for one more connection (on the accepting thread): at ``CONNECTIONS``, made by
        closing the oldest that has sent no request yet, or, where each is being answered,
        refused."""
        with self._lock:
            room = len(self._open) < CONNECTIONS
            oldest = None if room else next(
                (conn for conn, answering in self._open.items() if not answering), None)
            if oldest is not None:
                del self._open[oldest]
                _cut(oldest)  # (its thread reads the end of its input, and ends)
            if room or oldest is not None:
                self._open[request] = False
        at = _at(*self.server_address[:2])
        if room:
            self._full.worked("full", "metrics: fewer than %d connections open at %s again"
                              % (CONNECTIONS, at))
            return True
        full = "metrics: %d connections open at %s, the most served at once; said once while " \
               "it lasts: " % (CONNECTIONS, at)
        if oldest is not None:
            self._full.failed("full", full + "closed the oldest that had sent no request",
                              same="closed")
            return True
        self._full.failed("full", full + "each being answered, refused one from %s" % (
            client_address[0]), same="refused")
        return False

    def answering(self, request: Any) -> bool:
        """``request``'s request is in: it is answered, not closed for room. False where it
        was closed already."""
        with self._lock:
            if request not in self._open:
                return False
            self._open[request] = True
            return True

    def shutdown_request(self, request: Any) -> None:
        with self._lock:  # (before it is closed: no cut may reach a closed descriptor)
            self._open.pop(request, None)
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Stops listening, and closes each connection that has sent no request: one opened
        while the lease was held is not answered after. One being answered is answered."""
        super().server_close()
        with self._lock:
            for conn in [conn for conn, answering in self._open.items() if not answering]:
                del self._open[conn]
                _cut(conn)


def _cut(conn: socket.socket) -> None:
    """Ends a connection another thread serves: its reads see the end, its writes fail; that
    thread closes it."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError as err:  # (the client is gone already: nothing to end)
        log.debug("metrics: a connection already ended: %s", err)


def _at(host: str, port: int) -> str:
    """"host:port" as [metrics] listen and a URL write it: an IPv6 address in brackets
    ("::1:9402" names no port)."""
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def addresses(host: str, port: int) -> List[Tuple[int, str]]:
    """The addresses ``host`` names (family, address), each once, in the resolver's order:
    ``localhost`` is 127.0.0.1 and ::1 where both are in /etc/hosts, and a client (curl,
    Prometheus) may try either first. A name the resolver does not know raises OSError
    (socket.gaierror)."""
    found: List[Tuple[int, str]] = []
    for family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
        if (family, sockaddr[0]) not in found:
            found.append((family, sockaddr[0]))
    return found


def holders(port: int) -> str:
    """Who listens on TCP ``port`` (on any address), as words to follow "address in use": the
    uids the kernel's tables (/proc/net/tcp, tcp6) give its listeners, another user's said as
    such, since they answer scrapes there in the holder's place."""
    uids = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                rows = [row.split() for row in f.read().splitlines()[1:]]
        except FileNotFoundError:  # (tcp6 where IPv6 is off)
            continue
        except OSError as err:
            return ": who listens there is unknown (%s: %s)" % (table, err.strerror or err)
        uids.update(int(row[7]) for row in rows
                    if row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == port)  # LISTEN
    others = sorted(uid for uid in uids if uid != os.geteuid())
    if others:
        return ": it is held by %s, another user, who answers scrapes there in this " \
               "scheduler's place" % ", ".join(_user(uid) for uid in others)
    if uids:
        return ": it is held by a process of %s (this user: another scheduler, or one that " \
               "lost the lease and has not yet closed it)" % _user(os.geteuid())
    return ""


def _user(uid: int) -> str:
    """"uid N (name)", or "uid N" where it has no name."""
    try:
        return "uid %d (%s)" % (uid, pwd.getpwuid(uid).pw_name)
    except KeyError:
        return "uid %d" % uid


class _Collector:
    """The registry's view of the exporter: families made at scrape time."""

    def __init__(self, exporter: Exporter):
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        found: List[Metric] = families(self.exporter.state())
        return iter(found)
