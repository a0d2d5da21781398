-- A failed job's last line of output (its agent's last_line) is kept with the output, in its
-- tail's row, not in jobs.reason, which every team reads (docs/decisions.md, "A failed job's
-- end says its last line"). 0021's row security on log_tails holds it to the output's rule:
-- the admins (the scheduler) read and write every row, a team member reads their teams'
-- rows; 0004's guard leaves writes to the admins. Both are of rows, so they cover the new
-- column with no new line, as the GRANTs on the table do. The row is written as the job
-- ends, before its tail is kept: text NULL until then (no tail kept, log_tail reads none).
ALTER TABLE log_tails ADD COLUMN last_line TEXT;
ALTER TABLE log_tails ALTER COLUMN text DROP NOT NULL;
