"""The store in one SQLite file (WAL, synchronous=FULL): durable before anything is acknowledged.

A file that is there but is not a whole, writable fractui store (empty, truncated, corrupt,
another program's, read-only) is refused with what was found (fractui.store.sqlite_file); only
a path where nothing exists becomes a new store.

What SQLite does its own way for the SQL core (fractui.store.sql): schema changes are numbered
SQL files in migrations/sqlite/, counted in ``PRAGMA user_version``; a write takes the
database lock up front (BEGIN IMMEDIATE); time is this machine's clock (one machine shares the
file, so the lease's expiry needs no other); a change is announced by a counter per topic that
feeds read when ``PRAGMA data_version`` moves.
"""

from __future__ import annotations

import os
import sqlite3
import time
from functools import lru_cache
from typing import Callable, Dict, FrozenSet, Optional, Tuple

from fractui.config import state_home
from fractui.store import sqlite_file
from fractui.store.base import Feed, Identity, StoreDamaged, StoreError, StoreUnavailable
from fractui.store.model import submitter
from fractui.store.sql import (UNSENDABLE, Dialect, SqlStore, migrations, new_store_id,
                               refused, statements)
from fractui.whoami import os_user, uid_named
from fractui.words import count, quoted, shell_line

FEED_POLL_S = 0.02  # how often a feed reads SQLite's data_version (one page-cache read)


def default_store_path() -> str:
    """``$XDG_STATE_HOME/fractui/store.db`` (DESIGN's place), else the platform's state dir."""
    return os.path.join(state_home(), "store.db")


def _migrations() -> list[tuple[int, str]]:
    return migrations("sqlite")


# What every version of the schema has: a file without them is not a fractui store.
_CORE_TABLES = ("meta", "jobs", "stale", "audit", "lease")


def _check_schema(path: str, db: sqlite3.Connection) -> None:
    """Refuses an SQLite file that is not a fractui store, or one a newer fractui wrote,
    before anything is written to it."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = sorted(r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))
    missing = [t for t in _CORE_TABLES if t not in tables]
    if version < 0:
        raise StoreDamaged(path, "is damaged: its schema version is %d, which no fractui "
                           "writes%s" % (version, sqlite_file.MOVE_AWAY))
    if version == 0 or missing:
        has = "its tables: %s" % ", ".join(tables) if tables else "it has no tables"
        raise StoreDamaged(path, "is an SQLite database but not a fractui store (%s)%s" % (
            has, sqlite_file.MOVE_AWAY))
    latest = _migrations()[-1][0]
    if version > latest:
        raise StoreDamaged(path, "was written by a newer fractui (schema version %d; this one "
                           "knows up to %d): use that fractui, or upgrade this one" % (
                               version, latest))


def _migrate(db: sqlite3.Connection, owner: int) -> None:
    """Applies the numbered migrations the store has not had yet (inside the caller's
    transaction). They may ask ``fractui_run_as(submitted_by)``: the host user a job of that
    submitter runs as, None for the store's admin (as ``SqliteStore.identity`` tells one, of
    the store file's ``owner``)."""
    have = db.execute("PRAGMA user_version").fetchone()[0]
    db.create_function("fractui_run_as", 1, _run_as_of(owner), deterministic=True)
    for number, sql in _migrations():
        if number > have:
            for statement in statements(sql):
                db.execute(statement)
            db.execute("PRAGMA user_version = %d" % number)


def _columns(db: sqlite3.Connection) -> Dict[str, FrozenSet[str]]:
    """Each table's columns, as the file's schema says them."""
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {t: frozenset(r[0] for r in db.execute("SELECT name FROM pragma_table_info(?)",
                                                  (t,))) for t in tables}


@lru_cache(maxsize=1)
def _columns_made() -> Dict[str, FrozenSet[str]]:
    """Each table's columns as this fractui's migrations make them."""
    db = sqlite3.connect(":memory:")
    try:
        db.create_function("fractui_run_as", 1, lambda _submitter: None)
        for _, sql in _migrations():
            for statement in statements(sql):
                db.execute(statement)
        return _columns(db)
    finally:
        db.close()


