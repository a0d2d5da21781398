"""The store in a PostgreSQL database, shared by a team's users, TUIs and schedulers (psycopg 3).

What PostgreSQL does its own way for the SQL core (fractui.store.sql): schema changes are
numbered SQL files in migrations/postgresql/, counted in the ``fractui_schema`` table; an
admin's write takes the store's write lock up front (the table write_lock's, which only the
admins may take), so writes are serialised as SQLite's are and a compare-and-set or a fenced
write never races another client, and a team member's write holds the job rows it changes and
its team's turn to submit, so nothing she holds on psql stalls another team; time — the
lease's expiry above all — is the server's clock, never a client's, so schedulers on machines
whose clocks disagree still agree on who holds the lease; a change is announced by NOTIFY in
the change's own transaction (delivered only if it commits), which PostgresFeed hears by
LISTEN.

Who the caller is comes from the server: the role it authenticated as (``session_user``),
admin if a superuser or a member of the role ``fractui_admin``, in the teams named by the
roles ``fractui_team_<team>`` it is a member of (docs/decisions.md says how an admin makes
them). A URL never carries a password; libpq reads PGPASSWORD, ~/.pgpass and its other PG*
variables.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from typing import Any, Callable, Optional

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.sql import Identifier

from fractui.store.base import (EVERYTHING, NO_STORE, NOTHING_RECORDED, TOPICS, Feed,
                                Identity, RowsLocked, StoreBusy, StoreDamaged, StoreDenied,
                                StoreError, StoreForbidden, StoreFull, StoreMisdirected,
                                StoreMissing, StoreReadOnly, StoreUnavailable)
from fractui.store.sql import (UNSENDABLE, Dialect, SqlStore, migrations, new_store_id,
                               refused, statements)
from fractui.store_url import postgresql_url
from fractui.whoami import os_user
from remote_agent.daemon.trust import python_code

log = logging.getLogger("fractui.store")

# the NOTIFY channel (fractui_announce, migration 0005 sends on it); the payload is the topic
CHANNEL = "fractui_changes"
WRITE_LOCK_TABLE = "write_lock"  # whose EXCLUSIVE lock is the store's write lock (0032)
# The advisory lock every write held before migration 0032 ("frac"), which any role could
# take; a store from before it is migrated under it, as the fractui that wrote it writes.
WRITE_LOCK = 0x66726163
ADMIN_ROLE = "fractui_admin"
TEAM_ROLE = "fractui_team_"
CONNECT_TIMEOUT_S = 10  # unless the URL or PGCONNECT_TIMEOUT says otherwise
LOCK_TIMEOUT_S = 30.0  # a write waits this long for the write lock (SQLite's busy timeout)
# A session of ours idle inside a transaction this long is ended by the server: a client
# paused or hung mid-write (SIGSTOP, a frozen VM) would otherwise hold the write lock, and
# every other writer, for as long as it is paused. Our transactions never wait between their
# statements; when the client resumes, its connection is gone and its write is not made.
IDLE_IN_WRITE_S = 10.0
# Once a write holds the write lock it waits this long for a row or table: fractui's writers
# take turns by that lock, so whatever holds a row then is a session outside them (a psql
# transaction left open on a job); waiting LOCK_TIMEOUT_S there kept every other writer,
# every team's submits and the scheduler's other jobs, waiting behind the one row.
ROW_WAIT_S = 2.0
# A server that vanished without closing the connection (a partition, a dead host) is found
# by TCP keepalives within about 5 + 3 x 2 s, instead of the system's two hours.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
              "keepalives_count": 3}
# A server that stops answering without closing the connection (its process stopped or hung, a
# link or proxy that holds the connection open and passes nothing) is not found by keepalives:
# the kernel at the other end still answers them. A statement whose answer has not begun to
# come this long is asked after on a connection of its own, and given up where the server
# does not say it runs it (it cannot be reached, or its session idles or is blocked sending):
# its connection closed, and the call said lost as a dropped one is (retried, or "whether it
# was recorded is not known" at a COMMIT). One it runs (a lock waited for, a migration's index
# on a big store, a long report) is waited for, and asked after again each ANSWER_WAIT_S: a
# bound on the statement alone cut such work, and its retry, for as long as it took. A feed
# waiting for notifications owes no answer, and is not bounded.
ANSWER_WAIT_S = 2 * LOCK_TIMEOUT_S
VERSION_TABLE = "fractui_schema"
NO_STORE_TO_MAKE = ("there is no store here yet, and role %s may not make one (it may not "
                    "create tables in the schema public): an admin who owns the database "
                    "makes it by running fractui scheduler on it once, then grants the team "
                    "roles their privileges (docs/decisions.md, \"Who the caller is on "
                    "PostgreSQL\")")
"""What a role that may not create fractui's tables is told where there are none yet (a
team member who submits before the admin's first run), rather than the server's bare
"permission denied for schema public"."""
NOT_GRANTED = ("role %s may not do this: %s (it was granted nothing on the store's tables: an "
               "admin makes it a member of a team's role, fractui_team_<team>, given the GRANTs "
               "of docs/decisions.md, \"Who the caller is on PostgreSQL\")")
"""What a role that may read none of the store is told: the server's words alone ("permission
denied for table fractui_schema") name a table, not what an admin gives it."""

GROUP_NOT_GRANTED = ("role %s may not do this: %s (it is in %s, which was granted nothing on "
                     "the store's tables: an admin runs the GRANTs of docs/decisions.md, \"Who "
                     "the caller is on PostgreSQL\", TO %s in the store's database)")
"""What a member of fractui_admin or of a team's role is told where that role was granted
nothing (a team the admin added after the GRANTs): NOT_GRANTED's advice, to make it a member,
would not be true of it."""

NOT_INHERITED = ("role %s may not do this: %s (it is in %s, which may read the store, but it "
                 "does not inherit that role's rights (NOINHERIT): a superuser or a role with "
                 "CREATEROLE runs %s; or it acts as that role by SET ROLE, which the store's "
                 "URL asks with options=%s)")
"""What a member of a granted team's role is told where its membership does not inherit the
team's privileges: GROUP_NOT_GRANTED's "was granted nothing" would not be true of it. The
statement: ALTER ROLE ... INHERIT before PostgreSQL 16; from 16 inheritance is each
membership's, which that leaves as it was: GRANT ... WITH INHERIT TRUE."""

NOT_OWNER = ("this fractui applies PostgreSQL migration %04d to it (its schema is at version "
             "%d), and role %s may not: %s; a schema change needs the owner of the store's "
             "tables and functions (%s), a member of that role, or a superuser, who applies it "
             "by opening the store once with this fractui (fractui jobs --me as that role); "
             "nothing was changed")
"""What a role that may not change the schema is told where a newer fractui finds a migration
to apply (the server says only "must be owner of table jobs"): which, and who can. Schema
changes need the tables' owner, which a member of it acts as; a scheduler run as an admin
role outside it is not it (docs/cli.md, "A shared PostgreSQL store")."""
MANY_OWNERS = ("roles %s, where one should own them all: %s gives the others' to the first "
               "with %s in the store's database, docs/cli.md, \"A shared PostgreSQL store\"")
"""The owners said where the store's objects have several (some made before its admins were
a group, as a member's own or a superuser's), the store's own first; with who may move them
(REASSIGNS or, where the cluster's first superuser owns some, a superuser)."""
REASSIGNS = ("a superuser, or a role that inherits the rights of each of %s (REASSIGN OWNED "
             "asks those of the old owners and the new, not membership alone),")
"""Who may REASSIGN OWNED: PostgreSQL (15 as 16) asks the privileges of the old owners' roles
and the new (has_privs_of_role), which a NOINHERIT member has not (unless it SETs ROLE to one
that has). Not "an admin": fractui_admin gives neither."""
BOOTSTRAP_OWNS = ("ALTER TABLE/FUNCTION ... OWNER TO %s for each object of role %s (the "
                  "superuser that made the cluster, whose objects REASSIGN OWNED refuses to "
                  "move)")
"""What gives the store's owner the objects of the cluster's first superuser, which PostgreSQL
requires and REASSIGN OWNED will not move ("required by the database system")."""
TEAM_OWNS = ("%s, in a team's role and not an admin, may act as the store's owner, role %s: "
             "an owner may turn the guard's triggers and row security off, and so change any "
             "team's jobs; a superuser runs %s (no team's role or member may be in the role "
             "that owns the store: docs/cli.md, \"A shared PostgreSQL store\")")
"""Where a team's role or member is a member of the store's owner (or is it): refused on
every open, as a schema public every role may create in is. A superuser: PostgreSQL lets
another role REASSIGN OWNED only as a member of both roles (a team's role an admin is not in),
and REVOKE a membership only with that role's ADMIN OPTION."""
OWNER_MAY_NOT_CREATE = ("the store is role %s's, which role %s acts as to apply this fractui's "
                        "migrations, but %s may not create objects in the schema public: %s in "
                        "the database; nothing was changed")
