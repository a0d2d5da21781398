-- Job output for users who reach only the store: the last LOG_TAIL_BYTES of a
-- job's output as the lease holder last read it from the job's agent (``complete``: the job
-- had ended, so nothing follows), and the tails asked for and not yet kept. The change feed's
-- 'logs' topic moves when either does.
CREATE TABLE log_tails (
    job      INTEGER PRIMARY KEY,
    text     TEXT NOT NULL,
    complete INTEGER NOT NULL,
    kept_at  REAL NOT NULL
);
CREATE TABLE log_requests (
    job      INTEGER PRIMARY KEY,
    actor    TEXT NOT NULL,
    asked_at REAL NOT NULL
);
INSERT INTO changes (topic, version) VALUES ('logs', 0)
