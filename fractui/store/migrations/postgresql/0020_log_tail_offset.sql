-- Where a job's kept output tail ends in its log (the agent's job.logs offset: the current
-- log's size at the read), so `logs -f` through the store prints exactly the bytes after what
-- it printed. NULL: kept without one (an older agent's lines, or before this column).
ALTER TABLE log_tails ADD COLUMN log_offset BIGINT;
