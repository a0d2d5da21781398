-- GPUs held back from MIG mode changes after one failed (fractui/scheduler/backoff.py), by the
-- GPU's UUID: the failures in a row and ``until`` by the lease holder's clock. The lease
-- holder keeps them here so the next holder goes on from them, and so every TUI's placement
-- preview and `fractui place` offer no change the holder would not make.
CREATE TABLE mode_holds (
    uuid     TEXT NOT NULL PRIMARY KEY,
    failures INTEGER NOT NULL,
    until    REAL NOT NULL
)
