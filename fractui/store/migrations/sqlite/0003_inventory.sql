-- What each host could ever hold (CPUs, RAM, GPUs and their MIG modes), as last seen by a
-- scheduler or a submit: submit checks a request against it without reaching the fleet.
CREATE TABLE inventory (
    host    TEXT PRIMARY KEY,
    facts   TEXT NOT NULL,       -- JSON: fractui.sched.fleetview.facts
    seen_at REAL NOT NULL
);
