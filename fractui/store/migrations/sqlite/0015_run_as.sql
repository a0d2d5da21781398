-- The host user a job runs as: NULL, the agent's own (an admin's submit: an admin may launch
-- on the hosts anyway), else the name of the team member who submitted it, so a member's
-- submit never runs their code with the agent's rights (root where it is).
ALTER TABLE jobs ADD COLUMN run_as TEXT;
