"""A PostgreSQL server with every connection slot taken (a member's runaway script, sessions
left open): each fractui verb is told so, naming the server and what to do, never "cannot
reach"; the lease-holding scheduler goes on with the connections it keeps, and cut off from
them, tries again each pass, saying it once, then records what happened meanwhile. A server of
the test's own, with a low max_connections."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator, List

import psycopg
import pytest

from fractui.config import QueueConfig
from fractui.store import StoreUnavailable, open_store, postgres
from tests import localfleet
from tests.localfleet import logged, wait
from tests.pg import PgServer

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

local_fleet = localfleet.local_fleet
SLOTS, RESERVED = 12, 3  # max_connections, and those kept for superusers


@pytest.fixture(scope="module")
def small_server() -> Iterator[PgServer]:
    server = PgServer()
    try:
        server.sql("ALTER SYSTEM SET max_connections = %d" % SLOTS)
        server.sql("ALTER SYSTEM SET superuser_reserved_connections = %d" % RESERVED)
        server.stop()
        server.start()
        server.sql("CREATE ROLE runaway LOGIN")
        yield server
    finally:
        server.close()


def fill(server: PgServer, db: str, held: List[psycopg.Connection]) -> List[str]:
    """Takes every slot left, the ordinary ones as the role runaway, then the superusers'
    (as nothing else could); returns the server's refusal of each kind."""
    said = []
    for role in ("runaway", "postgres"):
        while True:
            try:
                held.append(psycopg.connect(server.url(db, user=role), autocommit=True))
            except psycopg.OperationalError as err:
                said.append(str(err))
                break
    return said


def fractuis(conn: psycopg.Connection) -> List[int]:
    return [pid for pid, in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'fractui'").fetchall()]


def test_a_server_with_no_slot_left_is_said_and_the_scheduler_loses_nothing(
        small_server, local_fleet, tmp_path: Path):
    db = small_server.new_database()
    url = small_server.url(db)
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.125)], store_url=url,
                    lease_s=3.0)
    go = tmp_path / "go"
    waits = ["sh", "-c", "while [ ! -e %s ]; do sleep 0.1; done" % go]
    first = f.submit("q", argv=waits)
    sched = f.scheduler_process("s1")
    held: List[psycopg.Connection] = []
    try:
        wait(lambda: f.states()[first.id] == "running", f.states, alive=sched)
        said = fill(small_server, db, held)
        assert "remaining connection slots are reserved" in said[0], said
        assert "too many clients already" in said[1], said
        # a member, then anyone: the words name the server and the way out, not "cannot reach"
        for user in ("runaway", "postgres"):
            with pytest.raises(StoreUnavailable) as full:
                open_store(small_server.url(db, user=user))
            where = "store postgresql://127.0.0.1:%d/%s: " % (small_server.port, db)
            assert str(full.value).startswith(where + "the PostgreSQL server takes no more "
                                              "connections ("), full.value
            assert str(full.value).endswith(postgres.NO_SLOT.split("): ", 1)[1]), full.value
        for verb in (["jobs", "--me"], ["submit", "--queue", "q", "--", "true"], ["audit"]):
            done = f.fractui(*verb)
            lines = done.stderr.strip().splitlines()
            assert (done.returncode, len(lines)) == (1, 1), (verb, done.stderr)
            assert lines[0].startswith("fractui: " + where + "the PostgreSQL server takes no "
                                       "more connections"), (verb, done.stderr)
        # the scheduler keeps its connections: a job submitted meanwhile (on one already open)
        # is placed and launched
        second = f.submit("q")
        wait(lambda: f.states()[second.id] == "running", f.states, alive=sched)
        # cut off: its connections ended, and each slot they left taken, while it is stopped:
        # else it may take a slot back in between, and that is two outages, each said
        controller = held[-1]
        sched.send_signal(signal.SIGSTOP)
        try:
            while fractuis(controller):
                for pid in fractuis(controller):
                    # (waits for it to end: its slot free for the fill below)
                    controller.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
                fill(small_server, db, held)
        finally:
            sched.send_signal(signal.SIGCONT)
        go.touch()  # the first job ends on its host while no scheduler can record it
        wait(lambda: any(j["state"] != "running" for j in f.agent_jobs()), f.agent_jobs)
        with open(small_server.log) as log:
            refused = log.read().count("too many clients already")
        wait(lambda: open(small_server.log).read().count("too many clients already")
             >= refused + 3, lambda: "the scheduler tried no connection", alive=sched)
        assert fractuis(controller) == []  # (no slot was left for it)
        for conn in held:
            conn.close()
        held.clear()
        wait(lambda: f.states()[first.id] == "done", f.states, alive=sched)
        assert (f.store.get(first.id).exit_code, f.states()[second.id]) == (0, "running")
    finally:
        for conn in held:
            conn.close()
        sched.terminate()
        _, err = sched.communicate(timeout=60)
    assert "Traceback" not in err, err
    words = [w for w in logged(err) if "takes no more connections" in w]
    assert words and len(words) == len(set(words)), err  # said, and once while it lasts
    assert all("the scheduler" in w for w in words), words


