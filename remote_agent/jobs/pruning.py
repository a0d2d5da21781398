"""What a prune removes from ``jobs/``: the folder of each job whose record it deleted, and
what a job left there under a name no job's folder has (``j2.away``, set aside by its job).

A job runs as the agent's user, so it may swap what is at a name there at any time (a
directory back in place of a symlink, between a look and the unlink). Each entry is removed
through descriptors alone (``O_NOFOLLOW``, ``dir_fd``): nothing is followed, and no FIFO is
opened. An entry that cannot be removed costs that entry alone: it is said once, with why,
and tried again at the next prune (it is still there, and its job has no record), while
every other entry is removed (docs/decisions.md)."""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Set

from remote_agent.daemon.trust import seen_at
from remote_agent.failing import PAST_CAP, Failures

log = logging.getLogger("remote_agent.jobs")

# the one name the agent gives a job's folder (j1, never j01)
JOB_NAME = re.compile("j[1-9][0-9]{0,17}")
LEFT = "prune left"  # the Failures kind of an entry a prune could not remove
CAP = 100  # entries said failing at once; names a job chose, so bounded
DEPTH = 32  # levels of a folder removed at one pass; deeper ones are moved up (``_empty``)
PASSES = 10000  # passes over a folder at one prune; one nested deeper is tried again at the next
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def prune_jobs_dir(jobs_dir: str, recorded: Callable[[], Set[int]], cutoff: float,
                   failures: Failures) -> None:
    """Remove each entry of ``jobs_dir`` that is no recorded job's folder: one named as a job's
    whose id ``recorded`` lacks (its record pruned), and one no job's name (set aside by a job)
    that changed last before ``cutoff``, as long as an ended job's folder is kept. The names
    are listed before the ids are read: a job's folder is made after its record, so none made
    since is taken for a pruned one's."""
    names = sorted(os.listdir(jobs_dir))
    ids = recorded()
    for name in names:
        path = os.path.join(jobs_dir, name)
        odd = not JOB_NAME.fullmatch(name)
        if not odd and int(name[1:]) in ids:
            continue
        try:
            if odd and os.lstat(path).st_ctime >= cutoff:
                continue
        except FileNotFoundError:
            continue
        why = remove_entry(jobs_dir, name)
        if why is not None:
            failures.failed((LEFT, path), "prune: %s is left, and tried again at the next "
                            "prune: %s" % (path, why), cap=CAP)
            continue
        failures.worked((LEFT, path), "prune: %s is removed" % path)
        if odd:
            log.warning("prune: %s, named as no job's folder (a job set it aside), is removed, "
                        "unchanged for as long as an ended job's folder is kept", path)
    listed = {os.path.join(jobs_dir, name) for name in names}
    for failing in failures.failing(LEFT):  # (LEFT, path): one removed by someone else
        if failing[1] is not PAST_CAP and failing[1] not in listed:
            failures.worked(failing, "prune: %s is gone" % failing[1])


@dataclass
class _Removal:
    """One entry's removal: the folder it is, once open (``top``, where what lies deeper than
    ``DEPTH`` is moved up), what stayed (each part, with its error), and how many parts were
    moved up since its last pass."""
    top: int = -1
    left: List[str] = field(default_factory=list)
    moved: int = 0

    def failed(self, path: str, err: OSError) -> None:
        self.left.append("%s: %s" % (path, err.strerror or err))


def remove_entry(parent: str, name: str) -> Optional[str]:
    """Remove ``name`` in ``parent`` whole, following nothing: why not, in words (each part that
    stayed, and its error), or None where it is gone. Whatever can be removed is."""
    removal = _Removal()
    fd = os.open(parent, OPEN_DIR)
    try:
        _remove_in(fd, name, os.path.join(parent, name), removal, 0)
    finally:
        os.close(fd)
    left = removal.left
    return "; ".join(left[:3]) + (" (and %d more)" % (len(left) - 3) if len(left) > 3
                                  else "") if left else None


def _remove_in(fd: int, name: str, path: str, removal: _Removal, depth: int) -> None:
    """Remove ``name`` in the directory open as ``fd``, ``depth`` levels below the entry
    removed (0: it is that entry): a directory's entries first, each opened in it with no link
    followed; what fails is noted, and the rest goes on."""
    try:
        if not stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
            os.unlink(name, dir_fd=fd)  # (a directory swapped in since: EISDIR, noted)
            return
        sub = _open_dir(fd, name)  # (a symlink swapped in since: ELOOP, noted)
    except FileNotFoundError:
        return
    except OSError as err:
        removal.failed(path, err)
        return
    try:
        if depth:
            _empty(sub, path, removal, depth)
        else:  # the entry itself: what was moved up into it goes too, a pass at a time
            removal.top = sub
            for _ in range(PASSES):
                removal.moved = 0
                _empty(sub, path, removal, 0)
                if not removal.moved:
                    break
    finally:
        os.close(sub)
    try:
        os.rmdir(name, dir_fd=fd)
    except OSError as err:
        if err.errno != errno.ENOENT:
            removal.failed(path, err)


def _open_dir(fd: int, name: str) -> int:
    """The directory ``name`` in ``fd``, opened to be emptied, no link followed. One of the
    agent's own that its owner may not read, enter or write (a job's ``chmod 000``: every look
    and removal in it refused, EACCES, to an agent not run as root) has its owner's bits given
    back first, through a descriptor of that very folder (``O_PATH``, ``trust.seen_at``),
    never its name; another user's is left as it is."""
    held = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    try:
        st = os.fstat(held)
        if not stat.S_ISDIR(st.st_mode):  # a symlink (or a file) swapped in since the look
            code = errno.ELOOP if stat.S_ISLNK(st.st_mode) else errno.ENOTDIR
            raise OSError(code, os.strerror(code))
        if st.st_uid == os.geteuid() and st.st_mode & 0o700 != 0o700:
            os.chmod(seen_at(held), stat.S_IMODE(st.st_mode) | 0o700)
        return os.open(seen_at(held), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(held)


def _empty(fd: int, path: str, removal: _Removal, depth: int) -> None:
    """Remove what is in the directory open as ``fd``, ``depth`` levels below the entry
    removed. What is ``DEPTH`` levels down is moved up into that entry (renamed there,
    following nothing), to be removed at its next pass: however deep a job nests folders, no
    more than ``DEPTH`` are open at once, nor the stack deeper than that."""
    try:
        for entry in sorted(os.listdir(fd)):
            if depth < DEPTH:
                _remove_in(fd, entry, os.path.join(path, entry), removal, depth + 1)
                continue
            try:
                os.rename(entry, "deep-%s" % os.urandom(8).hex(), src_dir_fd=fd,
                          dst_dir_fd=removal.top)
                removal.moved += 1
            except FileNotFoundError:
                pass
            except OSError as err:
                removal.failed(os.path.join(path, entry), err)
    except OSError as err:
        removal.failed(path, err)
