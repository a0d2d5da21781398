"""The store in one SQLite file (WAL, synchronous=FULL): durable before anything is acknowledged.

A file that is there but is not a whole, writable fractui store (empty, truncated, corrupt,
another program's, read-only) is refused with what was found (fractui.store.sqlite_file); only
a path where nothing exists becomes a new store.

Schema changes are numbered SQL files in migrations/, applied in order and counted in
``PRAGMA user_version``. Writes take the database lock up front (BEGIN IMMEDIATE), so a
compare-and-set never races another process between its read and its write.
"""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from importlib import resources
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from fractui.config import state_home
from fractui.store import sqlite_file
from fractui.store.base import (HOSTS, JOBS, LEASE as LEASE_TOPIC, LOGS, Feed, Identity,
                                JobNotFound, StateConflict, Store, StoreDamaged)
from fractui.store.model import PENDING, AuditEntry, Job, LogTail, Refusal, Slot, StaleCopy

LEASE = "scheduler"
FEED_POLL_S = 0.02  # how often a feed reads SQLite's data_version (one page-cache read)
_SLOT_COLUMNS = ("host", "gpus", "profile", "start", "memory_mib", "charge", "layout_version")


def default_store_path() -> str:
    """``$XDG_STATE_HOME/fractui/store.db`` (DESIGN's place), else the platform's state dir."""
    return os.path.join(state_home(), "store.db")


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("fractui.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


# What every version of the schema has: a file without them is not a fractui store.
_CORE_TABLES = ("meta", "jobs", "stale", "audit", "lease")


def _check_schema(path: str, db: sqlite3.Connection) -> None:
    """Refuses an SQLite file that is not a fractui store, or one a newer fractui wrote,
    before anything is written to it."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = sorted(r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))
    missing = [t for t in _CORE_TABLES if t not in tables]
    if version == 0 or missing:
        has = "its tables: %s" % ", ".join(tables) if tables else "it has no tables"
        raise StoreDamaged(path, "is an SQLite database but not a fractui store (%s)%s" % (
            has, sqlite_file.MOVE_AWAY))
    latest = _migrations()[-1][0]
    if version > latest:
        raise StoreDamaged(path, "was written by a newer fractui (schema version %d; this one "
                           "knows up to %d): use that fractui, or upgrade this one" % (
                               version, latest))


def _migrate(db: sqlite3.Connection) -> None:
    """Applies the numbered migrations the store has not had yet (inside the caller's
    transaction) and gives a new store its uid."""
    have = db.execute("PRAGMA user_version").fetchone()[0]
    for number, sql in _migrations():
        if number > have:
            for statement in sql.split(";\n"):
                if statement.strip():
                    db.execute(statement)
            db.execute("PRAGMA user_version = %d" % number)
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('uid', ?)",
               (uuid.uuid4().hex[:8],))


def _initialise(db: sqlite3.Connection) -> None:
    """A new store's schema and uid, on a connection to its still private file."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN IMMEDIATE")
    _migrate(db)
    db.execute("COMMIT")


class SqliteStore(Store):
    def __init__(self, path: str, clock: Callable[[], float] = time.time):
        self.path = os.path.abspath(path)
        self.clock = clock
        self._lock = threading.Lock()  # one connection, used from the caller's threads in turn
        if not os.path.lexists(self.path):  # only where nothing is does a store begin
            sqlite_file.create(self.path, _initialise)
        sqlite_file.check_file(self.path)
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as err:
            raise sqlite_file.translate(self.path, err) from err
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        """Checks that the file holds a fractui store, brings its schema up to date and reads
        its uid; refuses anything else without writing to it."""
        with self._guard():
            self._db.row_factory = sqlite3.Row
            found = [r[0] for r in self._db.execute("PRAGMA quick_check(3)")]
            if found != ["ok"]:
                lines = [x for f in found for x in f.splitlines() if not x.startswith("***")]
                raise StoreDamaged(self.path, "is damaged: SQLite's check finds: %s%s" % (
                    "; ".join(lines), sqlite_file.MOVE_AWAY))
            _check_schema(self.path, self._db)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        with self._write() as db:
            _migrate(db)
            row = db.execute("SELECT value FROM meta WHERE key = 'uid'").fetchone()
        if row is None:
            raise StoreDamaged(self.path, "has no store id (meta.uid): it is damaged%s" % (
                sqlite_file.MOVE_AWAY))
        self.uid = row[0]

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """The driver's errors as the store's own (fractui.store.base.StoreError)."""
        try:
            yield
        except sqlite3.Error as err:
            raise sqlite_file.translate(self.path, err) from err
        except _Unreadable as err:
            raise StoreDamaged(self.path, "is damaged: %s%s" % (err, sqlite_file.MOVE_AWAY)) \
                from err

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already (disk full)
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._guard():
            yield self._db

    # -- jobs --

    def submit(self, queue: str, team: Optional[str], name: str, argv: Sequence[str],
               request: dict[str, Any], actor: str, cwd: Optional[str] = None) -> Job:
        now = self.clock()
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO jobs (queue, team, name, argv, cwd, request, state, submitted_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (queue, team, name, json.dumps(list(argv)), cwd, json.dumps(request), PENDING,
                 now, now))
            job_id = int(cur.lastrowid)
            self._audit(db, now, actor, "submit", job_id, "submitted to queue %s" % queue,
                        {"team": team, "argv": list(argv)})
            _bump(db, JOBS)
            return self._get(db, job_id)

    def get(self, job_id: int) -> Job:
        with self._read() as db:
            return self._get(db, job_id)

    def jobs(self, states: Optional[Iterable[str]] = None, queue: Optional[str] = None,
             limit: Optional[int] = None) -> list[Job]:
        where, args = [], []  # type: list[str], list[Any]
        if states is not None:
            states = list(states)
            where.append("state IN (%s)" % ",".join("?" * len(states)))
            args += states
        if queue is not None:
            where.append("queue = ?")
            args.append(queue)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        if limit is not None:
            sql = "SELECT * FROM (%s ORDER BY id DESC LIMIT %d)" % (sql, int(limit))
        with self._read() as db:
            return [_job(row) for row in db.execute(sql + " ORDER BY id", args)]

    def change(self, job_id: int, expect: Iterable[str], actor: Optional[str] = None,
               why: Optional[str] = None, action: Optional[str] = None,
               **fields: Any) -> Job:
        now = self.clock()
        with self._write() as db:
            self._expect(db, job_id, expect)
            self._set(db, job_id, now, fields)
            _bump(db, JOBS)
            if action is not None:
                self._audit(db, now, actor or "fractui", action, job_id, why or action,
                            _detail(fields))
            return self._get(db, job_id)

    def requeue(self, job_id: int, expect: Iterable[str], actor: str, why: str,
                stale_on: Optional[str] = None, refusal: Optional[Refusal] = None) -> Job:
        now = self.clock()
        with self._write() as db:
            job = self._expect(db, job_id, expect)
            if stale_on is not None:
                db.execute("INSERT OR IGNORE INTO stale (host, key, job, since) "
                           "VALUES (?, ?, ?, ?)", (stale_on, job.key(self.uid), job_id, now))
            fields: dict[str, Any] = {
                "state": PENDING, "reason": why, "attempt": job.attempt + 1, "slot": None,
                "agent_job": None, "preemptible": False, "manual": False, "started_at": None,
                "stop_intent": None, "exit_code": None}
            detail: dict[str, Any] = {"attempt": job.attempt + 1, "stale_on": stale_on}
            if refusal is not None:
                fields["refusals"] = job.refusals + (refusal,)
                detail["refusal"] = refusal.record()
            self._set(db, job_id, now, fields)
            self._audit(db, now, actor, "requeued", job_id, why, detail)
            _bump(db, JOBS)
            return self._get(db, job_id)

    def stale(self, host: Optional[str] = None) -> list[StaleCopy]:
        sql, args = "SELECT * FROM stale", ()  # type: str, tuple
        if host is not None:
            sql, args = sql + " WHERE host = ?", (host,)
        with self._read() as db:
            return [StaleCopy(r["host"], r["key"], r["job"], r["since"])
                    for r in db.execute(sql + " ORDER BY since", args)]

    def drop_stale(self, host: str, key: str, actor: str, why: str) -> None:
        with self._write() as db:
            row = db.execute("SELECT job FROM stale WHERE host = ? AND key = ?",
                             (host, key)).fetchone()
            if row is None:
                return
            db.execute("DELETE FROM stale WHERE host = ? AND key = ?", (host, key))
            _bump(db, JOBS)
            self._audit(db, self.clock(), actor, "stop-stale", row["job"], why,
                        {"host": host, "key": key})

    # -- audit --

    def audit(self, actor: str, action: str, job: Optional[int], why: str,
              detail: Optional[dict[str, Any]] = None) -> None:
        with self._write() as db:
            self._audit(db, self.clock(), actor, action, job, why, detail or {})

    def audit_log(self, job: Optional[int] = None, limit: int = 100) -> list[AuditEntry]:
        sql, args = "SELECT * FROM audit", ()  # type: str, tuple
        if job is not None:
            sql, args = sql + " WHERE job = ?", (job,)
        with self._read() as db:
            rows = db.execute("SELECT * FROM (%s ORDER BY id DESC LIMIT %d) ORDER BY id"
                              % (sql, int(limit)), args).fetchall()
            return [AuditEntry(r["id"], r["time"], r["actor"], r["action"], r["job"], r["why"],
                               _decoded("audit entry %s" % r["id"], r["detail"] or "{}"))
                    for r in rows]

    # -- inventory --

    def record_inventory(self, host: str, facts: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO inventory (host, facts, seen_at) VALUES (?, ?, ?)",
                       (host, json.dumps(facts, sort_keys=True), self.clock()))
            _bump(db, HOSTS)

    def inventory(self) -> dict[str, dict[str, Any]]:
        with self._read() as db:
            return {r["host"]: _decoded("the inventory of %s" % r["host"], r["facts"])
                    for r in db.execute("SELECT host, facts FROM inventory")}

    # -- job output, for users who reach only the store --

    def ask_log(self, job_id: int, actor: str) -> None:
        with self._write() as db:
            self._get(db, job_id)
            db.execute("INSERT OR REPLACE INTO log_requests (job, actor, asked_at) "
                       "VALUES (?, ?, ?)", (job_id, actor, self.clock()))
            _bump(db, LOGS)

    def log_requests(self) -> list[int]:
        with self._read() as db:
            return [r[0] for r in db.execute("SELECT job FROM log_requests ORDER BY asked_at")]

    def keep_log(self, job_id: int, text: str, complete: bool) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO log_tails (job, text, complete, kept_at) "
                       "VALUES (?, ?, ?, ?)", (job_id, text, int(complete), self.clock()))
            db.execute("DELETE FROM log_requests WHERE job = ?", (job_id,))
            _bump(db, LOGS)

    def log_tail(self, job_id: int) -> Optional[LogTail]:
        with self._read() as db:
            row = db.execute("SELECT * FROM log_tails WHERE job = ?", (job_id,)).fetchone()
        return None if row is None else LogTail(job_id, row["text"], bool(row["complete"]),
                                                row["kept_at"])

    # -- the scheduler lease --

    def acquire_lease(self, holder: str, ttl_s: float) -> bool:
        now = self.clock()
        with self._write() as db:
            row = db.execute("SELECT holder, expires_at FROM lease WHERE name = ?",
                             (LEASE,)).fetchone()
            if row is not None and row["holder"] != holder and row["expires_at"] > now:
                return False
            db.execute("INSERT OR REPLACE INTO lease (name, holder, expires_at) "
                       "VALUES (?, ?, ?)", (LEASE, holder, now + ttl_s))
            if row is None or row["holder"] != holder:
                self._audit(db, now, holder, "lease", None, "took the scheduler lease" + (
                    " from %s, expired" % row["holder"] if row is not None else ""), {})
                _bump(db, LEASE_TOPIC)
            return True

    def release_lease(self, holder: str) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM lease WHERE name = ? AND holder = ?",
                          (LEASE, holder)).rowcount:
                _bump(db, LEASE_TOPIC)

    def lease_holder(self) -> Optional[tuple[str, float]]:
        with self._read() as db:
            row = db.execute("SELECT holder, expires_at FROM lease WHERE name = ?",
                             (LEASE,)).fetchone()
        if row is None or row["expires_at"] <= self.clock():
            return None
        return row["holder"], row["expires_at"]

    def identity(self) -> Identity:
        """The process's OS user (by its uid, not $USER); an admin if it owns the store file
        (or is root): whoever can write the file can change anything in it anyway."""
        uid = os.geteuid()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = "uid %d" % uid
        try:
            owner = os.stat(self.path).st_uid
        except OSError as err:
            raise sqlite_file.translate(self.path, err) from err
        return Identity(user, admin=uid in (0, owner))

    def feed(self) -> "SqliteFeed":
        return SqliteFeed(self.path)

    def close(self) -> None:
        with self._lock, self._guard():
            self._db.close()

    # -- inside a transaction --

    def _get(self, db: sqlite3.Connection, job_id: int) -> Job:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _job(row)

    def _expect(self, db: sqlite3.Connection, job_id: int, expect: Iterable[str]) -> Job:
        job = self._get(db, job_id)
        expect = tuple(expect)
        if job.state not in expect:
            raise StateConflict("job %d is %s, not %s" % (job_id, job.state,
                                                         " or ".join(expect)))
        return job

    @staticmethod
    def _set(db: sqlite3.Connection, job_id: int, now: float, fields: dict[str, Any]) -> None:
        columns = {"updated_at": now}
        for name, value in fields.items():
            if name == "slot":
                slot: Optional[Slot] = value
                columns.update(dict(zip(_SLOT_COLUMNS, (
                    slot.host, json.dumps(list(slot.gpus)), slot.profile, slot.start,
                    slot.memory_mib, slot.charge, slot.layout_version) if slot else
                    (None,) * 5 + (0.0, None))))
            elif name in ("preemptible", "manual"):
                columns[name] = int(bool(value))
            elif name == "refusals":
                columns[name] = json.dumps([r.record() for r in value])
            else:
                columns[name] = value
        db.execute("UPDATE jobs SET %s WHERE id = ?" % ", ".join("%s = ?" % c for c in columns),
                   list(columns.values()) + [job_id])

    @staticmethod
    def _audit(db: sqlite3.Connection, now: float, actor: str, action: str,
               job: Optional[int], why: str, detail: dict[str, Any]) -> None:
        db.execute("INSERT INTO audit (time, actor, action, job, why, detail) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (now, actor, action, job, why,
                                                 json.dumps(detail, sort_keys=True)))


