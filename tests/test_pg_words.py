"""A PostgreSQL server and a libpq that speak German: each failed connection is still told
apart (refused, no password, a role unknown, a server shutting down, none there), since psycopg
gives no SQLSTATE at connect and fractui reads no words to decide what failed
(docs/decisions.md, "A failed connection is told apart by libpq's facts, not its words").

The server's words are in its lc_messages' language; libpq's own in the client's LC_MESSAGES'
(once the program calls setlocale, as a program embedding fractui may). fractui runs in a
process of its own here with LC_ALL=de_DE.UTF-8, setlocale called, and the system's libpq
(psycopg's ctypes one: the binary wheel's libpq carries no translations)."""

from __future__ import annotations

import ctypes.util
import glob
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, Iterator, Optional, Sequence, Tuple

import psycopg
import pytest

from fractui.store import StoreDamaged, StoreDenied, StoreUnavailable, open_store, postgres
from tests.pg import PgServer
from tests.test_store_postgres import free_port

GERMAN = "de_DE.UTF-8"
_OPEN = """
import locale, sys
locale.setlocale(locale.LC_ALL, "")
from fractui.store import open_store
try:
    open_store(sys.argv[1]).close()
    print("opened")
except Exception as err:
    print(type(err).__name__ + "\\n" + str(err))
"""


def _german_missing() -> Optional[str]:
    """Why German words cannot be had here, or None."""
    if not glob.glob("/usr/share/locale/de/LC_MESSAGES/libpq5*.mo") or not glob.glob(
            "/usr/share/locale/de/LC_MESSAGES/postgres*.mo"):
        return "no German translation of libpq or the server installed"
    if ctypes.util.find_library("pq") is None:
        return "no system libpq for psycopg's ctypes implementation"
    if "de_DE.utf8" not in subprocess.run(["locale", "-a"], capture_output=True,
                                          text=True).stdout.split():
        return "locale %s not generated (locale-gen)" % GERMAN
    return None


@pytest.fixture(scope="module")
def german_server() -> Iterator[PgServer]:
    missing = _german_missing()
    if missing:
        pytest.skip(missing)
    server = PgServer()
    try:
        server.sql("ALTER SYSTEM SET lc_messages = '%s'" % GERMAN)
        with open(os.path.join(server.data, "pg_hba.conf"), "w") as hba:
            hba.write("host all pw 127.0.0.1/32 scram-sha-256\n"
                      "host all all 127.0.0.1/32 trust\n")
        server.pg_ctl("reload")
        server.sql("CREATE ROLE pw LOGIN PASSWORD 'right'")
        yield server
    finally:
        server.close()


