-- A submit's key (SqlStore.submit): a retried submit whose first answer was lost (the
-- connection dropped while committing) finds the job the first one made, instead of making a
-- second. NULL for a job submitted without one; unique where given.
ALTER TABLE jobs ADD COLUMN submit_key TEXT;
CREATE UNIQUE INDEX jobs_submit_key ON jobs (submit_key);
-- Who submitted the job, as its audit entry names them (user@where), so a job is found by its
-- user without the audit; a job of before takes its audit's submit entry.
ALTER TABLE jobs ADD COLUMN submitted_by TEXT;
UPDATE jobs SET submitted_by = (SELECT a.actor FROM audit a WHERE a.job = jobs.id
                                AND a.action = 'submit' ORDER BY a.id LIMIT 1);
-- When the job last began to wait: NULL since its submit, else the end of its last attempt
-- that started (a preemption, a requeue of a running job, a lost host), so its wait is shown
-- from there, not from a submit days before it ran. A launch refused before it started
-- leaves it as it was: that wait goes on. A job of before takes the end of its last attempt
-- that started, as its usage records keep it.
ALTER TABLE jobs ADD COLUMN queued_at REAL;
UPDATE jobs SET queued_at = (SELECT max(u.ended_at) FROM usage u WHERE u.job = jobs.id
                             AND u.attempt < jobs.attempt);
