-- Job output for users who reach only the store: the last LOG_TAIL_BYTES of a job's output as
-- the lease holder last read it from the job's agent (``complete``: the job had ended, so
-- nothing follows), and the tails asked for and not yet kept. A change of either is announced
-- on the feed's 'logs' topic.
CREATE TABLE log_tails (
    job      BIGINT PRIMARY KEY,
    text     TEXT NOT NULL,
    complete INTEGER NOT NULL,
    kept_at  DOUBLE PRECISION NOT NULL
);
CREATE TABLE log_requests (
    job      BIGINT PRIMARY KEY,
    actor    TEXT NOT NULL,
    asked_at DOUBLE PRECISION NOT NULL
)
