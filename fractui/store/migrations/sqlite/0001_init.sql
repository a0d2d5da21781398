-- The queue and job store, version 1.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT NOT NULL,
    team         TEXT,
    name         TEXT NOT NULL,
    argv         TEXT NOT NULL,      -- JSON list of strings, never run by a shell
    cwd          TEXT,
    request      TEXT NOT NULL,      -- JSON: the queue's portion as it was at submit time
    state        TEXT NOT NULL,
    reason       TEXT,
    attempt      INTEGER NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL,
    updated_at   REAL NOT NULL,
    started_at   REAL,
    ended_at     REAL,
    host         TEXT,
    gpus         TEXT,               -- JSON list of GPU indexes
    profile      TEXT,
    start        INTEGER,
    memory_mib   INTEGER,
    charge       REAL NOT NULL DEFAULT 0,
    preemptible  INTEGER NOT NULL DEFAULT 0,
    manual       INTEGER NOT NULL DEFAULT 0,
    agent_job    TEXT,
    exit_code    INTEGER,
    stop_intent  TEXT
);
CREATE INDEX jobs_state ON jobs (state);

-- Copies of a job left on a host that was lost while it ran; stopped by key when it returns.
CREATE TABLE stale (
    host  TEXT NOT NULL,
    key   TEXT NOT NULL,
    job   INTEGER NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (host, key)
);

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    time   REAL NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    job    INTEGER,
    why    TEXT NOT NULL,
    detail TEXT                -- JSON
);
CREATE INDEX audit_job ON audit (job);

CREATE TABLE lease (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
);
