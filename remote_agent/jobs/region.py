"""A job's HAMi-core region: a directory of its own, made as its user, removed as it ends.

HAMi-core's region (/tmp/cudevshr.cache by default) is a file every process that preloads it
maps and writes: the memory each process holds and the limits. Left at the default, every
job of every user on the host shared one, and any local user could make it first and change
what others' jobs are held to. Each job gets its own instead, in a directory its child makes
in REGION_DIR as the job's user (0700, named by chance, so no one else can have made it),
removed as the job ends: by the shim, or, where the shim died, by the daemon as it ends the
job, from the record (REGION_RECORD) the shim writes in the job's directory before the job
can run.
"""

from __future__ import annotations

import os
import shutil
import stat

from remote_agent.daemon.trust import UnsafePath, kind_of

REGION_DIR = "/tmp"
REGION_PREFIX = "fractui-hami-"
REGION_RECORD = "hami-region.json"  # {"path": its directory, "uid": the job's user's}


def remove_region(region: str, uid: int) -> bool:
    """Remove a job's HAMi-core region ``region`` with whatever its user put in it, where it
    is a directory of that user's (``uid``); False where it is gone already. UnsafePath where
    it is not one (a symlink or a directory of another user's put in its place): it is left.
    rmtree removes through descriptors and follows no link; a link put in the directory's
    place after the look is refused by rmtree too."""
    if os.path.dirname(region) != REGION_DIR or \
            not os.path.basename(region).startswith(REGION_PREFIX):
        raise UnsafePath("refusing %s: not a HAMi-core region's directory" % region)
    try:
        st = os.lstat(region)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        raise UnsafePath("refusing to remove %s: it is %s of uid %d, not the job's directory of "
                         "uid %d; it is left as it is" % (region, kind_of(st.st_mode), st.st_uid,
                                                          uid))
    shutil.rmtree(region)
    return True