def _check_columns(path: str, db: sqlite3.Connection) -> None:
    """Refuses a store, once migrated, whose tables lack a column fractui made: a byte of its
    schema changed (``u_dated_at``) passes SQLite's check, and every read of that table
    failed on the column it names."""
    have = _columns(db)
    for table, made in sorted(_columns_made().items()):
        if table not in have:
            raise StoreDamaged(path, "is damaged: it has no table %s%s" % (
                table, sqlite_file.MOVE_AWAY))
        lacks = sorted(made - have[table])
        if lacks:
            extra = sorted(have[table] - made)
            raise StoreDamaged(path, "is damaged: its table %s has no column %s%s%s" % (
                table, ", ".join(map(quoted, lacks)), "; it has %s instead" % ", ".join(
                    map(quoted, extra)) if extra else "", sqlite_file.MOVE_AWAY))


def _is_admin(uid: int, owner: int) -> bool:
    """The SQLite store's one rule of who is its admin: root, or the owner of its file —
    whoever can write the file can change anything in it anyway."""
    return uid in (0, owner)


def _run_as_of(owner: int) -> Callable[[Optional[str]], Optional[str]]:
    """``submitted_by`` (user@where) -> the host user its job runs as (intents.submit's rule,
    for a job of before run_as): its submitter, unless that is the admin of a store file of
    ``owner``'s; a name this machine has no user of is no admin."""

    def run_as(submitted_by: Optional[str]) -> Optional[str]:
        if submitted_by is None:
            return None
        user = submitter(submitted_by)
        uid = uid_named(user)
        return None if uid is not None and _is_admin(uid, owner) else user
    return run_as


