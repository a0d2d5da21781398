"""A PostgreSQL server of a benchmark's own: tests/pg.py's PgServer (initdb and pg_ctl as the
``postgres`` OS user in a temporary directory, TCP on 127.0.0.1), with fsync on as a real
server has it (the tests' servers run with it off), stopped and removed at the end."""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

from tests.pg import PgServer


@contextlib.contextmanager
def postgres_server() -> Iterator[tuple[Callable[[], str], str]]:
    """(what makes a new, empty database on the server and gives its URL, the server's
    version)."""
    server = PgServer()
    try:
        with open(os.path.join(server.data, "postgresql.conf"), "a") as conf:
            conf.write("fsync = on\n")  # the later line wins over PgServer's fsync = off
        server.stop()
        server.start()
        assert server.sql("SHOW fsync") == [("on",)]
        yield (lambda: server.url(server.new_database()),
               server.sql("SHOW server_version")[0][0])
    finally:
        server.close()


def described(version: str) -> str:
    return ("PostgreSQL %s: a server the script started itself (tests/pg.py's PgServer: initdb "
            "and pg_ctl as the postgres OS user in a temporary directory), TCP on 127.0.0.1, "
            "fsync on; every admin's write takes the store's one write lock (LOCK TABLE "
            "write_lock)." % version)
