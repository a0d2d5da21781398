-- The host user a job runs as: NULL, the agent's own (an admin's submit: an admin may launch
-- on the hosts anyway), else the name of the team member who submitted it, so a member's
-- submit never runs their code with the agent's rights (root where it is).
ALTER TABLE jobs ADD COLUMN run_as TEXT;
-- A member's job not ended from before runs as the member from now on (PostgreSQL's 0019
-- says why a placed, running or stopping one too): its submitter, unless that is the store's
-- admin (fractui_run_as, the store's rule, given by its code).
UPDATE jobs SET run_as = fractui_run_as(submitted_by)
WHERE state IN ('pending', 'placed', 'running', 'stopping') AND run_as IS NULL;
