"""A real PostgreSQL server for the tests: initdb and pg_ctl from the distribution's packages
(Debian's `postgresql`), run as the unprivileged `postgres` OS user (initdb refuses root) in a
temporary directory, listening on a free loopback port with trust auth for loopback. Each test
gets a database of its own."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Iterator, List, Optional

import psycopg

OS_USER = "postgres"


def bin_dir() -> Optional[str]:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/<ver>/bin), or
    whatever initdb is on the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One server for the session: ``url(db)`` is a URL without a password (trust auth)."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.port = _free_port()
        self.root = tempfile.mkdtemp(prefix="fractui-pg-")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "log")
        self.sockets = os.path.join(self.root, "run")
        os.mkdir(self.sockets)
        self.host = "127.0.0.1"  # where the harness connects as the superuser
        owner = pwd.getpwnam(OS_USER) if os.geteuid() == 0 else None
        if owner is not None:
            for path in (self.root, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._as_owner([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write("listen_addresses = '127.0.0.1'\nport = %d\n"
                       "unix_socket_directories = '%s'\nfsync = off\n"
                       "max_connections = 200\n" % (self.port, self.sockets))
        self.start()
        # what a server before 15 needs done (fractui refuses a public schema every role may
        # create in): the databases the tests make are copies of template1
        self.sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", db="template1")

    def _as_owner(self, argv: List[str]) -> None:
        prefix = ["sudo", "-n", "-u", OS_USER] if os.geteuid() == 0 else []
        subprocess.run(prefix + argv, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, cwd="/", timeout=120)

    def pg_ctl(self, *args: str) -> None:
        self._as_owner([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log,
                        "-w", "-t", "60", *args])

    def start(self) -> None:
        self.pg_ctl("start")

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast")

    def wrap_around_to(self, xid: int, databases: List[str]) -> None:
        """Restart the server 2^32 transactions on, its next transaction numbered ``xid`` in
        its low 32 bits (pg_resetwal: the next epoch, at ``xid``): what a server that has run
        that many since sees, each row of ``databases`` and of template1 and postgres frozen
        first (VACUUM FREEZE, which keeps a row's xmin) so that none reads as written later.
        Autovacuum is turned off for good, so that no transaction of its own takes ``xid``."""
        self.sql("ALTER SYSTEM SET autovacuum = off")
        self.pg_ctl("reload")
        for db in ["postgres", "template1", *databases]:
            self.sql("VACUUM FREEZE", db=db)
        epoch = self.sql("SELECT txid_current() >> 32")[0][0]
        self.stop()
        self._as_owner([os.path.join(self.bin, "pg_resetwal"), "-e", str(epoch + 1),
                        "-x", str(xid), self.data])
        self.start()

    def run_to(self, xid: int) -> None:
        """Run on to ``xid``, the next transaction's number (epoch 0, past the current): what a
        server that has run that many since sees. pg_resetwal to the page of the commit log
        that holds it (its first transaction, whose page PostgreSQL makes anew), then one
        transaction each up to it. Autovacuum is turned off for good, so that none takes it."""
        self.sql("ALTER SYSTEM SET autovacuum = off")
        self.stop()
        self._as_owner([os.path.join(self.bin, "pg_resetwal"), "-x",
                        str(xid - xid % 32768), self.data])
        self.start()
        while self.sql("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
                       )[0][0] < xid:
            self.sql("SELECT txid_current()")

    def restore(self, other: "PgServer", db: str) -> None:
        """``db`` of ``other`` restored here as an admin does it, pg_dump's SQL run by psql,
        with the roles of ``other`` (pg_dumpall's globals: this server's own postgres role is
        said to exist already, and kept)."""
        def dump(*argv: str) -> bytes:
            return subprocess.run([os.path.join(other.bin, argv[0]), "-h", other.host, "-p",
                                   str(other.port), "-U", "postgres", *argv[1:]],
                                  check=True, capture_output=True, timeout=120).stdout
        psql = [os.path.join(self.bin, "psql"), "-h", self.host, "-p", str(self.port), "-U",
                "postgres", "-q", "-X"]
        subprocess.run(psql + ["-d", "postgres"], input=dump("pg_dumpall", "--globals-only"),
                       check=True, capture_output=True, timeout=120)
        self.sql("CREATE DATABASE %s" % db)
        subprocess.run(psql + ["-v", "ON_ERROR_STOP=1", "-d", db], input=dump("pg_dump", db),
                       check=True, capture_output=True, timeout=120)

    def refuse_at_reconnect(self, role: str) -> None:
        """``role`` may no longer log in, and its sessions are ended: a store of its finds its
        connection lost at its next call, and the server refuses the new one."""
        self.sql("ALTER ROLE %s NOLOGIN" % role)
        self.sql("SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity "
                 "WHERE usename = '%s'" % role)

    def connect(self, db: str) -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, user="postgres", dbname=db,
                               autocommit=True)

    def url(self, db: str, user: str = "postgres") -> str:
        return "postgresql://%s@127.0.0.1:%d/%s" % (user, self.port, db)

    def peer_url(self, db: str) -> str:
        """A URL naming no role: libpq takes the OS user's name, and peer authentication
        checks it against the socket's peer."""
        return "postgresql:///%s?host=%s&port=%d" % (db, self.sockets, self.port)

    def peer_only(self) -> None:
        """Peer authentication over the unix socket, and nothing else (no trust, no TCP): each
        OS user connects as the role of its own name and no other. The harness itself (root,
        or the postgres OS user) connects as the superuser through an ident map. The socket's
        directory is opened to every user; the data directory stays 0700."""
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as hba:
            hba.write("local all postgres peer map=harness\nlocal all all peer\n")
        with open(os.path.join(self.data, "pg_ident.conf"), "w") as ident:
            ident.write("harness postgres postgres\nharness root postgres\n")
        os.chmod(self.root, 0o755)
        self.pg_ctl("reload")
        self.host = self.sockets
        for _ in range(600):  # the server reads the files on SIGHUP: until loopback is refused
            try:
                psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                dbname="postgres", connect_timeout=5).close()
            except psycopg.OperationalError:
                return
            time.sleep(0.05)
        raise RuntimeError("the server still trusts loopback after a reload; see %s" % self.log)

    def admin_role(self) -> None:
        """The role fractui_admin, made once for the server (roles are the cluster's)."""
        self.sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                 "'fractui_admin') THEN CREATE ROLE fractui_admin; END IF; END $$")

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.sql("CREATE DATABASE %s" % name)
        return name

    def sql(self, statement: str, db: str = "postgres") -> List[tuple]:
        """As the superuser, on a connection of its own (the server may have been restarted
        since the last); roles are the cluster's, so any database will do for them."""
        with self.connect(db) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    @contextlib.contextmanager
    def standby(self) -> Iterator[int]:
        """A hot standby of this server (pg_basebackup, streaming from it), on a port of its
        own, yielded: read-only, as a failover pair's replica a store URL may reach."""
        data = os.path.join(self.root, "standby-%s" % uuid.uuid4().hex[:8])
        self._as_owner([os.path.join(self.bin, "pg_basebackup"), "-D", data, "-R", "-c",
                        "fast", "-X", "stream", "-h", self.host, "-p", str(self.port), "-U",
                        "postgres"])  # (-c fast: a checkpoint now, not spread over minutes)
        port = _free_port()
        with open(os.path.join(data, "postgresql.conf"), "a") as conf:
            conf.write("port = %d\nhot_standby = on\n" % port)
        ctl = [os.path.join(self.bin, "pg_ctl"), "-D", data, "-l", data + ".log", "-w", "-t",
               "60"]
        self._as_owner(ctl + ["start"])
        try:
            yield port
        finally:
            self._as_owner(ctl + ["stop", "-m", "immediate"])
            shutil.rmtree(data, ignore_errors=True)

    def close(self) -> None:
        try:
            self.pg_ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
