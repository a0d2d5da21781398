"""The host's job table: sqlite3 in WAL mode, every change committed (fsync'd) before it is
acknowledged, so an agent crash or upgrade loses no job."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Set

from remote_agent.daemon.trust import check_private
from remote_agent.jobs.procs import JobProcs
from remote_agent.room import room_read_after
from remote_agent.text import said

ACTIVE = ("starting", "running")
FINISHED = ("exited", "killed", "lost")

# Numbered migrations: the table's version is SQLite's user_version, and a table of any older
# version is brought up to date in place, one step at a time, each step in one transaction.
# Version 1 is the table as first released (an agent before migrations left user_version 0 with
# this table in place, hence IF NOT EXISTS).
MIGRATIONS: List[List[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL UNIQUE,
            fingerprint TEXT NOT NULL,
            name TEXT NOT NULL,
            argv TEXT NOT NULL,
            env TEXT NOT NULL,
            cwd TEXT,
            gpus TEXT NOT NULL,
            gpu_uuids TEXT NOT NULL,
            instance TEXT,
            mig TEXT,
            memory_mib INTEGER,
            caps TEXT NOT NULL DEFAULT '[]',
            cap_notes TEXT NOT NULL DEFAULT '[]',
            state TEXT NOT NULL,
            exit_code INTEGER,
            reason TEXT,
            stop_reason TEXT,
            pid INTEGER,
            created_at REAL NOT NULL,
            started_at REAL,
            ended_at REAL
        )""",
        "CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state)",
    ],
    [  # 2: jobs found by cgroup or session after their shim died; durable stop deadlines
        "ALTER TABLE jobs ADD COLUMN run_as TEXT",
        "ALTER TABLE jobs ADD COLUMN cgroup TEXT",
        "ALTER TABLE jobs ADD COLUMN start_ticks INTEGER",
        "ALTER TABLE jobs ADD COLUMN kill_at REAL",
    ],
    [  # 3: what each job used of its GPUs (remote_agent/jobs/usage.py), as JSON
        "ALTER TABLE jobs ADD COLUMN usage TEXT",
    ],
    [  # 4: container jobs (remote_agent/jobs/runtime/)
        "ALTER TABLE jobs ADD COLUMN runtime TEXT NOT NULL DEFAULT 'process'",
        "ALTER TABLE jobs ADD COLUMN image TEXT",
        "ALTER TABLE jobs ADD COLUMN container TEXT",
        "ALTER TABLE jobs ADD COLUMN container_cgroup TEXT",
    ],
    [  # 5: a stop's deadline by the monotonic clock, not the wall clock (which may be set)
        "UPDATE jobs SET kill_at = kill_at - wall_now() + monotonic_now() "
        "WHERE kill_at IS NOT NULL",
    ],
    [  # 6: a failed job's last line of output (remote_agent/jobs/last_line.py)
        "ALTER TABLE jobs ADD COLUMN last_line TEXT",
    ],
    [  # 7: whose fault a failed start was (shim.fault_of): the admin requeues the host's
        "ALTER TABLE jobs ADD COLUMN fault TEXT",
    ],
    [  # 8: its HAMi-core region's directory, named before its shim starts (jobs/region.py)
        "ALTER TABLE jobs ADD COLUMN region TEXT",
    ],
]
VERSION = len(MIGRATIONS)
# What SQLite says of a step whose work a table already has (a version set back by hand, a file
# half restored): no wait mends that, unlike a full disk or a lock.
_NOT_THAT_VERSION = ("duplicate column name", "no such column", "no such table", "table ",
                     "index ")


class StoreError(Exception):
    """The job table cannot be used as it is (damaged, foreign, a full disk); the message says
    which table and why."""


