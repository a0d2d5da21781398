-- Whether a job's kept output tail holds its output from the first byte (the lease holder read
-- all of it), so `submit --wait` says "all of its output" only then: log_offset is where the
-- tail ends in the agent's current log, which after the log rotated (past half its cap) is not
-- all of the output, and a tail from the current log's first byte read as the whole of it.
-- 0: not known to be (a tail kept before this column; an older agent's lines).
ALTER TABLE log_tails ADD COLUMN log_whole INTEGER NOT NULL DEFAULT 0;
