-- How many pending jobs each team may have waiting (the config's [[teams]] max_waiting), as
-- the lease holder last wrote them: a team member's submit past its team's is refused, counted
-- in the submit's own transaction. A team not listed is held to config.DEFAULT_MAX_WAITING.
CREATE TABLE waiting_bounds (
    team        TEXT NOT NULL PRIMARY KEY,
    max_waiting INTEGER NOT NULL
);

-- What each submit counts: one team's pending jobs, read by the index, not by a walk of every
-- team's.
CREATE INDEX jobs_team_state ON jobs (team, state)
