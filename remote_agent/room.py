"""A filesystem's want of room, as likely cause of a SQLite error that gives no cause.

SQLite keeps the errno of some failures to itself: "disk I/O error" (SQLITE_IOERR) where its
shared memory cannot grow, "unable to open database file" (SQLITE_CANTOPEN) where no inode is
left for the database, its WAL or its shared memory. A full filesystem is one cause of each,
never the only one, and free space read after the failure may have changed since: it is said
as that reading, the likely cause, never as the failure's. (SQLite's own "database or disk is
full", SQLITE_FULL, is the fact, and each reader says it in its own words.)
"""

from __future__ import annotations

import os

CAUSE_UNSAID = ("SQLITE_IOERR", "SQLITE_CANTOPEN")
CAUSE_UNSAID_WORDS = ("disk I/O error", "unable to open database file")
NO_ROOM = " (its filesystem, read just after, has no room left: the likely cause)"


def room_read_after(path: str, err: BaseException) -> str:
    """Words for ``err``, met at the database ``path``, where SQLite gave no cause and the
    filesystem that holds it, read now, has no room or no inode left; else ""."""
    name = getattr(err, "sqlite_errorname", "") or ""  # (from Python 3.11; its words before)
    if not (name.startswith(CAUSE_UNSAID) or str(err) in CAUSE_UNSAID_WORDS):
        return ""
    try:
        fs = os.statvfs(os.path.dirname(path) or ".")
    except OSError:
        return ""
    if fs.f_bavail == 0:
        return NO_ROOM
    if fs.f_files and fs.f_favail == 0:  # (btrfs counts no inodes: 0 of 0)
        return " (its filesystem, read just after, has no inode left, so no file can be made " \
            "there: the likely cause)"
    return ""