"""Where the store's owner is a group role that cannot create in ``public`` (its tables were
given to it, the database and the schema were not): said before a migration is tried, with
who may run what lets it (DATABASE_TO or SCHEMA_TO)."""
DATABASE_TO = ("a superuser, or a role with CREATEDB in both role %s (the database's owner) and "
               "role %s, runs ALTER DATABASE %s OWNER TO %s")
SCHEMA_TO = ("a superuser, or a role in both role %s (the schema's owner) and role %s that may "
             "create in the database (CREATE on it), runs ALTER SCHEMA public OWNER TO %s")
"""What ALTER DATABASE/SCHEMA ... OWNER asks (PostgreSQL 15; from 16 SET ROLE to the new owner
in place of membership): to be the old owner or in it, to be in the new, and CREATEDB, or
CREATE on the database, respectively. Not "an admin": fractui_admin gives none of it."""
OTHER_CREATES = ("%s, not an admin, may create objects in the schema public (the CREATE "
                 "privilege on it, which GRANT ALL ON SCHEMA gives): a function put there with "
                 "argument types closer than PostgreSQL's own is the one the guard calls in a "
                 "member's write, so a team member could pass for an admin; the schema's owner "
                 "(or a member of it) or a superuser runs REVOKE CREATE ON SCHEMA public FROM %s "
                 "CASCADE in the database (docs/decisions.md, \"No role but an admin may "
                 "create in the schema public\")")
"""Where a role that is neither an admin nor the store's owner holds CREATE on the schema
public, given to it rather than to PUBLIC (which migrate refuses with its own words): refused on
every open, as TRIGGER is. A member of the role may create there as well."""
TEAM_TRIGGERS = ("%s, not an admin, may add triggers to %s (the TRIGGER privilege, which "
                 "GRANT ALL gives): a trigger runs as whoever writes the table, the scheduler "
                 "too, so a member's own (on a function in pg_temp) could change any team's "
                 "jobs; the store's owner (role %s, or a member of it) or a superuser runs %s "
                 "(docs/decisions.md, \"Who the caller is on PostgreSQL\", says what a team "
                 "needs)")
TRIGGERS_BY_DEFAULT = ("every table role %s makes next, a migration's too, by its default "
                       "privileges (pg_default_acl, set by ALTER DEFAULT PRIVILEGES ... GRANT, "
                       "which a REVOKE on the tables leaves)")
"""Where a role that is not an admin has TRIGGER on a table of the store, or would have it on
the next the owner makes (TRIGGERS_BY_DEFAULT): refused on every open, as a schema public
every role may create in is. The owner, since another role's REVOKE
of what the owner granted revokes nothing (PostgreSQL only warns); CASCADE, since a role given
TRIGGER WITH GRANT OPTION that gave it on is refused without ("dependent privileges exist")."""

NO_SLOT = ("the PostgreSQL server takes no more connections (%s): every one it allows "
           "(max_connections, less the few it keeps for superusers) is in use; "
           + NOTHING_RECORDED + ". Try again once some close; a superuser (the slots kept are "
           "theirs) sees whose they are (SELECT usename, application_name, count(*) FROM "
           "pg_stat_activity GROUP BY 1, 2), ends a runaway's with pg_terminate_backend, and "
           "gives each login role a CONNECTION LIMIT (docs/cli.md, \"A shared PostgreSQL store\")")
"""What a verb is told where the server refuses a connection for want of a slot (a member's
script or sessions holding them all), rather than "cannot reach the PostgreSQL server": it
was reached, and the way out is a superuser's: an admin of fractui's is refused a slot as
anyone is, and may not end another role's session."""
ROLE_SLOTS = ("role %s has all the connections its CONNECTION LIMIT allows (%s); "
              + NOTHING_RECORDED + ": close some of its sessions (a TUI, a scheduler, a "
              "shell), or a superuser (or a role with CREATEROLE) raises it with ALTER ROLE %s "
              "CONNECTION LIMIT n")
DATABASE_SLOTS = ("database %s has all the connections its CONNECTION LIMIT allows (%s); "
                  + NOTHING_RECORDED + ": try again once some close, or its owner or a "
                  "superuser raises it with ALTER DATABASE %s CONNECTION LIMIT n")
"""A database's own limit (ALTER DATABASE ... CONNECTION LIMIT) reached: the server takes
other databases' connections, and no role's CONNECTION LIMIT (NO_SLOT's advice) frees one."""
# The server's words for each (PostgreSQL 15; from 16 the reserved slots' words name "roles
# with the SUPERUSER attribute" or pg_use_reserved_connections), in English: read only for the
# advice, once the class is known by what no language changes (_refused_at_connect, 53300),
# and only from the server's refusal at connect (a query's error may quote anyone's value: the
# guard's refusal of a member's). The role's or the database's name as the server says it (a
# peer map's role is not the URL's).
_NO_SLOT_WORDS = ("too many clients already", "remaining connection slots are reserved")
_LIMIT_WORDS = re.compile(r'too many connections for (role|database) "(.*?)"(?=\s|$)')

PING_TIMEOUT_S = 2
"""How long the ping that tells a failed connection apart waits for the server (libpq's least
connect_timeout): one that answers no sooner is said as not reached, as it was before."""
NOT_NOW = ("the PostgreSQL server takes no connections now (starting up, shutting down, or "
           "recovering): %s; " + NOTHING_RECORDED + ": try again in a moment")
TAKEN_NOW = ("the PostgreSQL server took this role's connection on a second try: it came "
             "back since (a restart, a failover), or no host was what the URL's "
             "target_session_attrs asks for (a standby not yet promoted): %s; "
             + NOTHING_RECORDED + ": try again in a moment")
PASSWORD_FROM = "a password is read from PGPASSWORD or ~/.pgpass, never from the config"
REFUSED_AT_CONNECT = ("the server's log says why: a role it does not know or whose password "
                      "it refused, pg_hba.conf, a database not there, or no connection slot "
                      "left (fractui reads the server's words only in English)")
"""The advice where the server answered and refused, and its words name none that fractui
knows: a server in another language (its lc_messages), or a reason not foreseen."""

# What every session of ours runs with, whatever the database's or the role's defaults say
# (ALTER DATABASE/ROLE ... SET): the store's tables in the schema public and no other (a
# search_path of "$user" or another schema made a second, empty store there, or read another
# program's table of the same name); no statement cut short but by the lock and idle limits
# above (a statement_timeout shorter than LOCK_TIMEOUT_S failed writes that waited their
# turn, said as an unreachable server); times read back as written (a negative
# extra_float_digits rounded them, and at -15 made a held lease look free). From PostgreSQL
# 14: no idle_session_timeout (a feed's LISTEN connection idles between changes, and a default
# ended it every few seconds; each end woke the readers to read everything again).
def _session(server_version: int) -> dict[str, str]:
    """The settings above, made from the limits as they are when a session opens."""
    return dict({"search_path": "public", "lock_timeout": "%dms" % (LOCK_TIMEOUT_S * 1000),
                 "idle_in_transaction_session_timeout": "%dms" % (IDLE_IN_WRITE_S * 1000),
                 "statement_timeout": "0", "extra_float_digits": "3"},
                **({"idle_session_timeout": "0"} if server_version >= 140000 else {}))


# A commit answered only once the server has flushed it to its own disk, whatever the
# server's, the database's or the role's synchronous_commit says: under "off" (an admin's
# tuning for speed, or a member's ALTER ROLE of her own role) a submit or cancel fractui had
# said was made was lost with the server's crash. Only "off" is raised: every other value
# ("local", "remote_write", "on", "remote_apply") flushes locally before the commit answers,
# and the stronger ones wait for a synchronous standby as the admin asked.
_DURABLE = ("SELECT set_config('synchronous_commit', 'on', false) "
            "WHERE current_setting('synchronous_commit') = 'off'")


def _target(url: str, made: Optional[pq.abc.PGconn] = None) -> tuple[str, str]:
    """(role, where) as libpq will use them, read from the URL and the PG* variables (libpq's
    defaults where neither says: the OS user, localhost, 5432); never the password. The OS user
    is libpq's: the process's by euid, never $USER or $LOGNAME, which anyone may set. Where a
    service is named (the URL's ``service``, or PGSERVICE), what the URL leaves unsaid is the
    service's, ahead of the PG* variables: libpq reads pg_service.conf and psycopg does not,
    so it is read from ``made``, a connection libpq made of the URL (or failed to make: its
    options are parsed before it tries); before one, the variables' are a guess."""
    parts = conninfo_to_dict(url)
    said: dict[str, str] = {}
    if made is not None and _service(url):
        said = {k: v.decode("utf-8", "replace") for k, v in (
            ("user", made.user), ("host", made.host), ("port", made.port),
            ("dbname", made.db)) if v}

    def given(key: str, variable: str) -> Optional[str]:
        return parts.get(key) or said.get(key) or os.environ.get(variable)
    user = given("user", "PGUSER") or os_user()
    db = given("dbname", "PGDATABASE") or user
    return user, postgresql_url(given("host", "PGHOST") or "localhost",
                                given("port", "PGPORT") or "5432", db)


