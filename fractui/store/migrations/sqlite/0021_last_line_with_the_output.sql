-- A failed job's last line of output (its agent's last_line) is kept with the output, in its
-- tail's row, read only by those who may read the job's output (docs/decisions.md, "A failed
-- job's end says its last line"). The row is written as the job ends, before its tail is
-- kept: text NULL until then (no tail kept). SQLite drops a NOT NULL only by a new table.
CREATE TABLE log_tails_new (
    job        INTEGER PRIMARY KEY,
    text       TEXT,
    complete   INTEGER NOT NULL,
    kept_at    REAL NOT NULL,
    log_offset INTEGER,
    last_line  TEXT
);
INSERT INTO log_tails_new (job, text, complete, kept_at, log_offset)
    SELECT job, text, complete, kept_at, log_offset FROM log_tails;
DROP TABLE log_tails;
ALTER TABLE log_tails_new RENAME TO log_tails;
