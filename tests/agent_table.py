"""The agent's job table as an older agent left it, for the tests of its upgrade."""

from __future__ import annotations

import re
import sqlite3

from remote_agent.jobs import store as job_store


def set_back(db: sqlite3.Connection, version: int) -> None:
    """``db``'s job table as an agent of table ``version`` left it: each column a later step
    adds dropped, newest first, and its version set back, so every later step runs again as
    an upgrade would (a version set back alone is damage: a step finds its column there)."""
    for step in reversed(job_store.MIGRATIONS[version:]):
        for sql in reversed(step):
            added = re.fullmatch(r"ALTER TABLE jobs ADD COLUMN (\w+) .*", sql)
            if added:
                db.execute("ALTER TABLE jobs DROP COLUMN %s" % added.group(1))
    db.execute("PRAGMA user_version = %d" % version)