@dataclass
class Job:
    id: int
    key: str
    fingerprint: str
    name: str
    argv: List[str]
    env: Dict[str, str]
    cwd: Optional[str]
    gpus: List[int]
    gpu_uuids: List[str]
    instance: Optional[str]  # MIG uuid the job runs on
    mig: Optional[Dict[str, Any]]  # {"profile", "start"}: the instance this launch creates
    memory_mib: Optional[int]  # memory share per GPU, on GPUs without MIG
    created_at: float
    state: str = "starting"
    caps: List[str] = field(default_factory=list)
    cap_notes: List[str] = field(default_factory=list)  # why a layer the host has was not applied
    exit_code: Optional[int] = None
    reason: Optional[str] = None
    stop_reason: Optional[str] = None  # why the agent asked it to stop, before it has stopped
    pid: Optional[int] = None  # the job's first process: its session and group id
    started_at: Optional[float] = None
    ended_at: Optional[float] = None
    run_as: Optional[str] = None  # the user it runs as; None: the agent's own
    cgroup: Optional[str] = None  # its own cgroup; None: found by its session
    start_ticks: Optional[int] = None  # its first process's start time (tells a reused pid)
    kill_at: Optional[float] = None
    """When a stop turns into SIGKILL, by time.monotonic: CLOCK_MONOTONIC, one clock for every
    process of the host (a daemon after a restart too) until a reboot, which ends the job."""
    usage: Optional[Dict[str, Any]] = None  # the aggregate of its samples (usage.Usage.record)
    runtime: str = "process"  # what runs it: "process", "podman", "docker" or "apptainer"
    image: Optional[str] = None  # the image of a container job
    container: Optional[str] = None  # the runtime's name for its container, where it has one
    container_cgroup: Optional[str] = None  # that container's own cgroup, once it runs
    last_line: Optional[str] = None  # a job that exited non-zero: its output's last line
    fault: Optional[str] = None  # a start that failed: whose fault, "job" or "host" (fault_of)
    region: Optional[str] = None  # its HAMi-core region's directory, where it has one

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def never_ran(self) -> bool:
        """Ended before anything ran (a launch cut short): its key may be launched again."""
        return self.state == "exited" and self.started_at is None and self.exit_code is None

    @property
    def start_failed(self) -> bool:
        """Its program could not be started: as a shell reports it, code 127."""
        return self.state == "exited" and self.started_at is None and self.exit_code == 127

    def procs(self) -> JobProcs:
        """Its processes: in its cgroup, else its session; a container's are in the container's
        cgroup, and the runtime's client in the session (it never joins the job's cgroup, where
        the container's goes below)."""
        return JobProcs(self.pid, self.start_ticks, None if self.container else self.cgroup,
                        self.container_cgroup)

    def record(self) -> Dict[str, Any]:
        """The job as the protocol shows it."""
        out = asdict(self)
        out["id"] = "j%d" % self.id
        for private in ("fingerprint", "stop_reason", "env", "start_ticks", "kill_at",
                        "region"):
            del out[private]
        return out


_NO_ROOM = " (its filesystem has no room left)"


def _no_room(path: str, err: sqlite3.Error) -> str:
    """Words saying the table's filesystem is full, where that is known or likely. SQLite's
    own "database or disk is full" (SQLITE_FULL: a write found no room, though a page may
    remain, which statvfs counts as room) is the fact, said as such. Where SQLite gives no cause
    (``room_read_after``), the filesystem is read now, after the failure: no room or no inode
    there is said as that reading, a likely cause, never as the failure's (room may have come
    or gone since); any other error has nothing of room to say."""
    name = getattr(err, "sqlite_errorname", "")  # (from Python 3.11; its words before)
    if name.startswith("SQLITE_FULL") or "disk is full" in str(err):
        return _NO_ROOM
    return room_read_after(path, err)


_JSON_COLUMNS = ("argv", "env", "gpus", "gpu_uuids", "mig", "caps", "cap_notes", "usage")
# Words for people, which may name a path of the host's that is no UTF-8: kept as Unicode
# (``text.said``), as SQLite refuses a lone surrogate.
_WORD_COLUMNS = ("reason", "stop_reason")


# Paths of the host's that the table keeps as names (a job's cgroup, its container's): one
# that is no UTF-8 (under a cgroup parent so named) is kept as its bytes, a BLOB, which SQLite
# keeps as they are (a lone surrogate it refuses) and gives back as bytes.
_PATH_COLUMNS = ("cgroup", "container_cgroup")


def _kept(changes: Dict[str, Any]) -> Dict[str, Any]:
    """``changes`` (column: value) with their words as the table keeps them."""
    return {k: said(v) if k in _WORD_COLUMNS and isinstance(v, str) else v
            for k, v in changes.items()}


def _cell(column: str, value: Any) -> Any:
    """``value`` as the table stores it in ``column``: JSON, a path's bytes, or as it is."""
    if column in _JSON_COLUMNS and value is not None:
        return json.dumps(value)
    if column in _PATH_COLUMNS and isinstance(value, str) and said(value) != value:
        return os.fsencode(value)
    return value