def _service(url: str) -> Optional[str]:
    """The pg_service.conf service ``url`` names (its ``service``, else PGSERVICE), or None."""
    return conninfo_to_dict(url).get("service") or os.environ.get("PGSERVICE")


def _target_of_failed(url: str, made: Optional[pq.abc.PGconn]) -> tuple[str, str]:
    """_target of a connection that failed, ``made`` libpq's where psycopg kept it. psycopg
    keeps none of one its connect timeout ended, and a service's server that took the TCP
    connection and never answered was named by the variables' guess (localhost:5432, the OS
    user): libpq reads the URL again then, into a connection it begins and that is ended at
    once, no server waited on (a host's name resolved, as each try of it resolves it)."""
    if made is not None or not _service(url):
        return _target(url, made)
    begun = pq.PGconn.connect_start(url.encode())
    try:
        return _target(url, begun)
    finally:
        begun.finish()


class _Answered(psycopg.Connection):  # type: ignore[type-arg]
    """A connection that gives up an answer it is owed where nothing came for ANSWER_WAIT_S
    and the server, asked on a connection of its own, does not say it is running the
    statement: a server at work (a lock waited for under lock_timeout, a migration's index on
    a big store, a long report) is waited for as long as it works."""

    asker: Optional[str] = None
    """The conninfo on which the server that took this connection is asked (_running); None
    for the asking connection itself, given up after PING_TIMEOUT_S of silence unasked."""

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        asks = self.asker is not None
        bound = ANSWER_WAIT_S if asks else PING_TIMEOUT_S
        try:
            return super().wait(_heard(gen, self.pgconn, bound, self._running if asks else
                                       lambda: False), *args, **kwargs)
        except _Unanswered:
            self.pgconn.finish()  # (what it sent may have been run: the caller says so)
            raise psycopg.OperationalError(
                "the server sent nothing for %g s while a statement waited for its answer%s "
                "(the server stopped or hung, or a link that holds the connection and passes "
                "nothing): its connection was closed" % (bound, ", and did not say it was "
                "running it when asked on a connection of its own" if asks else "")) from None

    def _running(self) -> bool:
        """Whether the server says this connection's session is running a statement (not idle
        waiting for one, nor blocked sending an answer a held link does not take), asked on
        a connection of its own as the session's own login role (SET ROLE NONE: a role the
        URL's options set may not see that role's sessions). A server that cannot be asked
        says nothing."""
        try:
            with _Answered.connect(self.asker, autocommit=True) as asked:  # type: ignore[arg-type]
                asked.execute("SET ROLE NONE")
                row = asked.execute(
                    "SELECT state = 'active' AND wait_event IS DISTINCT FROM 'ClientWrite' "
                    "FROM pg_stat_activity WHERE pid = %s", (self.pgconn.backend_pid,)
                ).fetchone()
        except psycopg.Error as err:
            log.info("the server that sent nothing for %g s could not be asked whether it runs "
                     "the statement: %s", ANSWER_WAIT_S, err)
            return False
        return bool(row and row[0])


class _Unanswered(Exception):
    """Raised inside psycopg's wait (``_heard``) to end it; _Answered says it."""


def _heard(gen: Any, pgconn: pq.abc.PGconn, bound: float, running: Callable[[], bool]) -> Any:
    """psycopg's generator ``gen``, ended (_Unanswered) where nothing came of the socket for
    ``bound`` s while a command was in progress and ``running()`` does not say the server is
    at work on it (where it does, the silence is counted anew). psycopg's wait sends it
    "nothing ready" each interval (0.1 s), so the silence is counted without a thread of its
    own."""
    heard = time.monotonic()
    try:
        wanted = next(gen)
        while True:
            ready = yield wanted
            if ready:
                heard = time.monotonic()
            elif time.monotonic() - heard > bound and \
                    pgconn.transaction_status == TransactionStatus.ACTIVE:
                if not running():
                    raise _Unanswered()
                heard = time.monotonic()
            wanted = gen.send(ready)
    except StopIteration as done:
        return done.value


