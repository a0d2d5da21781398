-- What each team holds for one of its waiting jobs, as the lease holder's last pass decided it
-- (sched.queueing's Hold, config reserve_after_s): the job, the quota it holds (GPUs, as a
-- slot charges) and, where it found no room, the host its team's later jobs keep off. Written
-- whole when it changes; `fractui teams` and the TUI's queue panel show it, so an admin who
-- sees a team's quota partly idle, or a host its later jobs skip, can tell why.
CREATE TABLE team_holds (
    team   TEXT NOT NULL PRIMARY KEY,
    job    INTEGER NOT NULL,
    charge REAL NOT NULL,
    host   TEXT
)