class SqliteFeed(Feed):
    """Changes seen through SQLite's ``PRAGMA data_version``, which moves whenever another
    connection (another process, or this process's store) commits; the ``changes`` counters
    then tell which topics moved. A connection of the feed's own, which never writes."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
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


def _bump(db: sqlite3.Connection, topic: str) -> None:
    """Announces a change of ``topic`` to every feed, in the caller's transaction."""
    db.execute("UPDATE changes SET version = version + 1 WHERE topic = ?", (topic,))


def _detail(fields: dict[str, Any]) -> dict[str, Any]:
    """Changed fields as JSON-able values, for the audit trail."""
    out = {}
    for name, value in fields.items():
        if name == "refusals":
            value = [r.record() for r in value]
        out[name] = value.__dict__ if isinstance(value, Slot) else value
    if isinstance(out.get("slot"), dict):
        out["slot"] = dict(out["slot"], gpus=list(out["slot"]["gpus"]))
    return out


class _Unreadable(Exception):
    """A row SQLite returned whole, holding values fractui never wrote (a damaged page)."""


def _decoded(what: str, text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as err:
        raise _Unreadable("%s holds %r, not JSON" % (what, text)) from err


def _job(row: sqlite3.Row) -> Job:
    what = "job %s" % row["id"]
    try:
        slot = None
        if row["host"] is not None:
            slot = Slot(row["host"], tuple(_decoded(what, row["gpus"] or "[]")), row["profile"],
                        row["start"], row["memory_mib"], row["charge"], row["layout_version"])
        return Job(id=row["id"], queue=row["queue"], team=row["team"], name=row["name"],
                   argv=tuple(_decoded(what, row["argv"])),
                   request=_decoded(what, row["request"]), state=row["state"],
                   submitted_at=row["submitted_at"], updated_at=row["updated_at"],
                   cwd=row["cwd"], reason=row["reason"], attempt=row["attempt"],
                   started_at=row["started_at"], ended_at=row["ended_at"], slot=slot,
                   preemptible=bool(row["preemptible"]), manual=bool(row["manual"]),
                   agent_job=row["agent_job"], exit_code=row["exit_code"],
                   stop_intent=row["stop_intent"],
                   refusals=tuple(Refusal(**r) for r in _decoded(what, row["refusals"])))
    except TypeError as err:  # JSON of another shape than fractui writes
        raise _Unreadable("%s is not as fractui wrote it (%s)" % (what, err)) from err


def open_store(path: Optional[str] = None) -> SqliteStore:
    return SqliteStore(path or default_store_path())