class PostgresDialect(Dialect):
    def __init__(self, url: str, make: bool = True, origin: Optional[str] = None):
        self.url = url
        self.user, self.where = _target(url)
        self.make = make
        """Whether a database with no store in it yet is made one (else NO_STORE)."""
        self.origin = origin
        """Where the config gives the URL (StoreSettings.origin), or None."""
        self.turns = False
        """Whether the store has its write lock of fractui's roles (migration 0032)."""
        self.whole = True
        """Whether the write begun last holds the store's write lock: false for a team
        member's, which holds the rows it changes and its team's turn instead."""

    def connect(self) -> psycopg.Connection:
        """A connection in autocommit (a write opens its own transaction), with what the URL
        leaves unset defaulted: a connect timeout, keepalives, a lock timeout."""
        given = conninfo_to_dict(self.url)
        extra: dict[str, Any] = {k: v for k, v in KEEPALIVES.items() if k not in given}
        extra["application_name"] = given.get("application_name", "fractui")
        if "connect_timeout" not in given and not os.environ.get("PGCONNECT_TIMEOUT"):
            extra["connect_timeout"] = CONNECT_TIMEOUT_S
        # UTF8 whatever PGCLIENTENCODING says: names and images are any Unicode
        try:
            db = _Answered.connect(self.url, autocommit=True, row_factory=dict_row,
                                   client_encoding="UTF8", **extra)
        except psycopg.OperationalError as err:
            self.user, self.where = _target_of_failed(self.url, err.pgconn)
            if err.sqlstate:
                raise
            raise self._refused_at_connect(err) from err
        try:
            self._set_up(db, extra["application_name"])
        except BaseException:  # (Ctrl-C too) a connection no one will hold: closed, else it
            self.close(db)  # stayed open, on the server too, as long as its error was kept
            raise
        return db

    def _set_up(self, db: _Answered, name: str) -> None:
        """Who and where ``db`` reached, and its session's settings (``connect``'s)."""
        self.user, self.where = _target(self.url, db.pgconn)
        db.asker = self._asker(db.pgconn, name)
        encoding = db.info.parameter_status("server_encoding")
        if encoding != "UTF8":
            raise StoreDamaged(self.where, "the database is encoded %s; fractui needs a UTF8 one "
                               "(its names, commands and images are Unicode, and the guard's "
                               "checks read characters): an admin creates one with CREATE "
                               "DATABASE ... ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
                               "TEMPLATE template0 (or a UTF-8 locale)" % (
                                   encoding or "unknown"))
        session = _session(db.info.server_version)
        db.execute("SELECT set_config(name, value, false) FROM (VALUES %s) AS s (name, value)"
                   % ", ".join(["(%s, %s)"] * len(session)),
                   [x for item in session.items() for x in item])
        db.execute(_DURABLE)

    def _asker(self, made: pq.abc.PGconn, name: str) -> str:
        """The conninfo that asks the server ``made`` reached whether it runs a statement
        (_Answered): the URL's, at the host, address and port it took (a URL may name
        several), waited for PING_TIMEOUT_S."""
        at = {"host": made.host.decode(), "port": made.port.decode()}
        if "hostaddr" in conninfo_to_dict(self.url):
            at["hostaddr"] = made.hostaddr.decode()
        return make_conninfo(self.url, connect_timeout=PING_TIMEOUT_S,
                             target_session_attrs="any", application_name=name, **at)

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def begin(self, db: psycopg.Connection) -> None:
        # read committed whatever default_transaction_isolation says: the write lock is taken
        # inside the transaction, and only a snapshot taken after it sees the writes of the one
        # before (under repeatable read a deposed leader's fenced write passed the fence)
        db.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        if not self.turns:  # (known once seen: a store never goes back below 0032)
            self.turns = db.execute("SELECT to_regprocedure('public.fractui_write_turn()') "
                                    "IS NOT NULL AS made").fetchone()["made"]
        try:
            if self.turns:
                self.whole = db.execute("SELECT fractui_write_turn() AS whole"
                                        ).fetchone()["whole"]
            else:  # a store before 0032, being migrated: as the fractui that wrote it
                db.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                self.whole = True
        except psycopg.errors.LockNotAvailable as err:
            db.execute("ROLLBACK")
            raise StoreBusy(self.where, "no write for %g s: %s; try again" % (
                LOCK_TIMEOUT_S, self._lock_holder(db))) from err
        self._lock_wait(db, ROW_WAIT_S)

    def team_turn(self, db: psycopg.Connection, team: str) -> None:
        """A member's submit waits for her team's turn as long as a write waits for the write
        lock (her teammates' submits are fractui's writers in their turn, not sessions
        outside them: a burst of one team's submits queues there as it did on the write
        lock), then for rows ROW_WAIT_S again. An admin's is ordered by the write lock; a
        member's that holds it (a broad grant) takes the turn too, which the guard holds her
        job's time to (migration 0039)."""
        if self.turns:
            self._lock_wait(db, LOCK_TIMEOUT_S)
            db.execute("SELECT fractui_team_turn(%s) WHERE NOT fractui_guard_admin()", (team,))
            self._lock_wait(db, ROW_WAIT_S)

    def _lock_wait(self, db: psycopg.Connection, seconds: float) -> None:
        """How long this transaction's statements wait for a lock (lock_timeout)."""
        db.execute("SELECT set_config('lock_timeout', %s, true)", ("%dms" % (seconds * 1000),))

    def locked(self) -> str:
        return " FOR UPDATE"

    def _lock_holder(self, db: psycopg.Connection) -> str:
        """Who holds the write lock, from the server's own views (every role may read who
        is connected): an admin's session that keeps it (or a member's, where a broad grant
        gave her UPDATE on every table) is named, with the way to end it. Before 0032 the lock
        was advisory, which any role may take."""
        writer, params = self._writer()
        row = db.execute(_HOLDER % writer, params).fetchone()
        if row is None:
            return "the store's write lock was held by a session that has let it go"
        return "the store's write lock is held by %s" % _holder_words(row)

    def _writer(self) -> tuple[str, tuple[int, ...]]:
        """What marks a fractui writer in its turn on pg_locks l, and its parameters: the
        write lock's table (0032), or the advisory lock before it."""
        return (_WRITER, ()) if self.turns else (_ADVISORY_WRITER, (WRITE_LOCK,))

    def explained(self, db: psycopg.Connection, err: StoreError) -> StoreError:
        """A row or table found locked, said with the session that holds it: the oldest
        other than this one that holds more than a read's lock on a table of the store and
        is not a fractui writer in its turn (those hold the write lock)."""
        if not isinstance(err, RowsLocked):
            return err
        try:
            writer, params = self._writer()
            outside = ("l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid() "
                       "AND l.relation IN (SELECT oid FROM pg_class WHERE relnamespace = "
                       "'public'::regnamespace) AND NOT EXISTS (SELECT 1 FROM pg_locks w "
                       "WHERE w.pid = l.pid AND %s)" % writer.replace("l.", "w."))
            row = db.execute(_HOLDER % outside, params).fetchone()
        except psycopg.Error:
            return err  # (the words it has are still true)
        who = ("held by %s" % _holder_words(row) if row is not None else
               "held by a session that has let it go")
        return RowsLocked(err.where, "%s: %s; try again" % (err.what, who))

    def commit(self, db: psycopg.Connection) -> None:
        db.execute("COMMIT")

    def rollback(self, db: psycopg.Connection) -> None:
        try:
            if db.info.transaction_status in (TransactionStatus.INTRANS,
                                              TransactionStatus.INERROR):
                db.execute("ROLLBACK")
        except psycopg.Error:
            pass

    def now(self, db: psycopg.Connection) -> float:
        return float(db.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS now"
                                ).fetchone()["now"])

    def up_to_date(self, db: psycopg.Connection) -> bool:
        return self._version(db) == migrations("postgresql")[-1][0]

    def _version(self, db: psycopg.Connection) -> int:
        """The schema's version (-1: no store yet, where one may be made), once the database
        is found safe to use and a fractui store's; read only, so asked in a read too."""
        if db.execute("SELECT has_schema_privilege('public', 'public', 'CREATE') AS open"
                      ).fetchone()["open"]:
            raise StoreDamaged(self.where, "every role may create objects in its schema public "
                               "(PostgreSQL's default before 15): a team member could put "
                               "functions there that the guard would call in place of "
                               "PostgreSQL's own; an admin runs REVOKE CREATE ON SCHEMA public "
                               "FROM PUBLIC in the database")
        self._no_other_creates(db)
        self._no_team_owns(db)
        self._no_team_triggers(db)
        latest = migrations("postgresql")[-1][0]
        if self._has_version_table(db):
            try:
                row = db.execute("SELECT version FROM %s" % VERSION_TABLE).fetchone()
            except psycopg.errors.InsufficientPrivilege as err:  # the first table any call reads
                self.rollback(db)  # (what its roles are is read after it)
                raise StoreForbidden(self.where, _not_granted(
                    db, self.user, err.diag.message_primary)) from err
            if row is None or row["version"] < 0:  # (made with its row, in one transaction)
                raise self.damaged("its schema version (%s) is %s" % (
                    VERSION_TABLE, "none" if row is None else row["version"]))
            have = row["version"]
        else:
            tables = [r["tablename"] for r in db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "ORDER BY tablename LIMIT 6")]
            if tables and self._has_version_table(db):  # made since it was looked for (a
                return self._version(db)  # read alone: no write lock orders it after the make)
            if tables:
                raise StoreDamaged(self.where, "holds tables fractui did not make (%s) and no "
                                   "%s table: not a fractui store; give fractui a database of "
                                   "its own" % (", ".join(tables), VERSION_TABLE))
            if not self.make:  # (a verb that only reads, or names a job: not a store's start)
                raise StoreUnavailable(self.where, NO_STORE)
            have = -1  # (none yet: the table is made below, as the store's owner)
        if have > latest:
            raise StoreDamaged(self.where, "was written by a newer fractui (schema version %d; "
                               "this one knows up to %d): use that fractui, or upgrade this "
                               "one" % (have, latest))
        return have

    @staticmethod
    def _has_version_table(db: psycopg.Connection) -> bool:
        """Whether the store's version table is: made in the transaction that makes the store's
        other tables, so one found without it is another program's."""
        return db.execute("SELECT to_regclass(%s) IS NOT NULL AS known",
                          (VERSION_TABLE,)).fetchone()["known"]

    def migrate(self, db: psycopg.Connection) -> None:
        have = self._version(db)
        pending = [(number, sql) for number, sql in migrations("postgresql") if number > have]
        if not pending:
            return
        was = self._as_owner(db)
        made = have < 0  # (its id is given in the same transaction: SqlStore._migrate)
        if made:
            who = db.execute("SELECT session_user AS role, has_schema_privilege('public', "
                             "'CREATE') AS may").fetchone()
            if not who["may"]:  # a team member before the admin's first run: say so
                raise StoreForbidden(self.where, NO_STORE_TO_MAKE % who["role"])
            db.execute("CREATE TABLE %s (version INTEGER NOT NULL)" % VERSION_TABLE)
            db.execute("INSERT INTO %s (version) VALUES (0)" % VERSION_TABLE)
            have = 0
        # read before any is tried: a refused statement leaves nothing else to ask this time
        owners = db.execute(_OWNERS).fetchall() if have else []
        for number, sql in pending:
            try:
                for statement in statements(sql):
                    db.execute(statement)
                # a migration's row changes queue the deferred audit check's events (0016),
                # and PostgreSQL alters no table that has some pending: checked now, so the
                # next migration's ALTER TABLE goes through in the same transaction
                db.execute("SET CONSTRAINTS ALL IMMEDIATE")
            except psycopg.Error as err:
                if have and (err.sqlstate or "") in _DONE_ALREADY:
                    raise self.damaged("its schema version (%s) is %d, but its tables are not "
                                       "that version's: PostgreSQL says %r as it migrates it"
                                       % (VERSION_TABLE, have, str(err).strip())) from err
                if not isinstance(err, psycopg.errors.InsufficientPrivilege) or not owners:
                    raise  # (a store's start: the first run's, said as the server says)
                raise StoreForbidden(self.where, NOT_OWNER % (
                    number, have, self.user, err.diag.message_primary or err,
                    _owners_words(owners))) from err
            db.execute("UPDATE %s SET version = %%s" % VERSION_TABLE, (number,))
        if made:
            db.execute("INSERT INTO meta (key, value) VALUES ('uid', %s)", (new_store_id(),))
        db.execute("SELECT set_config('role', %s, true)", (was,))  # (what follows: as before)

    def _no_other_creates(self, db: psycopg.Connection) -> None:
        """Refuses a store where a role that is not an admin may create objects in the schema
        public (docs/decisions.md, "No role but an admin may create in the schema public"):
        PUBLIC's own grant, refused above, given to a team's role or a member instead."""
        rows = db.execute(_CREATES).fetchall()
        if rows:
            raise StoreDamaged(self.where, OTHER_CREATES % (
                _roles([r["grantee"] for r in rows]), _grantees(rows)))

    def _no_team_owns(self, db: psycopg.Connection) -> None:
        """Refuses a store whose owner a team's role or member may act as (docs/decisions.md,
        "A store whose owner a team may act as is refused"): the guard holds no owner, so with
        a team role in the owners' group every member of that team could turn it off."""
        held = db.execute(_TEAM_OWNS).fetchall()
        if not held:
            return
        owner = held[0]["owner"]
        if owner.startswith(TEAM_ROLE):  # (no REVOKE makes it another's: its memberships moot)
            fixes = ["REASSIGN OWNED BY %s TO %s in the store's database" % (
                quoted(owner), quoted(ADMIN_ROLE))]
        else:
            fixes = ["REVOKE %s FROM %s" % (quoted(r["grp"]), quoted(r["member"]))
                     for r in db.execute(_TEAM_OWNS_BY)]
        raise StoreDamaged(self.where, TEAM_OWNS % (
            _roles(sorted(r["role"] for r in held)), owner, "; ".join(fixes)))

    def _no_team_triggers(self, db: psycopg.Connection) -> None:
        """Refuses a store where a role that is not an admin may add triggers to its tables
        (docs/decisions.md, "No role but an admin may add a trigger"): the guard's triggers
        hold that role's own writes, not what its trigger does in an admin's."""
        rows = db.execute(_TRIGGERS, (_TABLES,)).fetchall()
        if not rows:
            return
        owner = rows[0]["owner"]
        tables = [r for r in rows if r["table"] is not None]
        defaults = [r for r in rows if r["table"] is None]
        where = (["the store's tables"] * bool(tables) +
                 [TRIGGERS_BY_DEFAULT % owner] * bool(defaults))
        fixes = ["REVOKE TRIGGER ON %s FROM %s CASCADE" % (
            ", ".join(sorted({quoted(r["table"]) for r in tables})), _grantees(tables))
                 ] * bool(tables)
        for schema in sorted({r["schema"] or "" for r in defaults}):
            fixes.append("ALTER DEFAULT PRIVILEGES FOR ROLE %s%s REVOKE TRIGGER ON TABLES "
                         "FROM %s" % (quoted(owner), " IN SCHEMA public" * bool(schema),
                                      _grantees([r for r in defaults
                                                 if (r["schema"] or "") == schema])))
        raise StoreDamaged(self.where, TEAM_TRIGGERS % (
            _roles(sorted({r["grantee"] for r in rows})), ", and to ".join(where), owner,
            " and ".join(fixes)))

    def _as_owner(self, db: psycopg.Connection) -> str:
        """Where the session's role is not the store's owner but may act as it (a member of
        the group role that owns the store, or a superuser), the rest of this transaction runs
        as the owner (SET LOCAL ROLE), so what a migration makes is the owner's too, and the
        next admin in that group can change it: made as the member's own, a later migration
        that replaced it was refused to every other admin. The store's owner: its version
        table's, or before there is one the database's. Returns the role setting as it was
        (``none`` unless the URL set one), for the caller to put back."""
        row = db.execute(_OWNER, ("SET" if db.info.server_version >= 160000 else "MEMBER",)
                         ).fetchone()
        if row["owner"] != row["me"] and row["may"]:
            if not row["creates"]:  # (an owner that may not create there makes nothing)
                raise StoreForbidden(self.where, OWNER_MAY_NOT_CREATE % (
                    row["owner"], self.user, row["owner"], _schema_to(row)))
            # SET LOCAL ROLE, the name a parameter; the server checks the membership again
            db.execute("SELECT set_config('role', %s, true)", (row["owner"],))
        return str(row["was"])

    def announce(self, db: psycopg.Connection, topic: str) -> None:
        db.execute("SELECT fractui_announce(%s)", (topic,))  # the counter, and the NOTIFY

    def lost(self, db: psycopg.Connection) -> bool:
        return bool(db.closed or db.broken)

    def unread_commit(self, err: BaseException) -> bool:
        # 25P03: the session idled inside its transaction past IDLE_IN_WRITE_S (its process
        # frozen or starved) and the server ended it while it waited for the next statement,
        # the COMMIT unread. (Not 57P01: it does not say whether the commit was done first.)
        return isinstance(err, psycopg.Error) and err.sqlstate == "25P03"

    def _named_by(self) -> Optional[str]:
        """Where the role the connection asked for was named, for a refusal to say what to
        change: the URL's user (with where the config gives the URL), else the service's
        (pg_service.conf) where it names another than PGUSER would, else PGUSER; None where
        none names one (libpq's default: the OS user)."""
        given = conninfo_to_dict(self.url)
        if given.get("user"):
            return "the URL (%s)" % self.origin if self.origin else "the store's URL"
        if self.user != (os.environ.get("PGUSER") or os_user()):
            return "service %s in pg_service.conf (named by %s)" % (
                given.get("service") or os.environ.get("PGSERVICE"),
                "the URL" if given.get("service") else "PGSERVICE")
        return "PGUSER" if os.environ.get("PGUSER") else None

    def translate(self, err: BaseException) -> Optional[StoreError]:
        if isinstance(err, UNSENDABLE):
            return refused(self.where, str(err) or type(err).__name__)
        if not isinstance(err, psycopg.Error):
            return None
        state = err.sqlstate or ""
        text = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, psycopg.DataError):  # (22, and text with a NUL, refused by psycopg
            # itself): the primary words, not a DETAIL's values. Not 23: no value a host sends
            # breaks a constraint (there are none but keys fractui's own writes keep), so one
            # broken is fractui's bug or a damaged store, not a host's to be left out for
            return refused(self.where, err.diag.message_primary or text)
        if state == "53300":
            return self._no_slot(text)
        if state.startswith("28"):
            return self._denied(text)
        if state == "3D000":
            return self._no_database(text)
        if state == "42501":  # the server's words, or the guard's (0004), less its CONTEXT
            return StoreForbidden(self.where, "role %s may not do this: %s" % (
                self.user, err.diag.message_primary or text))
        if state == "25006":
            return StoreReadOnly(self.where, "is read-only (a standby server, or "
                                 "default_transaction_read_only set for the database or the "
                                 "role): %s" % text)
        if state.startswith("53"):
            return StoreFull(self.where, ("the server is out of a resource: %s; "
                                          + NOTHING_RECORDED) % text)
        if state == "55P03":  # not the write lock (begin says that): a row or a table
            return RowsLocked(self.where, "what this needs of the store is locked by a session "
                              "outside fractui's turns (%s)" % text)
        if state in ("40001", "40P01"):
            return StoreBusy(self.where, "%s; try again" % text)
        if state in ("42P01", "42703"):
            return StoreDamaged(self.where, "does not hold what this fractui's schema has: %s"
                                % text)
        if state == "0A000" and err.diag.source_function == "RevalidateCachedQuery":
            # (a statement psycopg prepared; the function's name is no language's)
            return StoreDamaged(self.where, "its tables were changed under this fractui "
                                "(PostgreSQL: %s), as a newer fractui's schema upgrade does: "
                                "start this one again (one older than the store's schema "
                                "refuses it then, saying so)" % text)
        if state == "57014":  # our sessions have no statement_timeout: someone cancelled it
            return StoreUnavailable(self.where, ("the server cancelled the statement (an "
                                    "admin's pg_cancel_backend?): %s; "
                                    + NOTHING_RECORDED) % text)
        if state == "57P01":  # reached: it ended this session, and the next call connects anew
            return StoreUnavailable(self.where, "the PostgreSQL server ended this connection "
                                    "(an admin's pg_terminate_backend, or the server shutting "
                                    "down): %s" % (err.diag.message_primary or text))
        if state.startswith("55"):  # (psycopg's OperationalError too): the server is reached
            return StoreUnavailable(self.where, ("the PostgreSQL server cannot do this now: "
                                                 "%s; " + NOTHING_RECORDED) % text)
        if isinstance(err, psycopg.OperationalError) or state.startswith(("08", "57")):
            return StoreUnavailable(self.where, "cannot reach the PostgreSQL server: %s" % text)
        return StoreUnavailable(self.where, text)

    def _refused_at_connect(self, err: psycopg.OperationalError) -> StoreError:
        """Why a connection was not made, where psycopg gives no SQLSTATE (at connect libpq
        keeps only the words, the server's in its lc_messages' language, libpq's own in the
        process's LC_MESSAGES'): told apart by what no language changes (docs/decisions.md,
        "A failed connection is told apart by libpq's facts, not its words"). libpq's own
        flag for a password asked and none given; else a ping (PQping: whether a server
        answered, and whether it said 57P03), a second try, and a ping again. The words only
        choose the advice."""
        text = " ".join(str(err).split()) or type(err).__name__
        if err.pgconn is not None and err.pgconn.needs_password:
            return self._denied(text, PASSWORD_FROM)
        gone = self._not_answering(text)
        if gone is None and self._taken_now():
            return StoreUnavailable(self.where, TAKEN_NOW % text)
        # the second try failed too: a refusal where the server still answers, not where it
        # went away meanwhile (restarted again, under a second after the first)
        gone = gone or self._not_answering(text)
        if gone is not None:
            return gone
        if _LIMIT_WORDS.search(text) or any(w in text for w in _NO_SLOT_WORDS):
            return self._no_slot(text)
        if "database" in text and "does not exist" in text:
            return self._no_database(text)
        return self._denied(text)

    def _not_answering(self, text: str) -> Optional[StoreUnavailable]:
        """What a failed connection (libpq's ``text``) is where the server does not answer a
        ping as one that takes connections (PQping: none there, or 57P03, starting or
        shutting down); None where it does."""
        try:
            answer = _ping(make_conninfo(
                self.url, connect_timeout=PING_TIMEOUT_S,
                application_name=conninfo_to_dict(self.url).get("application_name", "fractui")))
        except subprocess.TimeoutExpired:
            return StoreUnavailable(self.where, "cannot reach the PostgreSQL server: %s (the "
                                    "ping that tells why had no answer in %d s)" % (
                                        text, PING_WAIT_S))
        if answer == pq.Ping.REJECT:
            return StoreUnavailable(self.where, NOT_NOW % text)
        if answer == pq.Ping.NO_ATTEMPT:
            return StoreMisdirected(self.where, "libpq refuses a value of this URL: %s" % text)
        if answer != pq.Ping.OK:
            return self._misdirected(text) or StoreUnavailable(
                self.where, "cannot reach the PostgreSQL server: %s" % text)
        return None

    def _misdirected(self, text: str) -> Optional[StoreMisdirected]:
        """Why no server answered a ping of this URL where that is the URL's doing, not the
        server's: each host it names one the resolver says does not exist (EAI_NONAME, not
        EAI_AGAIN: a resolver not up yet at boot is waited for), or a server that answers a
        ping asking no encryption and not, still, one asking what the URL asks (sslmode,
        gssencmode: the server's TLS off, a certificate file not there or not trusted). Told
        by the resolver's codes and pings, never libpq's words; None otherwise."""
        given = conninfo_to_dict(self.url)
        hosts = (given.get("host") or os.environ.get("PGHOST") or "").split(",")
        if not given.get("hostaddr") and all(_no_such_host(h) for h in hosts):
            return StoreMisdirected(self.where, "the resolver says no host has the name %s: %s"
                                    % (" or ".join(hosts), text))
        asked = {key: value for key, value in (
            ("sslmode", given.get("sslmode") or os.environ.get("PGSSLMODE")),
            ("gssencmode", given.get("gssencmode") or os.environ.get("PGGSSENCMODE")))
            if value in _ENCRYPTION_REQUIRED}
        if not asked:
            return None
        name = given.get("application_name", "fractui")
        try:  # the URL's own ping again last: a server up since its first answers it now
            if _ping(make_conninfo(self.url, connect_timeout=PING_TIMEOUT_S,
                                   application_name=name,
                                   **{key: "prefer" for key in asked})) not in _ANSWERED or \
                    _ping(make_conninfo(self.url, connect_timeout=PING_TIMEOUT_S,
                                        application_name=name)) != pq.Ping.NO_RESPONSE:
                return None
        except subprocess.TimeoutExpired:
            return None
        return StoreMisdirected(self.where, "the server at %s answers, but not with the "
                                "encryption this URL asks for (%s): %s" % (
                                    ",".join(hosts) or "localhost", ", ".join(
                                        "%s=%s" % item for item in asked.items()), text))

    def _taken_now(self) -> bool:
        """Whether the server takes this connection now, whatever target_session_attrs asks:
        the ping's answer says a server is there, not that it refused the role (it may have
        come up since the refusal, a restart's or a failover's; or libpq turned away every
        host as not the kind target_session_attrs asks for, which no SQLSTATE says)."""
        given = conninfo_to_dict(self.url)
        try:
            psycopg.connect(self.url, connect_timeout=PING_TIMEOUT_S, target_session_attrs="any",
                            application_name=given.get("application_name", "fractui")).close()
        except psycopg.Error:
            return False
        return True

    def _no_slot(self, text: str) -> StoreUnavailable:
        """A connection refused for want of a slot (53300): the server's, or by the words the
        role's or the database's CONNECTION LIMIT."""
        limit = _LIMIT_WORDS.search(text)
        if limit is None:
            return StoreUnavailable(self.where, NO_SLOT % text)
        kind, name = limit.groups()
        return StoreUnavailable(self.where, (ROLE_SLOTS if kind == "role" else DATABASE_SLOTS)
                                % (name, text, quoted(name)))

    def _denied(self, text: str, hint: Optional[str] = None) -> StoreDenied:
        """A refusal of the role; ``hint``: what to do, where known by a fact (else by the
        server's words, _auth_hint)."""
        return StoreDenied(self.where, "refuses role %s: %s (%s)" % (
            self.user, text, hint or _auth_hint(text, self.user, self._named_by())))

    def _no_database(self, text: str) -> StoreMissing:
        return StoreMissing(self.where, "has no such database: %s; an admin creates it "
                                "(createdb)" % text)

    def damaged(self, what: str) -> StoreDamaged:
        return StoreDamaged(self.where, "holds what fractui never wrote: %s; restore the "
                            "database from a backup" % what)


