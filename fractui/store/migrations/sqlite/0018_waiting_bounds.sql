-- How many pending jobs each team may have waiting (the config's [[teams]] max_waiting), as
-- the lease holder last wrote them: a team member's submit past its team's is refused, counted
-- in the submit's own transaction. A team not listed is held to config.DEFAULT_MAX_WAITING.
CREATE TABLE waiting_bounds (
    team        TEXT NOT NULL PRIMARY KEY,
    max_waiting INTEGER NOT NULL
)
