"""A job's HAMi-core region: a directory of its own, made as its user, removed as it ends.

HAMi-core's region (/tmp/cudevshr.cache by default) is a file every process that preloads it
maps and writes: the memory each process holds and the limits. Left at the default, every
job of every user on the host shared one, and any local user could make it first and change
what others' jobs are held to. Each job gets its own instead, in a directory its child makes
in REGION_DIR as the job's user (0700, named by chance, so no one else can have made it),
removed as the job ends: by the shim, and by the daemon as it ends the job where the shim
died or its removal failed (what is left keeps the region's name), from the record
(REGION_RECORD) the shim writes in the job's directory before the job can run, or, where
that directory is left unread, from the job table, which keeps the name the daemon gave it
(``Job.region``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import stat
import subprocess
import time
from typing import Optional

from remote_agent.daemon.trust import UnsafePath, kind_of
from remote_agent.programs import not_found

REGION_DIR = "/tmp"
REGION_PREFIX = "fractui-hami-"
REGION_RECORD = "hami-region.json"  # {"path": its directory, "uid": the job's user's}
REMOVE_S = 10.0  # a removal as the job's user, who may hold it up (stop it, a FUSE mount);
# and the longest one waits for another's to end


def new_region() -> str:
    """A name for a job's region: in REGION_DIR, by chance, so no one else can have made it
    first."""
    return os.path.join(REGION_DIR, REGION_PREFIX + os.urandom(8).hex())


def remove_region(region: str, uid: int) -> bool:
    """Remove a job's HAMi-core region ``region`` with whatever its user put in it, where it
    is a directory of that user's (``uid``): True where this call removed it; False where it
    is gone, or another removal of it removed it while this one waited (after a daemon's
    restart, it and a shim that still lives may both remove it as the job ends: the one that
    did not remove it says nothing). Which one removes it is settled by an flock on the
    directory (``_held``), held from before its name is checked to the end of the removal:
    ``rm -rf`` exits 0 on a path gone before or while it ran, so both said they removed it.
    UnsafePath where it is not one (a symlink or a directory of another user's put in its
    place): it is left. It is removed as that user (``rm -rf``, which follows no link, in its
    primary group alone): the name is theirs, and they may put in its place any folder of
    theirs they may move (in a team's folder), holding what only root could remove, such as
    another user's folder in it. OSError where not all of it is removed: what is left keeps
    the region's name, and its lock goes with the removal's end, even a killed one's, so the
    next removal (the daemon's, once the job's shim has ended) finds it and tries again."""
    if os.path.dirname(region) != REGION_DIR or \
            not os.path.basename(region).startswith(REGION_PREFIX):
        raise UnsafePath("refusing %s: not a HAMi-core region's directory" % region)
    held = _held(region, uid)
    if held is None:
        return False
    try:
        try:
            as_them = {} if uid == os.geteuid() else {
                "user": uid, "group": pwd.getpwuid(uid).pw_gid, "extra_groups": []}
        except KeyError:
            raise UnsafePath("refusing to remove %s: its user, uid %d, is no more; it is left "
                             "as it is" % (region, uid)) from None
        try:
            done: Optional[subprocess.CompletedProcess] = subprocess.run(
                ["rm", "-rf", "--", region], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/", timeout=REMOVE_S,
                **as_them)
        except FileNotFoundError:
            raise OSError("%s; it is left" % not_found("rm")) from None
        except subprocess.TimeoutExpired:
            done = None
    finally:
        os.close(held)
    if done is not None and done.returncode == 0:
        return True
    if done is None:
        raise OSError("%s was not removed within %g s, as uid %d; it is left"
                      % (region, REMOVE_S, uid))
    said = done.stderr.decode("utf-8", "replace").strip().splitlines()
    raise OSError("%s was not all removed, as uid %d: %s; it is left" % (
        region, uid, said[-1] if said else "rm exit status %d" % done.returncode))


def _held(region: str, uid: int) -> Optional[int]:
    """A descriptor of ``region``, the job's user's directory, holding its flock while its
    name still names it (looked at again once the lock is had); None where it is gone. A
    removal of another's holds it while it runs: this one waits for its end (REMOVE_S at
    most), then finds it gone, or left where that one failed. Where the filesystem has no
    locks (ENOLCK, ENOSYS: /tmp on NFS) it is removed unlocked: removed, though two at once
    may both say so."""
    deadline = time.monotonic() + REMOVE_S
    while True:
        try:
            st = _job_directory(region, uid)
            fd = os.open(region, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as err:  # (another file put in its place since: looked at again)
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        else:
            try:
                _lock(fd)
                if _same(st, os.lstat(region)) and _same(st, os.fstat(fd)):
                    fd, held = -1, fd
                    return held
            except FileNotFoundError:
                return None
            except BlockingIOError:
                pass
            finally:
                if fd >= 0:
                    os.close(fd)
        if time.monotonic() >= deadline:
            raise OSError("%s is locked by another process (another removal of it, or one of "
                          "the job's user's, whose folder it is), still after %g s; it is "
                          "left" % (region, REMOVE_S))
        time.sleep(0.05)


def _job_directory(region: str, uid: int) -> os.stat_result:
    """The region's lstat, where it is a directory of the job's user's (UnsafePath where not:
    it is left)."""
    st = os.lstat(region)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        raise UnsafePath("refusing to remove %s: it is %s of uid %d, not the job's directory of "
                         "uid %d; it is left as it is" % (region, kind_of(st.st_mode), st.st_uid,
                                                          uid))
    return st


def _lock(fd: int) -> None:
    """The region's flock, for its removal; BlockingIOError where another holds it. None is
    taken where the filesystem has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.ENOSYS):
            raise


def _same(one: os.stat_result, other: os.stat_result) -> bool:
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)