# What the server says of a migration whose work a database already has (its version set back
# by hand, a dump half restored): a relation, column, function or object there already, or one
# a later migration dropped not there.
_DONE_ALREADY = ("42P07", "42701", "42723", "42710", "42P01", "42703", "42883", "42704")

# A fractui writer in its turn (on pg_locks l): one holding the write lock, more than a read's
# lock on its table; before 0032, the advisory lock (its key the one parameter).
_WRITER = ("l.granted AND l.locktype = 'relation' AND l.mode <> 'AccessShareLock' AND "
           "l.relation = to_regclass('public.%s')" % WRITE_LOCK_TABLE)
_ADVISORY_WRITER = ("l.granted AND l.locktype = 'advisory' AND l.classid = 0 AND "
                    "l.objid::bigint = %s")

# A session holding a lock (the condition is the caller's, on pg_locks l), the oldest first,
# and the strongest lock first: a read's AccessShareLock blocks only a migration.
_HOLDER = (
    "SELECT a.usename AS role, a.pid, a.application_name AS app, a.state, extract(epoch FROM "
    "clock_timestamp() - coalesce(a.xact_start, a.backend_start))::float8 AS held_s "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE %s "
    "ORDER BY l.mode = 'AccessShareLock', coalesce(a.xact_start, a.backend_start) LIMIT 1")


