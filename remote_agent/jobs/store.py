"""The host's job table: sqlite3 in WAL mode, every change committed (fsync'd) before it is
acknowledged, so an agent crash or upgrade loses no job."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

ACTIVE = ("starting", "running")
FINISHED = ("exited", "killed", "lost")

_SCHEMA = [
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
]


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
    pid: Optional[int] = None
    started_at: Optional[float] = None
    ended_at: Optional[float] = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def record(self) -> Dict[str, Any]:
        """The job as the protocol shows it."""
        out = asdict(self)
        out["id"] = "j%d" % self.id
        del out["fingerprint"], out["stop_reason"], out["env"]
        return out


_JSON_COLUMNS = ("argv", "env", "gpus", "gpu_uuids", "mig", "caps", "cap_notes")


class JobStore:
    def __init__(self, path: str):
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            for stmt in _SCHEMA:
                self._db.execute(stmt)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: tuple = ()) -> List[Job]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        jobs = []
        for row in rows:
            data = dict(row)
            for col in _JSON_COLUMNS:
                data[col] = json.loads(data[col]) if data[col] is not None else None
            jobs.append(Job(**data))
        return jobs

    def insert(self, job: Job) -> Job:
        values = asdict(job)
        del values["id"]
        for col in _JSON_COLUMNS:
            values[col] = json.dumps(values[col]) if values[col] is not None else None
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._lock:
            cur = self._db.execute("INSERT INTO jobs (%s) VALUES (%s)" % (cols, marks),
                                   tuple(values.values()))
            job.id = int(cur.lastrowid)
        return job

    def update(self, job: Job, **changes: Any) -> Job:
        for name, value in changes.items():
            setattr(job, name, value)
        sets = ", ".join("%s = ?" % k for k in changes)
        args = [json.dumps(v) if k in _JSON_COLUMNS and v is not None else v
                for k, v in changes.items()]
        with self._lock:
            self._db.execute("UPDATE jobs SET %s WHERE id = ?" % sets, (*args, job.id))
        return job

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

    def delete(self, job: Job) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
