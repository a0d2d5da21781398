-- Each team's quota, whether it borrows past it and its weight, as the lease holder's config
-- gives them ([[teams]]): what its passes hold the team to. Written when the lease is taken
-- and when they change; `fractui teams` shows them, not the reader's config's, which may be
-- an old copy of the admin's.
CREATE TABLE team_terms (
    team       TEXT NOT NULL PRIMARY KEY,
    quota_gpus REAL NOT NULL,
    over_quota INTEGER NOT NULL,
    weight     REAL NOT NULL
)