def _holder_words(row: dict[str, Any]) -> str:
    """A session that holds a lock as an admin finds it, with the way to end it. Another
    role's times and state are hidden from a role that is not a superuser nor in
    pg_read_all_stats (a team member's turn waited for another's): said without them."""
    known = [row["app"] or "no application name"] + [row["state"]] * bool(row["state"]) + (
        [] if row["held_s"] is None else ["for %.0f s" % row["held_s"]])
    return ("role %s (pid %d, %s); if that session hangs, an admin ends it with SELECT "
            "pg_terminate_backend(%d)" % (row["role"], row["pid"], ", ".join(known), row["pid"]))


def quoted(name: str) -> str:
    """A role's or a database's name as a statement must spell it, for an advised statement to
    be pasted as it is: PostgreSQL folds a bare name to lower case and reads no space or quote
    in one, so one naming role "ML Team" bare failed, or named the role ml."""
    return Identifier(name).as_string(None)


def _roles(names: list[str]) -> str:
    """'role a' or 'roles a, b'."""
    return "role%s %s" % ("s" * (len(names) > 1), ", ".join(names))


def _grantees(rows: list[dict[str, Any]]) -> str:
    """The grantees of ``rows`` as a REVOKE names them: PUBLIC bare, a role quoted."""
    return ", ".join(r if r == "PUBLIC" else quoted(r)
                     for r in sorted({row["grantee"] for row in rows}))