def _initialise(db: sqlite3.Connection) -> None:
    """A new store's schema and id, on a connection to its still private file."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN IMMEDIATE")
    _migrate(db, os.geteuid())  # (the file is this process's, in a folder of its alone)
    db.execute("INSERT INTO meta (key, value) VALUES ('uid', ?)", (new_store_id(),))
    db.execute("COMMIT")


class SqliteDialect(Dialect):
    def __init__(self, path: str, clock: Callable[[], float], file: os.stat_result):
        self.where = path
        self.clock = clock
        self.file = file  # the store file its open checked (sqlite_file.check_file)

    def connect(self) -> sqlite3.Connection:
        """Checks that the file holds a fractui store before anything is written to it."""
        db = sqlite_file.connect(self.where, self.file)
        try:
            db.row_factory = sqlite3.Row
            found = [r[0] for r in db.execute("PRAGMA quick_check(3)")]
            if found != ["ok"]:
                lines = [x for f in found for x in f.splitlines() if not x.startswith("***")]
                raise StoreDamaged(self.where, "is damaged: SQLite's check finds: %s%s" % (
                    "; ".join(lines), sqlite_file.MOVE_AWAY))
            _check_schema(self.where, db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        except BaseException:
            db.close()
            raise
        return db

    def sql(self, text: str) -> str:
        return text

    def begin(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")

    def commit(self, db: sqlite3.Connection) -> None:
        db.execute("COMMIT")

    def rollback(self, db: sqlite3.Connection) -> None:
        try:
            if db.in_transaction:  # SQLite may have rolled back already (disk full)
                db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def now(self, db: sqlite3.Connection) -> float:
        return self.clock()

    def migrate(self, db: sqlite3.Connection) -> None:
        """The migrations the store's version says it lacks; one that finds its work done or
        its tables otherwise (a version set back by hand, a file half restored) says that."""
        have = db.execute("PRAGMA user_version").fetchone()[0]
        try:
            _migrate(db, sqlite_file.owner(self.where, self.file))
            _check_columns(self.where, db)
        except sqlite3.Error as err:
            if type(sqlite_file.translate(self.where, err)) is not StoreUnavailable:
                raise  # full, read-only, busy or damaged: said as such
            raise self.damaged("its schema version is %d, but its tables are not that "
                               "version's: SQLite says %r as it migrates it" % (have, str(err))
                               ) from err

    def announce(self, db: sqlite3.Connection, topic: str) -> None:
        db.execute("UPDATE changes SET version = version + 1 WHERE topic = ?", (topic,))

    def lost(self, db: sqlite3.Connection) -> bool:
        return False  # a file: nothing to reconnect to

    def translate(self, err: BaseException) -> Optional[StoreError]:
        if isinstance(err, (sqlite3.DataError, *UNSENDABLE)):  # (not IntegrityError: as
            # PostgreSQL's class 23, fractui's bug or a damaged store, never a host's value)
            return refused(self.where, str(err) or type(err).__name__)
        if isinstance(err, (sqlite3.Error, OSError, UnicodeDecodeError)):
            return sqlite_file.translate(self.where, err)
        return None

    def damaged(self, what: str) -> StoreDamaged:
        return StoreDamaged(self.where, "is damaged: %s%s" % (what, sqlite_file.MOVE_AWAY))

    def no_id(self, db: sqlite3.Connection) -> StoreDamaged:
        """Said with its jobs: one that holds none, and nothing a store in use keeps (an
        audit entry, a cordon, a scheduler's lease), is most likely a store a fractui of
        before 2026-12-07 was stopped in making, between its file and its first open, which
        gave the id then; moving it away for a new one loses nothing. One that holds them
        is no such store: a new one would not have its cordons (a drained host's jobs
        placed on it again)."""
        jobs = int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])
        if jobs:
            return self.damaged("it has no store id (meta.uid), which the keys of its %s on "
                                "the hosts hold" % count(jobs, "job"))
        if any(db.execute("SELECT 1 FROM %s LIMIT 1" % table).fetchone()
               for table in ("audit", "cordons", "lease")):
            return self.damaged("it has no store id (meta.uid); it holds no job, but what a "
                                "store in use keeps (its audit, cordons or scheduler's lease), "
                                "which a new store would not have")
        return StoreDamaged(self.where, "is unfinished: it has no store id (meta.uid) and "
                            "holds no jobs, as a fractui of before 2026-12-07 left a store it "
                            "was stopped in making (the id was given at its first open); "
                            "fractui gives none after, but moving it away loses no job, and "
                            "the next fractui makes a new store in its place: %s" % shell_line(
                                ["mv", "-T", self.where, self.where + ".unfinished"]))


class SqliteStore(SqlStore):
    def __init__(self, path: str, clock: Callable[[], float] = time.time):
        self.path = os.path.abspath(path)
        self.clock = clock
        sqlite_file.check_name(self.path)
        sqlite_file.refuse_exposed(self.path)  # before one is made there, or opened
        if sqlite_file.absent(self.path):  # only where nothing is does a store begin
            sqlite_file.create(self.path, _initialise)
            sqlite_file.refuse_exposed(self.path)  # as made, whoever made its folders
        self._held: Optional[Tuple[int, int]] = None
        file = sqlite_file.check_file(self.path)
        held = sqlite_file.holding(file)
        try:
            super().__init__(SqliteDialect(self.path, clock, file))
        except BaseException:  # a store refused as it opens holds nothing
            sqlite_file.released(held)
            raise
        self._held = held
        self._file = file

    def close(self) -> None:
        super().close()
        held, self._held = self._held, None
        if held is not None:
            sqlite_file.released(held)

    def identity(self) -> Identity:
        """The process's OS user (by its uid, not $USER); an admin if it owns the store file
        (or is root): whoever can write the file can change anything in it anyway."""
        owner = sqlite_file.owner(self.path, self._file)
        return Identity(os_user(), admin=_is_admin(os.geteuid(), owner))

    def hand_writers(self) -> Optional[str]:
        """Anyone but root and the file's owner who can write the file, or its directory (to
        replace the file, or put a -wal beside it): SQLite cannot tell who wrote a row, so a
        store shared through a group lets each of them write any job (file modes and owners,
        not ACLs, are read)."""
        try:
            return sqlite_file.others_who_write(self.path)
        except OSError as err:
            raise sqlite_file.translate(self.path, err) from err

    def feed(self) -> "SqliteFeed":
        return SqliteFeed(self.path, self._file)


class SqliteFeed(Feed):
    """Changes seen through SQLite's ``PRAGMA data_version``, which moves whenever another
    connection (another process, or this process's store) commits; the ``changes`` counters
    then tell which topics moved. A connection of the feed's own, which never writes."""

    def __init__(self, path: str, file: os.stat_result):
        self.path = path
        try:
            self._db = sqlite_file.connect(path, file)
            self._version = self._data_version()
            self._seen = self._counters()
        except sqlite3.Error as err:
            raise sqlite_file.translate(path, err) from err

    def _data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _counters(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT topic, version FROM changes").fetchall())

    def wait(self, timeout_s: float) -> frozenset[str]:
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                version = self._data_version()
                if version != self._version:
                    self._version = version
                    now = self._counters()
                    changed = frozenset(t for t, v in now.items() if self._seen.get(t) != v)
                    self._seen = now
                    if changed:
                        return changed
                left = deadline - time.monotonic()
                if left <= 0:
                    return frozenset()
                time.sleep(min(FEED_POLL_S, left))
        except sqlite3.Error as err:
            raise sqlite_file.translate(self.path, err) from err

    def close(self) -> None:
        self._db.close()