def test_a_role_at_its_connection_limit_is_told_its_own_limit(small_server):
    """The CONNECTION LIMIT the docs advise, reached: the role is told it is its own limit and
    what raises it, not that the server is full; a role given none connects meanwhile."""
    db = small_server.new_database()
    open_store(small_server.url(db)).close()
    small_server.sql("CREATE ROLE capped LOGIN CONNECTION LIMIT 1")
    with psycopg.connect(small_server.url(db, user="capped")):
        with pytest.raises(StoreUnavailable) as capped:
            open_store(small_server.url(db, user="capped"))
        assert str(capped.value).endswith(postgres.ROLE_SLOTS % (
            "capped", 'connection failed: connection to server at "127.0.0.1", port %d '
            'failed: FATAL: too many connections for role "capped"' % small_server.port,
            '"capped"')), capped.value
        open_store(small_server.url(db)).close()
    # who the words say raises it, as they are: an admin of fractui's may not, the superuser
    # does
    assert str(capped.value).endswith(", or a superuser (or a role with CREATEROLE) raises it "
                                      'with ALTER ROLE "capped" CONNECTION LIMIT n')
    raise_it = "ALTER ROLE capped CONNECTION LIMIT 2"
    small_server.admin_role()
    small_server.sql("CREATE ROLE ops_capped LOGIN IN ROLE fractui_admin")
    with psycopg.connect(small_server.url(db, user="ops_capped"), autocommit=True) as admin:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            admin.execute(raise_it)
    small_server.sql(raise_it)
    assert small_server.sql("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'capped'"
                            ) == [(2,)]


def test_a_database_at_its_connection_limit_is_told_its_own_limit(small_server):
    """A database's CONNECTION LIMIT reached was said as the server's max_connections, with
    the advice to limit each role, which frees none: the database and what raises its limit
    are said, and the server takes another database's connections meanwhile."""
    db = small_server.new_database()
    open_store(small_server.url(db)).close()
    small_server.sql("ALTER DATABASE %s CONNECTION LIMIT 1" % db)
    with psycopg.connect(small_server.url(db, user="runaway")):
        with pytest.raises(StoreUnavailable) as full:
            open_store(small_server.url(db, user="runaway"))
        assert str(full.value).endswith(postgres.DATABASE_SLOTS % (
            db, 'connection failed: connection to server at "127.0.0.1", port %d failed: '
            'FATAL: too many connections for database "%s"' % (small_server.port, db),
            '"%s"' % db)), full.value
        psycopg.connect(small_server.url("postgres", user="runaway")).close()


def test_what_a_full_server_is_told_to_do_is_a_superusers(small_server):
    """The ordinary slots taken by a member's sessions: the words said "an admin" sees whose
    they are and ends a runaway's, but an admin of fractui's is refused a slot as anyone is,
    and, connected, may not end another role's session; the superuser, in a slot kept for it,
    does both as the words say."""
    db = small_server.new_database()
    small_server.admin_role()
    small_server.sql("CREATE ROLE ops_full LOGIN IN ROLE fractui_admin")
    admin = psycopg.connect(small_server.url(db, user="ops_full"), autocommit=True)
    held: List[psycopg.Connection] = []
    try:
        while True:
            try:
                held.append(psycopg.connect(small_server.url(db, user="runaway")))
            except psycopg.OperationalError as err:
                assert "remaining connection slots are reserved" in str(err), err
                break
        with pytest.raises(psycopg.OperationalError, match="remaining connection slots"):
            psycopg.connect(small_server.url(db, user="ops_full"))
        runaway = held[0].info.backend_pid
        with pytest.raises(psycopg.errors.InsufficientPrivilege,
                           match="must be a member of the role whose process"):
            admin.execute("SELECT pg_terminate_backend(%s)", (runaway,))
        said = postgres.NO_SLOT.split("a superuser (the slots kept are theirs) sees whose "
                                      "they are (", 1)[1].split("), ends", 1)[0]
        with psycopg.connect(small_server.url(db), autocommit=True) as superuser:
            assert ("runaway", "", len(held)) in superuser.execute(said).fetchall()
            assert superuser.execute("SELECT pg_terminate_backend(%s)", (runaway,)
                                     ).fetchone() == (True,)
    finally:
        admin.close()
        for conn in held:
            conn.close()