def _owners_words(owners: list[dict[str, Any]]) -> str:
    """The owners of the store's objects, the store's own first; where they are several, the
    statements that make it the one (the cluster's first superuser's objects one by one)."""
    names = [r["owner"] for r in owners]
    if len(names) == 1:
        return "role " + names[0]
    others = [r["owner"] for r in owners[1:] if not r["pinned"]]
    fixes = (["REASSIGN OWNED BY %s TO %s" % (", ".join(map(quoted, others)),
                                              quoted(names[0]))] * bool(others) +
             [BOOTSTRAP_OWNS % (quoted(names[0]), r["owner"]) for r in owners[1:]
              if r["pinned"]])
    who = ("a superuser" if any(r["pinned"] for r in owners) else
           REASSIGNS % ", ".join(names))
    return MANY_OWNERS % (", ".join(names), who, ", and ".join(fixes))


_PING = "import sys; from psycopg import pq; print(int(pq.PGconn.ping(sys.stdin.buffer.read())))"
PING_WAIT_S = 60
"""The most the ping's process is waited for: libpq's connect_timeout is each host's and each
address's, and a URL may name several."""


_ENCRYPTION_REQUIRED = ("require", "verify-ca", "verify-full")
"""The sslmode and gssencmode values that fail a connection the server does not encrypt."""
_ANSWERED = (pq.Ping.OK, pq.Ping.REJECT)


def _no_such_host(host: str) -> bool:
    """Whether the resolver says no host has the name ``host`` (a socket's directory, or no
    name, is none it is asked of)."""
    if not host or host.startswith(("/", "@")):
        return False
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as err:
        return err.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
    return False


