"""A job's HAMi-core region: a directory of its own, made as its user, removed as it ends.

HAMi-core's region (/tmp/cudevshr.cache by default) is a file every process that preloads it
maps and writes: the memory each process holds and the limits. Left at the default, every
job of every user on the host shared one, and any local user could make it first and change
what others' jobs are held to. Each job gets its own instead, in a directory its child makes
in REGION_DIR as the job's user (0700, named by chance, so no one else can have made it),
removed as the job ends: by the shim, or, where the shim died, by the daemon as it ends the
job, from the record (REGION_RECORD) the shim writes in the job's directory before the job
can run, or, where that directory is left unread, from the job table, which keeps the name
the daemon gave it (``Job.region``).
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from typing import Optional

from remote_agent.daemon.trust import UnsafePath, kind_of
from remote_agent.programs import not_found

REGION_DIR = "/tmp"
REGION_PREFIX = "fractui-hami-"
REGION_RECORD = "hami-region.json"  # {"path": its directory, "uid": the job's user's}
REMOVE_S = 10.0  # a removal as the job's user, who may hold it up (stop it, a FUSE mount)


def new_region() -> str:
    """A name for a job's region: in REGION_DIR, by chance, so no one else can have made it
    first."""
    return os.path.join(REGION_DIR, REGION_PREFIX + os.urandom(8).hex())


def remove_region(region: str, uid: int) -> bool:
    """Remove a job's HAMi-core region ``region`` with whatever its user put in it, where it
    is a directory of that user's (``uid``): True where this call removed it; False where
    another took it first (after a daemon's restart, it and a shim that still lives may both
    remove it as the job ends: the one that did not remove it says nothing). Which one
    removes it is settled first by a rename of it to a name of its own (``_taken``), which
    one removal alone can make: ``rm -rf`` exits 0 on a path gone before or while it ran, so
    both said they removed it. UnsafePath where it is not one (a symlink or a directory of
    another user's put in its place): it is left. It is removed as that user (``rm -rf``,
    which follows no link, in its primary group alone): the name is theirs, and they may put
    in its place any folder of theirs they may move (in a team's folder), holding what only
    root could remove, such as another user's folder in it. OSError where not all of it is
    removed (what is left is under the name it was taken by)."""
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
    try:
        as_them = {} if uid == os.geteuid() else {
            "user": uid, "group": pwd.getpwuid(uid).pw_gid, "extra_groups": []}
    except KeyError:
        raise UnsafePath("refusing to remove %s: its user, uid %d, is no more; it is left as "
                         "it is" % (region, uid)) from None
    taken = _taken(region)
    if taken is None:
        return False
    try:
        done: Optional[subprocess.CompletedProcess] = subprocess.run(
            ["rm", "-rf", "--", taken], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, cwd="/", timeout=REMOVE_S, **as_them)
    except FileNotFoundError:
        raise OSError("%s; it is left, as %s" % (not_found("rm"), taken)) from None
    except subprocess.TimeoutExpired:
        done = None
    if done is not None and done.returncode == 0:
        return True
    if done is None:
        raise OSError("%s was not removed within %g s, as uid %d; what is left is %s" % (
            region, REMOVE_S, uid, taken))
    said = done.stderr.decode("utf-8", "replace").strip().splitlines()
    raise OSError("%s was not all removed, as uid %d: %s; what is left is %s" % (
        region, uid, said[-1] if said else "rm exit status %d" % done.returncode, taken))


def _taken(region: str) -> Optional[str]:
    """``region`` renamed to a name of its own in REGION_DIR (by chance, as ``new_region``'s),
    which only one removal can do; None where it is gone (another took it). The rename moves
    whatever is at that name, following no link, and the name it makes is still a region's
    (REGION_PREFIX), so what is left of it is removed as one."""
    taken = "%s.%s" % (region, os.urandom(8).hex())
    try:
        os.rename(region, taken)
    except FileNotFoundError:
        return None
    return taken