def opened_in_german(url: str, env: Dict[str, str]) -> Tuple[str, str]:
    """(the class of what open_store raised, its words) in a German process."""
    given = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    given.update(LANG=GERMAN, LC_ALL=GERMAN, PSYCOPG_IMPL="python",
                 PYTHONPATH=os.pathsep.join(sys.path), **env)
    done = subprocess.run([sys.executable, "-c", _OPEN, url], env=given, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    kind, _, words = done.stdout.partition("\n")
    return kind, words.strip()


def test_each_refusal_at_connect_is_told_apart_in_german(german_server, tmp_path):
    url = german_server.url("postgres", user="pw")
    kind, said = opened_in_german(url, {"PGPASSWORD": "wrong"})
    assert "Passwort-Authentifizierung" in said, said  # (the server's words are German)
    assert kind == "StoreDenied" and "refuses role pw" in said, (kind, said)
    assert said.endswith("(%s)" % postgres.REFUSED_AT_CONNECT), said

    # libpq's own words, German too: a password asked and none given
    kind, said = opened_in_german(url, {"PGPASSFILE": str(tmp_path / "no-pgpass")})
    assert "Verbindung zum Server auf »127.0.0.1«" in said, said
    assert kind == "StoreDenied" and said.endswith("(%s)" % postgres.PASSWORD_FROM), said

    kind, said = opened_in_german(german_server.url("postgres", user="ghost"), {})
    assert "Rolle »ghost« existiert nicht" in said, said
    assert (kind, "refuses role ghost" in said) == ("StoreDenied", True), said

    port = free_port()
    kind, said = opened_in_german("postgresql://postgres@127.0.0.1:%d/x" % port, {})
    assert "Verbindungsaufbau abgelehnt" in said, said
    assert kind == "StoreUnavailable" and "cannot reach the PostgreSQL server" in said, said


def test_a_server_shutting_down_is_said_so_in_german(german_server):
    """A smart shutdown waits for the sessions it has and refuses new ones (57P03, said at
    connect with no SQLSTATE): a server there that will not take one now, not one fractui
    cannot reach."""
    held = german_server.connect("postgres")
    try:
        german_server.pg_ctl("stop", "-m", "smart", "-W")
        kind, said = opened_in_german(german_server.url("postgres"), {})
        assert "fährt herunter" in said, said
        assert kind == "StoreUnavailable" and postgres.NOT_NOW.split("%s")[0] in said, said
        assert said.endswith(postgres.NOT_NOW.split("%s")[1]), said
    finally:
        held.close()
        while os.path.exists(os.path.join(german_server.data, "postmaster.pid")):
            time.sleep(0.05)
        german_server.start()


def test_a_querys_error_is_told_by_its_sqlstate_alone(pg_server):
    """Words that read as a refusal at connect ("role … does not exist") in a query's error
    with a SQLSTATE of its own (42P01, a table not there, its name quoted) are that error, not
    the role's refusal they once were said as."""
    dialect = postgres.PostgresDialect(pg_server.url(pg_server.new_database()))
    db = dialect.connect()
    try:
        with pytest.raises(psycopg.errors.UndefinedTable) as missing:
            db.execute('SELECT * FROM "role ghost does not exist"')
    finally:
        db.close()
    said = dialect.translate(missing.value)
    assert isinstance(said, StoreDamaged) and "does not hold what this fractui's schema has" \
        in said.what, said


def test_no_host_that_takes_writes_is_no_refusal(pg_server):
    """A URL's target_session_attrs=read-write (libpq's failover: several hosts, the one that
    takes writes chosen) on a server whose sessions are read-only now (a standby not yet
    promoted): libpq turns the server away after it took the role, with no SQLSTATE, and the
    ping says the server answered. The role was not refused: a failover under way, tried
    again, not StoreDenied with the server's log to read (which says nothing)."""
    name = pg_server.new_database()
    pg_server.sql("ALTER DATABASE %s SET default_transaction_read_only = on" % name)
    with pytest.raises(StoreUnavailable) as failed:
        open_store(pg_server.url(name) + "?target_session_attrs=read-write")
    assert "session is read-only" in failed.value.what, failed.value.what
    assert "refuses role" not in failed.value.what, failed.value.what


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass  # the other side closed: its pump ends it
    finally:
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already shut


def forward(listener: socket.socket, ports: Sequence[int]) -> None:
    """Each connection to ``listener`` forwarded to a server on 127.0.0.1: the n-th to
    ``ports[n]``, every one after the last to the last: what restarts or a failover look like
    from the client (the old server shutting down at the address, the new one there a moment
    later)."""
    taken = 0
    while True:
        try:
            client, _ = listener.accept()
        except OSError:  # closed
            return
        server = socket.create_connection(("127.0.0.1", ports[min(taken, len(ports) - 1)]))
        taken += 1
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


_FORWARD = """
import socket, sys
from tests.test_pg_words import forward
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
forward(listener, [int(port) for port in sys.argv[1:]])
"""


def _opened_across_restarts(pg_server, shutting: Sequence[bool]) -> StoreUnavailable:
    """The StoreUnavailable of opening a store through a forwarder whose n-th connection goes
    to a server shutting down where ``shutting[n]`` (57P03, no SQLSTATE at connect), else to
    the one up, as restarts (or failovers) look from the client."""
    old = PgServer()
    held = old.connect("postgres")
    moved = subprocess.Popen([sys.executable, "-c", _FORWARD] + [
        str(old.port if s else pg_server.port) for s in shutting], stdout=subprocess.PIPE,
        text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        port = int(moved.stdout.readline())  # type: ignore[union-attr]
        old.pg_ctl("stop", "-m", "smart", "-W")
        with pytest.raises(StoreUnavailable) as failed:
            open_store("postgresql://postgres@127.0.0.1:%d/postgres" % port)
        return failed.value
    finally:
        moved.kill()
        moved.wait()
        held.close()
        while os.path.exists(os.path.join(old.data, "postmaster.pid")):
            time.sleep(0.05)
        shutil.rmtree(old.root, ignore_errors=True)


def test_a_server_back_between_the_refusal_and_the_ping_is_no_refusal(pg_server):
    """A restart (or failover): the connection is refused by the server shutting down, and by
    the ping the new one answers. Not a refusal of the role (StoreDenied): the store is not
    there for a moment, and the next try connects."""
    failed = _opened_across_restarts(pg_server, [True, False])
    assert "shutting down" in failed.what, failed.what
    assert postgres.TAKEN_NOW.split("%s")[0] in failed.what, failed.what


def test_a_server_restarted_again_before_the_second_try_is_no_refusal(pg_server):
    """Two restarts under a second apart: the connection refused by the first's shutdown, the
    ping answered by the server back since, the second try refused by the next shutdown. It
    read as a refusal of the role (StoreDenied "refuses role postgres"); the server is pinged
    again, and one that no longer takes connections is not a refusal."""
    failed = _opened_across_restarts(pg_server, [True, False, True])
    assert "shutting down" in failed.what, failed.what
    assert postgres.NOT_NOW.split("%s")[0] in failed.what, failed.what


def test_the_ping_stops_no_other_thread(pg_server):
    """The ping waits (up to 2 s a host) with the process's other threads running: the
    scheduler's, the TUI's, or here the forwarder it reaches the server through. psycopg's C
    implementations (binary, c) call PQping holding the interpreter's lock, where ctypes'
    (python) lets it go: with the binary one the ping heard nothing through this forwarder and
    a role the server does not know was said as a server not reached."""
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=forward, args=(listener, [pg_server.port]),
                     daemon=True).start()
    try:
        with pytest.raises(StoreDenied) as refused:
            open_store("postgresql://ghost@127.0.0.1:%d/postgres" % listener.getsockname()[1])
        assert "refuses role ghost" in refused.value.what, refused.value.what
    finally:
        listener.close()