def _ping(conninfo: str) -> pq.Ping:
    """libpq's PQping of ``conninfo``, in a process of its own: psycopg's C implementations
    (binary, c) call it holding the interpreter's lock, so every other thread of this one (the
    scheduler's, the TUI's) stopped while it waited, and a server reached through this process
    (a port it forwards) could not answer it. The conninfo goes by stdin: a password in it is
    in no process list. It imports nothing from the working directory (``python_code``; nor
    from an empty entry of this one's module path, which PYTHONPATH would make it again): run
    in /tmp, it imported the psycopg another user put there. Where no such process can be had
    (an interpreter this process may not start again: a frozen one, or one that dropped to a
    user who may not read it), it is asked here, this process waiting for it
    (``PING_TIMEOUT_S`` a host): a refusal said as what it is, late, rather than as a server
    not reached."""
    try:
        done = subprocess.run(python_code(sys.executable, _PING), input=conninfo.encode(),
                              capture_output=True, timeout=PING_WAIT_S, env=dict(
                                  os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    except subprocess.TimeoutExpired:
        raise
    except OSError as err:
        log.info("the ping that tells a failed connection apart is asked in this process: "
                 "%s cannot be started (%s)", sys.executable, err)
        return pq.Ping(pq.PGconn.ping(conninfo.encode()))
    said = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0 or not said.isdigit():
        log.info("the ping that tells a failed connection apart is asked in this process: its "
                 "own process ended %d: %s", done.returncode, " ".join(
                     done.stderr.decode(errors="replace").split()[-40:]) or said or "nothing")
        return pq.Ping(pq.PGconn.ping(conninfo.encode()))
    return pq.Ping(int(said))


def _auth_hint(text: str, user: str, named_by: Optional[str]) -> str:
    """What to do about a refusal at connect, by how the server refused; ``named_by``: where
    the role was named (PostgresDialect._named_by)."""
    if "Peer authentication failed" in text:
        return "peer authentication lets an OS user in as the role of its own name only: %s" % (
            "%s names role %s: name no other role there" % (named_by, user) if named_by else
            "name no other role in the URL or PGUSER")
    if "role" in text and "does not exist" in text:
        return "an admin makes it: CREATE ROLE %s LOGIN, and grants it a team role" % quoted(
            user)
    if "authentication failed" in text:
        return PASSWORD_FROM
    return REFUSED_AT_CONNECT


# Who owns the store's tables and functions (a table's indexes, sequences and row type are its
# owner's), read before a migration is tried: a refused statement leaves nothing to ask.
# The store's own owner (its version table's) first; pinned: the cluster's first superuser.
_OWNERS = """
SELECT pg_get_userbyid(o.oid) AS owner, o.oid = 10 AS pinned FROM (
    SELECT relowner AS oid FROM pg_class
    WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')
    UNION SELECT proowner FROM pg_proc WHERE pronamespace = 'public'::regnamespace) o
ORDER BY o.oid IS DISTINCT FROM (SELECT relowner FROM pg_class
                                 WHERE oid = to_regclass('public.fractui_schema')), owner
"""

# The store's owner (its version table's, else the database's), whether the session's role may
# act as it (SET ROLE: from PostgreSQL 16 the membership's SET option, the parameter; before,
# any membership), and whether the owner may create in public, which is the database owner's
# where its owner is pg_database_owner (a database made on 15 or later), else its own owner's.
_OWNER = """
SELECT o.rolname AS owner, current_user AS me, current_setting('role') AS was,
       pg_has_role(session_user, o.oid, %s) AS may,
       has_schema_privilege(o.oid, 'public', 'CREATE') AS creates,
       pg_get_userbyid(n.nspowner) AS schema_owner, current_database() AS db,
       (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database())
           AS db_owner
FROM pg_roles o, pg_namespace n
WHERE n.nspname = 'public' AND o.oid = coalesce(
    (SELECT relowner FROM pg_class WHERE oid = to_regclass('public.fractui_schema')),
    (SELECT datdba FROM pg_database WHERE datname = current_database()))
"""


def _schema_to(row: dict[str, Any]) -> str:
    """Who runs what statement to let the store's owner create in public, by who owns the
    schema."""
    if row["schema_owner"] == "pg_database_owner":
        return DATABASE_TO % (row["db_owner"], row["owner"], quoted(row["db"]),
                              quoted(row["owner"]))
    return SCHEMA_TO % (row["schema_owner"], row["owner"], quoted(row["owner"]))


# The store's owner (as _OWNER) and the roles, not superusers nor admins, in a team's role
# (fractui_team_<team> itself, or a member of one, directly or not) that may act as it: the
# guard holds no owner. The owner is the first row's; none when no team role may. Read from
# the owner down (the few roles that may act as it), not from the teams down: on every open,
# a team member each would be a membership lookup of their own.
_TEAM_OWNS_CTE = """
WITH RECURSIVE owner AS (
    SELECT coalesce(
        (SELECT relowner FROM pg_class WHERE oid = to_regclass('public.fractui_schema')),
        (SELECT datdba FROM pg_database WHERE datname = current_database())) AS oid
), acts(oid) AS (
    SELECT oid FROM owner
    UNION SELECT m.member FROM pg_auth_members m JOIN acts a ON m.roleid = a.oid
), in_team(oid) AS (
    SELECT oid FROM pg_roles WHERE starts_with(rolname, 'fractui_team_')
    UNION SELECT m.member FROM pg_auth_members m JOIN in_team t ON m.roleid = t.oid
), held AS (
    SELECT r.oid, r.rolname FROM pg_roles r
    WHERE r.oid IN (SELECT oid FROM acts) AND NOT r.rolsuper
      AND EXISTS (SELECT FROM pg_roles t WHERE starts_with(t.rolname, 'fractui_team_')
                                           AND pg_has_role(r.oid, t.oid, 'MEMBER'))
      AND NOT EXISTS (SELECT FROM pg_roles a WHERE a.rolname = 'fractui_admin'
                                              AND pg_has_role(r.oid, a.oid, 'MEMBER'))
)
"""
_TEAM_OWNS = _TEAM_OWNS_CTE + """
SELECT h.rolname AS role, pg_get_userbyid(o.oid) AS owner FROM held h, owner o ORDER BY role
"""
# The memberships that let them: a held role's in a role, not itself held, that is the owner
# or acts as it (those of a member in its team's role are not the trouble); where the owner is
# held itself, its own in a team's role or a role in one. Distinct: from PostgreSQL 16 a
# membership granted by two grantors is two rows.
_TEAM_OWNS_BY = _TEAM_OWNS_CTE + """
SELECT DISTINCT pg_get_userbyid(m.member) AS member, pg_get_userbyid(m.roleid) AS grp
FROM pg_auth_members m, owner o
WHERE m.member IN (SELECT oid FROM held) AND (
    (m.roleid NOT IN (SELECT oid FROM held) AND pg_has_role(m.roleid, o.oid, 'MEMBER'))
    OR (m.member = o.oid AND m.roleid IN (SELECT oid FROM in_team)))
ORDER BY grp, member
"""

# The store's own tables: those its migrations make, and its version table. A table of
# another program's in public is no table of the store, whoever may add triggers to it.
_TABLES = sorted({VERSION_TABLE} | {
    name for _, sql in migrations("postgresql")
    for name in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql, re.IGNORECASE)})

# Who may create objects in the schema public by a grant of it (PUBLIC aside: refused on
# its own), but the schema's owner, superusers, admins and the store's owner (as _OWNER) or a
# role that may act as it (a team's among them is refused by _TEAM_OWNS); a member of a
# grantee may as well.
_CREATES = """
WITH owner AS (
    SELECT coalesce(
        (SELECT relowner FROM pg_class WHERE oid = to_regclass('public.fractui_schema')),
        (SELECT datdba FROM pg_database WHERE datname = current_database())) AS oid
)
SELECT DISTINCT r.rolname AS grantee
FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
JOIN pg_roles r ON r.oid = a.grantee
WHERE n.nspname = 'public' AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner
  AND NOT r.rolsuper AND NOT pg_has_role(r.oid, (SELECT oid FROM owner), 'MEMBER')
  AND NOT EXISTS (SELECT FROM pg_roles ad WHERE ad.rolname = 'fractui_admin'
                                            AND pg_has_role(r.oid, ad.oid, 'MEMBER'))
ORDER BY grantee
"""

# Who may add triggers where (grantee: the roles, not superusers, admins nor the table's
# owner; PUBLIC too, grantee 0; a member of one may as well), with the store's owner (as
# _OWNER): "table" a table of the store granted TRIGGER, or "schema" where the owner's default
# privileges (pg_default_acl, ALTER DEFAULT PRIVILEGES ... GRANT) give TRIGGER on the tables it
# makes next, a migration's too: 'public' where they are the schema's, NULL where every
# schema's.
_TRIGGERS = """
WITH owner AS (
    SELECT coalesce(
        (SELECT relowner FROM pg_class WHERE oid = to_regclass('public.fractui_schema')),
        (SELECT datdba FROM pg_database WHERE datname = current_database())) AS oid
), given AS (
    SELECT a.grantee, c.relname::text AS "table", NULL AS schema
    FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
    WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s)
      AND a.privilege_type = 'TRIGGER' AND a.grantee <> c.relowner
    UNION
    SELECT a.grantee, NULL, nullif(d.defaclnamespace, 0)::regnamespace::text
    FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) a
    WHERE d.defaclrole = (SELECT oid FROM owner) AND d.defaclobjtype = 'r'
      AND d.defaclnamespace IN (0, 'public'::regnamespace)
      AND a.privilege_type = 'TRIGGER' AND a.grantee <> d.defaclrole
)
SELECT coalesce(r.rolname, 'PUBLIC') AS grantee, g."table", g.schema,
       pg_get_userbyid((SELECT oid FROM owner)) AS owner
FROM given g LEFT JOIN pg_roles r ON r.oid = g.grantee
WHERE r.oid IS NULL OR NOT r.rolsuper AND NOT EXISTS (
    SELECT FROM pg_roles ad WHERE ad.rolname = 'fractui_admin'
                              AND pg_has_role(r.oid, ad.oid, 'MEMBER'))
ORDER BY grantee, g."table", g.schema
"""


# Every role the session's role is a member of, directly or through others (a superuser's
# implicit membership of every role is not counted: admin says that by itself).
_MEMBER_OF = """
WITH RECURSIVE member_of(oid) AS (
    SELECT oid FROM pg_roles WHERE rolname = session_user
    UNION
    SELECT m.roleid FROM pg_auth_members m JOIN member_of ON m.member = member_of.oid
)
SELECT r.rolname, r.rolsuper, r.rolname = session_user AS me
FROM pg_roles r JOIN member_of ON r.oid = member_of.oid
"""


# The roles that may log in, read the store and are in a team's role or the admins', directly
# or through others: the people the store knows as in a team or an admin (Store.members). (Roles
# are the server's: one of another database's teams, which may not read this one, is not.)
_MEMBERS = """
WITH RECURSIVE in_role(oid) AS (
    SELECT oid FROM pg_roles WHERE starts_with(rolname, %s) OR rolname = %s
    UNION
    SELECT m.member FROM pg_auth_members m JOIN in_role ON m.roleid = in_role.oid
)
SELECT r.rolname FROM pg_roles r JOIN in_role ON r.oid = in_role.oid
WHERE r.rolcanlogin AND has_table_privilege(r.oid, 'public.fractui_schema', 'SELECT')
"""


# Of the roles named, those that may read the store but whose privileges the session's role
# does not have without SET ROLE (a NOINHERIT role, or from PostgreSQL 16 such a membership).
_APART = """
SELECT rolname FROM pg_roles
WHERE rolname = ANY(%s) AND has_table_privilege(oid, 'public.fractui_schema', 'SELECT')
  AND NOT pg_has_role(session_user, oid, 'USAGE')
ORDER BY rolname
"""


def _not_granted(db: psycopg.Connection, user: str, said: str) -> str:
    """Why a role may read none of the store: a role of no team (NOT_GRANTED), a member of an
    admin's or a team's role that may read it but whose rights it does not inherit
    (NOT_INHERITED), or of such a role that was granted nothing (GROUP_NOT_GRANTED, naming
    them)."""
    try:
        names = sorted(r["rolname"] for r in db.execute(_MEMBER_OF).fetchall()
                       if not r["me"] and (r["rolname"] == ADMIN_ROLE or (
                           r["rolname"].startswith(TEAM_ROLE) and r["rolname"] != TEAM_ROLE)))
        apart = [r["rolname"] for r in db.execute(_APART, (names,))] if names else []
    except psycopg.Error:  # the roles are not to be read: the words that need none
        return NOT_GRANTED % (user, said)
    if not names:
        return NOT_GRANTED % (user, said)
    if apart:
        to = (("ALTER ROLE %s INHERIT" % quoted(user)) if db.info.server_version < 160000 else
              "; ".join("GRANT %s TO %s WITH INHERIT TRUE" % (quoted(n), quoted(user))
                        for n in apart))
        return NOT_INHERITED % (user, said, ", ".join(apart), to,
                                urllib.parse.quote("-c role=" + apart[0], safe=""))
    return GROUP_NOT_GRANTED % (user, said, ", ".join(names),
                                ", ".join(quoted(n) for n in names))


class PostgresStore(SqlStore):
    def __init__(self, url: str, make: bool = True, origin: Optional[str] = None):
        self.url = url
        super().__init__(PostgresDialect(url, make, origin))

    def identity(self) -> Identity:
        """The role this connection authenticated as, never one a client claims."""
        def work(db: psycopg.Connection) -> Identity:
            rows = db.execute(_MEMBER_OF).fetchall()
            me = next(r for r in rows if r["me"])
            names = {r["rolname"] for r in rows}
            return Identity(me["rolname"], admin=bool(me["rolsuper"]) or ADMIN_ROLE in names,
                            teams=frozenset(n[len(TEAM_ROLE):] for n in names
                                            if n.startswith(TEAM_ROLE) and n != TEAM_ROLE))
        return self._read(work)

    def members(self) -> frozenset[str]:
        return self._read(lambda db: frozenset(r["rolname"] for r in db.execute(
            _MEMBERS, (TEAM_ROLE, ADMIN_ROLE))))

    def feed(self) -> "PostgresFeed":
        return PostgresFeed(self.dialect)  # type: ignore[arg-type]


class PostgresFeed(Feed):
    """Changes heard by LISTEN on a connection of the feed's own. Notifications sent while it
    was not connected are lost: after a reconnect, ``wait`` says EVERYTHING changed, so the
    reader reads it all again."""

    def __init__(self, dialect: PostgresDialect):
        self.dialect = dialect
        self._db: Optional[psycopg.Connection] = None
        self._listen()

    def _listen(self) -> None:
        try:
            db = self.dialect.connect()
        except psycopg.Error as err:
            raise self.dialect.translate(err) from err  # type: ignore[misc]
        try:
            db.execute("LISTEN %s" % CHANNEL)
        except BaseException as err:  # (Ctrl-C too) its connection is then no one's: closed,
            # else a feed retrying (through an outage, or on a standby, which refuses LISTEN)
            self.dialect.close(db)  # left one open at each try while its error was kept
            if isinstance(err, psycopg.Error):
                raise self.dialect.translate(err) from err  # type: ignore[misc]
            raise
        self._db = db

    def wait(self, timeout_s: float) -> frozenset[str]:
        if self._db is None:  # lost before: what was sent meanwhile is not known
            self._listen()
            return EVERYTHING
        topics: set[str] = set()
        try:
            for note in self._db.notifies(timeout=max(timeout_s, 0.0), stop_after=1):
                topics.add(note.payload)
            if topics:  # what else has arrived is told in the same wake
                for note in self._db.notifies(timeout=0.0):
                    topics.add(note.payload)
        except psycopg.Error:
            self.dialect.close(self._db)
            self._db = None
            self._listen()
            return EVERYTHING
        return frozenset(topics & set(TOPICS))

    def close(self) -> None:
        if self._db is not None:
            self.dialect.close(self._db)
            self._db = None