class JobStore:
    def __init__(self, path: str):
        for name in (path, path + "-wal", path + "-shm"):
            check_private(name, "job table")
        self.path = path
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout=5000")
            self._check_ours(path)  # before anything is written to it
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.OperationalError as err:  # the host's trouble now, not the table's
            raise StoreError("the job table %s cannot be opened now: %s%s; it is kept as it "
                             "is: start the agent again once that is mended" % (
                                 path, err, _no_room(path, err))) from err
        except sqlite3.DatabaseError as err:
            raise StoreError("the job table %s cannot be used: %s; move it aside to start with "
                             "an empty one (its jobs are then forgotten)" % (path, err)) from err

    def _check_ours(self, path: str) -> None:
        """Refuse a table of a newer agent, or a database that is not an agent's."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version < 0:  # (its steps would run from MIGRATIONS[-1], the last one, first)
            raise StoreError("the job table %s is version %d, which no agent writes; move it "
                             "aside to start with an empty one (its jobs are then forgotten)"
                             % (path, version))
        if version > VERSION:
            raise StoreError("the job table %s is version %d, newer than this agent knows (%d); "
                             "run the newer agent, or move the table aside" % (
                                 path, version, VERSION))
        tables = {row[0] for row in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
        if tables - {"jobs"}:
            raise StoreError("%s is not an agent's job table (it holds tables %s); use another "
                             "state dir" % (path, ", ".join(sorted(tables))))

    def _migrate(self) -> None:
        """Bring the table to VERSION, one numbered step per transaction."""
        with self._lock:
            self._db.create_function("wall_now", 0, time.time)  # for step 5
            self._db.create_function("monotonic_now", 0, time.monotonic)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number in range(version + 1, VERSION + 1):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in MIGRATIONS[number - 1]:
                        self._db.execute(stmt)
                    self._db.execute("PRAGMA user_version = %d" % number)
                except BaseException as err:
                    self._db.execute("ROLLBACK")
                    if isinstance(err, sqlite3.OperationalError) and str(err).startswith(
                            _NOT_THAT_VERSION):  # the table's trouble, not the host's
                        raise sqlite3.DatabaseError(
                            "it is version %d, but its columns are not that version's (step "
                            "%d finds: %s)" % (number - 1, number, err)) from err
                    raise
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The table, one user at a time; a failure (a full disk, an I/O error) names it,
        and a full disk is said as the table's open says it."""
        try:
            with self._lock:
                yield self._db
        except sqlite3.Error as err:
            raise StoreError("the job table %s: %s%s" % (self.path, err, _no_room(self.path, err))
                             ) from err

    def _query(self, sql: str, args: tuple = ()) -> List[Job]:
        with self._using() as db:
            rows = db.execute(sql, args).fetchall()
        jobs = []
        for row in rows:
            data = dict(row)
            for col in _JSON_COLUMNS:
                data[col] = json.loads(data[col]) if data[col] is not None else None
            for col in _PATH_COLUMNS:
                if isinstance(data[col], bytes):
                    data[col] = os.fsdecode(data[col])
            jobs.append(Job(**data))
        return jobs

    def insert(self, job: Job) -> Job:
        values = _kept(asdict(job))
        del values["id"]
        for col in _WORD_COLUMNS:
            setattr(job, col, values[col])
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._using() as db:
            cur = db.execute("INSERT INTO jobs (%s) VALUES (%s)" % (cols, marks),
                             tuple(_cell(k, v) for k, v in values.items()))
        job.id = int(cur.lastrowid)
        return job

    def update(self, job: Job, **changes: Any) -> Job:
        """Record ``changes``, then (only once they are recorded) make them on ``job``."""
        changes = _kept(changes)
        sets = ", ".join("%s = ?" % k for k in changes)
        args = [_cell(k, v) for k, v in changes.items()]
        with self._using() as db:
            db.execute("UPDATE jobs SET %s WHERE id = ?" % sets, (*args, job.id))
        for name, value in changes.items():
            setattr(job, name, value)
        return job

    def record_usage(self, usage: Dict[int, Dict[str, Any]]) -> None:
        """Every job's new usage aggregate (by job id) in one transaction: one fsync a sample
        period, however many jobs. A job that ended meanwhile keeps what it had."""
        with self._using() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for job_id, record in usage.items():
                    db.execute("UPDATE jobs SET usage = ? WHERE id = ? AND state = 'running'",
                               (json.dumps(record), job_id))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def by_key(self, key: str) -> Optional[Job]:
        found = self._query("SELECT * FROM jobs WHERE key = ?", (key,))
        return found[0] if found else None

    def get(self, job_id: int) -> Optional[Job]:
        found = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return found[0] if found else None

    def active(self) -> List[Job]:
        return self._query("SELECT * FROM jobs WHERE state IN ('starting', 'running') ORDER BY id")

    def all(self) -> List[Job]:
        return self._query("SELECT * FROM jobs ORDER BY id")

    def finished_before(self, cutoff: float) -> List[Job]:
        return self._query("SELECT * FROM jobs WHERE state IN ('exited', 'killed', 'lost') "
                           "AND ended_at < ? ORDER BY id", (cutoff,))

    def ids(self) -> Set[int]:
        """The ids of all jobs recorded, ended ones too."""
        with self._using() as db:
            return {row[0] for row in db.execute("SELECT id FROM jobs")}

    def delete(self, job: Job) -> None:
        with self._using() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
