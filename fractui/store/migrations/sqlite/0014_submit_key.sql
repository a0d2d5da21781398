-- A submit's key (SqlStore.submit): a retried submit whose first answer was lost (the
-- connection dropped while committing) finds the job the first one made, instead of making a
-- second. NULL for a job submitted without one; unique where given.
ALTER TABLE jobs ADD COLUMN submit_key TEXT;
CREATE UNIQUE INDEX jobs_submit_key ON jobs (submit_key);
