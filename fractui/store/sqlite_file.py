"""An SQLite store's file as found on disk: what is there before SQLite touches it, a new store
made so that no half-made one is ever seen, and the driver's errors said in the store's words.

SQLite takes an empty file for a new database and opens an unwritable one read-only without a
word, so a store truncated to 0 bytes would be started afresh and a read-only one would fail on
its first write. Both are refused here, by what the file holds, before any connection is made:
only a path where nothing exists becomes a new store.
"""

from __future__ import annotations

import errno
import os
import pwd
import sqlite3
import stat
import tempfile
import threading
import urllib.parse
from collections import Counter
from typing import Callable, Optional, Tuple

from fractui.store.base import (StoreBusy, StoreDamaged, StoreError, StoreExposed, StoreFull,
                                StoreReadOnly, StoreUnavailable)
from fractui.whoami import os_user
from fractui.words import count, quoted, shell_line
from remote_agent.daemon.trust import (UnsafePath, check_tree, grantees, kind_of,
                                       make_dirs)
from remote_agent.room import room_read_after

HEADER = b"SQLite format 3\x00"
HEADER_BYTES = 100
SIDE_FILES = ("-wal", "-shm", "-journal")
PATH_MAX = 4096  # a path's bytes: it is said whole
SYMLOOP_MAX = 40  # links followed to the store file at most (Linux's count)
_EFFECTIVE = os.access in os.supports_effective_ids  # check modes for the effective user
MOVE_AWAY = "; fractui will not start a new store over it: restore it from a backup, or move " \
            "it away to start an empty store"


def user() -> str:
    """Who this process writes as (the effective user: a store's modes are checked for it)."""
    return os_user()


def _mode(path: str) -> str:
    st = os.stat(path)
    return "mode %04o, owner %s" % (stat.S_IMODE(st.st_mode), _owner(st.st_uid))


def others_who_write(path: str) -> Optional[str]:
    """Who besides root and the owner of the store file ``path`` can write it or its
    directory, in words ("its directory /s is writable by its group (mode 2770)"); None
    where no one can."""
    owner = os.stat(path).st_uid
    for what, where in (("file", path), ("directory", os.path.dirname(os.path.abspath(path)))):
        st = os.stat(where)
        if st.st_uid not in (0, owner):
            return "its %s %s is owned by %s, not by its owner or root" % (
                what, where, _owner(st.st_uid))
        writers = grantees(st, where, 2)
        if writers:
            return "its %s %s is writable by %s (mode %04o)" % (
                what, where, writers, stat.S_IMODE(st.st_mode))
    return None


def check_name(path: str) -> None:
    """StoreUnavailable where ``path`` is not UTF-8 text (a byte of a $XDG_STATE_HOME that is
    not): SQLite keeps a file's name as UTF-8 and cannot give it back, so such a store would
    be said to be damaged at its first read."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreUnavailable(quoted(path, PATH_MAX), "its path is not UTF-8 text, which "
                               "SQLite needs of a file's name: name the store by a path that "
                               "is ([store] url), or set $XDG_STATE_HOME to one") from None


def refuse_exposed(path: str) -> None:
    """StoreExposed where all users may write the store file ``path``, a side file of it or
    its directory, sticky or not (/tmp): any local user could then change its jobs, or put a
    store or a -wal of theirs there before fractui opens it. Asked before a store is made or
    opened; a store shared through its group is its group's to write, and is not refused.
    The way to a directory no one else writes (root's or this user's, or one to be made) is
    held to the config's rule (``check_tree``): whoever could change a folder on it could put
    a directory of theirs, and a store in it, in place of the store's. Another user's
    directory is its owner's to keep (a shared store's), unless it lies in a folder all users
    may write: anyone could have made it there first. Each is judged where the store lies,
    where a link to it leads, as SQLite opens it and puts its -wal and -shm. A side file that
    is a file with another name is refused (``refuse_linked``), and a link on its way, a
    folder's or the file's, another user could change (``resolved``)."""
    real = resolved(path)
    folder = os.path.dirname(real)
    files = [("its file", real)] + [("its %s file" % side, real + side) for side in SIDE_FILES]
    for what, where, could, fix in [
            ("its directory", folder, "put a store or a -wal of theirs there for fractui to "
             "open", "keep the store in a directory of your own (fractui makes one 0700), "
             "shared through a group if it is shared")] + [
            (what, where, "change any job in it",
             "fix it with: " + shell_line(["chmod", "o-w", where]))
            for what, where in files]:
        try:
            st = os.stat(where)
        except OSError:  # not there; or not reachable, which the checks that follow say
            continue
        if st.st_mode & stat.S_IWOTH and what != "its directory" and not stat.S_ISREG(
                st.st_mode):  # (/dev/null's mode is no one's to change: the link is wrong)
            raise StoreDamaged(path, "%s %s is not a file but %s" % (
                what, _linked(where), kind_of(st.st_mode)))
        if st.st_mode & stat.S_IWOTH:
            raise StoreExposed(path, "%s %s is writable by all users (mode %04o): any local "
                               "user could %s; %s" % (what, where, stat.S_IMODE(st.st_mode),
                                                      could, fix))
        if what not in ("its directory", "its file"):
            refuse_linked(path, what, where, st)
    try:
        st: Optional[os.stat_result] = os.stat(folder)
    except FileNotFoundError:  # made 0700 by this process
        st = None
    except OSError:  # not reachable: the checks that follow say so
        return
    if st is not None and st.st_uid not in (0, os.geteuid()):
        above = os.path.dirname(folder)
        try:
            up = os.stat(above)
        except OSError:  # gone or unreachable since the folder's stat: SQLite's open says so
            return
        if up.st_mode & stat.S_IWOTH:
            raise StoreExposed(path, "its directory %s is %s's, in %s, which all users may "
                               "write (mode %04o): any local user could have made it first, "
                               "and a store of theirs in it; keep the store in a directory "
                               "of your own (fractui makes one 0700)" % (
                                   folder, _owner(st.st_uid), above,
                                   stat.S_IMODE(up.st_mode)))
        return  # a shared store's: the way to it is its owner's to keep
    if st is None or not grantees(st, folder, 2):
        for way in dict.fromkeys((os.path.dirname(path), folder)):  # as named, as it lies
            try:
                check_tree(way, "store's directory", root_may_own=True, runner="fractui")
            except UnsafePath as err:
                raise StoreExposed(path, str(err)) from None


def refuse_linked(path: str, what: str, where: str, st: os.stat_result) -> None:
    """StoreExposed where the store file or a side file ``where`` (``what``, its stat ``st``)
    is a file that has another name, a hard link: SQLite never makes one, and writes into the
    file it finds (the store's pages, into the store file or a -wal; its index into a -shm,
    cut to 3 bytes first), so whatever file that is would be overwritten, and have its read
    taken (``keep_unread``). Where the system lets users link a file they do not own
    (``fs.protected_hardlinks = 0``), a member of the group that writes a store's folder
    could link any file on its filesystem there: root's /etc/passwd, say, or another
    database of root's as the store. The file is left as it is; its name there is removed by
    hand, which leaves the file under its other names, or, a store file or -wal that is the
    store's own (linked by a backup), copied in its place, which keeps its jobs or pages
    (``--remove-destination``: a plain ``cp`` writes through a link a member put at the
    copy's name, into the file it leads to; ``-p``: the copy keeps the file's owner and mode,
    the group's write of a shared store's). Either with no fractui holding the store open:
    one that does writes on into the files it opened, then no longer the store's (seen: a
    job submitted after the change was lost, its number given again to the holder's next).
    A -journal is none of the store's (in WAL mode, as fractui keeps every store, SQLite
    writes none), so none is copied, and none is open in a fractui, so none is stopped: its
    name is removed; SQLite's next open would have rolled it back into the store as a write
    cut short (tried: a journal's pages put back over the store's, its page 1 too), or
    removed it. (A file of no name, 0 links, was removed since it was opened: no other file
    is named so.)"""
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        name = shell_line([where])
        own = {"its file": "file (linked by a backup), copy it in place instead, which keeps "
               "its jobs",
               "its -wal file": "-wal (linked by a backup), copy it in place instead, which "
               "keeps its pages"}.get(what)
        copy = "; if one is this store's own %s: cp -p --remove-destination %s %s && mv %s %s" \
            % (own, name, shell_line([where + ".new"]), shell_line([where + ".new"]), name) \
            if own else ""
        if what == "its -journal file":  # (a journal no store of fractui's has, or keeps open)
            done = ("SQLite would take for a write cut short and put back into the store, or "
                    "remove; fractui changed nothing in it, and it is no file of the store's: "
                    "fractui keeps every store in WAL mode, where SQLite writes no -journal. "
                    "See the file's other names (find / -xdev -samefile %s), and remove this "
                    "one (rm %s): the file is kept under them, and a fractui that has the "
                    "store open goes on (it uses no -journal)" % (name, name))
        else:
            done = ("SQLite would overwrite; fractui changed nothing in it. Stop each fractui "
                    "that has the store open (its scheduler, a TUI): one would write on into "
                    "the files it opened, and a job submitted meanwhile be lost. Then see the "
                    "file's other names (find / -xdev -samefile %s), and remove this one (rm "
                    "%s): the file is kept under them%s" % (name, name, copy))
        raise StoreExposed(path, "%s %s is a file of %s with %d names (hard links): it may be "
                           "any file on its filesystem that someone linked there, which %s" % (
                               what, _linked(where), _owner(st.st_uid), st.st_nlink, done))


def _changers(folder: str) -> Optional[str]:
    """Who besides root and this user may change what is in ``folder`` (a real path: no link
    on its way), so put another link in place of one there, in words ("nobody (its owner)",
    "its group (mode 2770)"); None where no one else may. One that cannot be looked at
    (gone since the link's look) is not taken for one no one else may change."""
    try:
        st = os.stat(folder)
    except OSError as err:
        return "whoever may write it (%s)" % err.strerror
    if st.st_uid not in (0, os.geteuid()):
        return "%s (its owner)" % _owner(st.st_uid)
    writers = grantees(st, folder, 2)
    return "%s (mode %04o)" % (writers, stat.S_IMODE(st.st_mode)) if writers else None


def refuse_link(path: str, where: str, st: os.stat_result, folder: bool = False) -> None:
    """StoreExposed where the link ``where`` (its lstat ``st``), at the store file's name, or
    a ``folder`` on its way, is neither this user's nor root's and lies in a folder another
    user may change: whoever may (its owner, a member of the group it is shared through)
    could make it lead to any file on the machine, which fractui would open, take the read
    of and write, as this user (root: any file of root's), or to any folder, whose store
    fractui would take for this one. A link of this user's or root's is followed, as SQLite
    follows it, and so is another user's in a folder only root or this user may change:
    its owner can no longer make it lead elsewhere."""
    if st.st_uid in (0, os.geteuid()):
        return
    changers = _changers(os.path.dirname(where))
    if changers is None:
        return
    try:
        leads = "a link to %s" % os.readlink(where)
    except OSError:  # gone or changed since its look
        leads = "a link"
    whom = "%s (whom fractui runs as)%s" % (user(), " or root" if os.geteuid() else "")
    if not folder:
        raise StoreExposed(path, "its file %s is %s made by %s, not by %s: whoever may write "
                           "its directory could make it lead to any file on the machine, "
                           "which fractui would change as %s; fractui changed nothing. Remove "
                           "the link (rm %s) and put the store there, or name the store by "
                           "its own path" % (where, leads, _owner(st.st_uid), whom, user(),
                                             shell_line([where])))
    raise StoreExposed(path, "the folder %s on its way is %s made by %s, not by %s, in %s, "
                       "which %s may change: they could make it lead to any folder on the "
                       "machine, and fractui would take the store there for this one, write "
                       "its jobs into it and take its read, as %s; fractui changed nothing. "
                       "Name the store by its real path, or put a link of %s's there that "
                       "leads where you checked the store is (%s)" % (
                           where, leads, _owner(st.st_uid), whom, os.path.dirname(where),
                           changers, user(), user(),
                           shell_line(["ln", "-sfn", "STORE-FOLDER", where])))


def _look(where: str) -> Tuple[os.stat_result, Optional[str]]:
    """The lstat of ``where`` and, where it is a link, where it leads, both of the one thing
    there (read through a descriptor of it): a link's owner looked at by its name, and its
    target read by the name again, could be two links, a member's put in place of root's
    between the two in a folder they write (``refuse_link`` passing root's, and the
    member's then followed)."""
    fd = os.open(where, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        return st, os.readlink("", dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
    finally:
        os.close(fd)


def _followed(path: str, folder: str) -> str:
    """``folder`` (absolute, on the way to the store at ``path``) with each link on its way
    followed, as the system follows them, a link another user could change refused
    (``refuse_link``): the one ``realpath`` followed whoever's it was. Where a name is not
    there, cannot be looked at, or no more links may be followed (a loop), the rest as it is
    named: the checks that follow, or the open, say what is there."""
    pending = folder.strip("/").split("/")
    current = "/"
    links = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        step = os.path.join(current, name)
        try:
            st, target = _look(step)
            if target is None:
                current = step
                continue
            links += 1
            if links > SYMLOOP_MAX:
                return os.path.join(step, *pending)
            refuse_link(path, step, st, folder=True)
        except OSError:  # nothing there, or changed since its look: the open says which
            return os.path.join(step, *pending)
        pending = target.split("/") + pending
        if target.startswith("/"):
            current = "/"
    return current


def resolved(path: str) -> str:
    """The store file's own path: ``path`` with the links on its way followed, as SQLite
    follows them, each only where it is this user's or root's or lies in a folder no one
    else may change (``refuse_link``). Where nothing is, or no more links may be followed (a
    loop), the path reached: the checks that follow say what is there."""
    where = os.path.abspath(path)
    for _ in range(SYMLOOP_MAX):
        where = os.path.join(_followed(path, os.path.dirname(where)),
                             os.path.basename(where))
        try:
            st, target = _look(where)
            if target is None:
                return where
            refuse_link(path, where, st)
            where = os.path.join(os.path.dirname(where), target)
        except OSError:  # nothing there, or changed since its look: the open says which
            return where
    return where


def owner(path: str, file: os.stat_result) -> int:
    """Who owns the store file at ``path``, which must be the file its open checked
    (``same_file``): the store's admin, with root."""
    return same_file(path, os.path.realpath(path), file).st_uid


def _replaced(path: str, real: str) -> StoreExposed:
    """The file at the store's name is no longer the one fractui checked: as it opened, or
    since (a TUI open for hours, its store restored under it), where trying again would
    only fail again."""
    return StoreExposed(path, "its file %s is no longer the one this fractui opened: another "
                        "was put in its place, or it was moved, since; whoever may write its "
                        "directory could have put any file there, and fractui changed nothing "
                        "in it: start fractui again (a TUI, a scheduler), which checks the "
                        "file there now" % real)


def same_file(path: str, where: str, file: os.stat_result) -> os.stat_result:
    """The stat of the store file at ``where`` (its real path, as SQLite names it), refused
    (``_replaced``) unless it is the file checked as the store opened (``file``, which
    ``check_file`` gave): no link at its name, the same device and inode."""
    try:
        st = os.lstat(where)
    except OSError as err:
        raise translate(path, err) from err
    if stat.S_ISLNK(st.st_mode):
        refuse_link(path, where, st)
    if stat.S_ISLNK(st.st_mode) or (st.st_dev, st.st_ino) != (file.st_dev, file.st_ino):
        raise _replaced(path, where)
    return st


def connect(path: str, file: os.stat_result) -> sqlite3.Connection:
    """SQLite's connection to the store at ``path``, which never makes a file there (``mode=rw``):
    a store's folder may be its group's to write, and a member who put a link leading where
    nothing is in place of the store, after its checks, had root's SQLite make the file the
    link named (an empty /etc/nologin lets no one else log in). The file SQLite opened (it
    names it as it found it, every link followed) must be the one ``check_file`` checked
    (``file``): asked before SQLite reads it, which would replay a -wal or roll back a
    journal beside another file, and before anything is written to it. (A file put in its
    place between SQLite's own look at the name and its open, and taken away again before
    this one, is not seen.)"""
    db = sqlite3.connect("file://%s?mode=rw" % urllib.parse.quote(path), uri=True, timeout=30.0,
                         isolation_level=None, check_same_thread=False)
    try:
        same_file(path, next(r[2] for r in db.execute("PRAGMA database_list")
                             if r[1] == "main"), file)
    except BaseException:
        db.close()
        raise
    return db


def _linked(path: str) -> str:
    """``path``, and where it leads if it is a link."""
    real = os.path.realpath(path)
    return path if real == path else "%s (a link to %s)" % (path, real)


def keep_unread(path: str, real: str, fd: int, st: os.stat_result) -> None:
    """Takes from the store file (``fd``, opened at its real path ``real``; its stat ``st``)
    and its side files, where they are this user's, the read their writers do not need: all
    users' always, its group's too unless its group writes the store (shared through it). The
    store holds every job's command line and variables; a store made by ``sqlite3`` or copied
    back under a umask of 022 is 0644, and SQLite gives its -wal and -shm the file's mode.
    Each file is changed through a descriptor of it, never by its name again: in a folder its
    group writes, a member could put a link in its place between a look and a chmod by name,
    which would change the mode of the file it names, any of this user's (root's: any on the
    machine); a side file with another name, a hard link, is refused as it is looked at
    (``refuse_linked``). Asked by ``check_file``, never while a store of this process holds
    the file."""
    me = os.geteuid()
    if st.st_uid != me:
        return
    keep = 0o770 if st.st_mode & stat.S_IWGRP else 0o700
    _narrow(fd, st, keep)
    for side in SIDE_FILES:
        where = real + side
        try:  # (not blocking: a FIFO put there opens at once, and is passed by)
            side_fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as err:  # a link (SQLite opens none there) or a socket: no store's
            if err.errno in (errno.ELOOP, errno.ENXIO):
                continue
            raise
        try:
            seen = os.fstat(side_fd)
            refuse_linked(path, "its %s file" % side, where, seen)
            _narrow(side_fd, seen, keep)
        finally:
            os.close(side_fd)


def _narrow(fd: int, st: os.stat_result, keep: int) -> None:
    """The mode of the file ``fd`` (its stat ``st``), if a file of this user's, kept to
    ``keep``."""
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and mode & ~keep & 0o777:
        os.fchmod(fd, mode & keep)


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "uid %d" % uid


def _read_only_fs(folder: str) -> bool:
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)


def unmakeable(path: str) -> Optional[str]:
    """Why no store can be made at ``path`` (where none is), as seen without making anything:
    the nearest folder on its way that is there is on a read-only filesystem, or not
    writable by this user; None where nothing says so (making one may fail all the same)."""
    folder = os.path.dirname(path)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    if _read_only_fs(folder):
        return "%s is on a read-only filesystem" % folder
    if not os.access(folder, os.W_OK | os.X_OK, effective_ids=_EFFECTIVE):
        return "%s is not writable by %s (%s)" % (folder, user(), _mode(folder))
    return None


# The store files (device, inode) a store of this process has open, and how many stores: its
# header is not read again while one is. Closing any descriptor of a file drops every POSIX
# lock this process holds on it, SQLite's included (SQLite defers closing only the descriptors
# it opened itself), so a second store opened in a process would take the first one's locks
# away: another process's connection could then checkpoint and cut the WAL under it (seen as
# "unable to get the page", a store read as damaged). SQLite guards an open file from then.
_in_use: Counter = Counter()
_in_use_lock = threading.Lock()


def holding(file: os.stat_result) -> Tuple[int, int]:
    """A store of this process opens the store file ``file`` (its stat, as ``check_file``
    gave it): its header is not read while it is held."""
    with _in_use_lock:
        _in_use[(file.st_dev, file.st_ino)] += 1
    return file.st_dev, file.st_ino


def released(held: Tuple[int, int]) -> None:
    """The store that held the file (``holding``'s key) is closed."""
    with _in_use_lock:
        _in_use[held] -= 1
        if _in_use[held] <= 0:
            del _in_use[held]


def absent(path: str) -> bool:
    """Whether nothing is at ``path``, so a new store may begin there. A path hidden from this
    user by a directory on its way is no proof of that (a store there may be shared through a
    group they are not in): refused, naming the directory."""
    try:
        os.lstat(path)
    except PermissionError:
        raise StoreReadOnly(path, "cannot be read by %s: %s" % (user(), _shut(path))) from None
    except OSError:  # nothing there, or a path nothing can be at: creating it says which
        return True
    return False


def _shut(path: str) -> str:
    """Which directory on the way to ``path`` this user may not enter, and its mode."""
    folder = os.path.dirname(path)
    ways = [folder]
    while os.path.dirname(ways[-1]) != ways[-1]:
        ways.append(os.path.dirname(ways[-1]))
    for way in reversed(ways):
        if not os.access(way, os.X_OK, effective_ids=_EFFECTIVE):
            return "they may not enter its directory %s (%s)" % (way, _mode(way))
    return "they may not enter a directory on its way"


def check_file(path: str) -> os.stat_result:
    """Refuses what at ``path`` cannot be a store fractui may write: not a file, empty, not
    SQLite, shorter than its header says, not writable here (file or directory), or a file
    with another name (``refuse_linked``); takes the read its writers do not need
    (``keep_unread``). Gives the file's stat, which names the file SQLite must open
    (``connect``). It is opened once at its real path (``resolved``: a link of another
    user's refused), no link followed there, and looked at, read and changed through that
    descriptor alone: a store's folder may be its group's to write, and a member who put a
    link or another file at its name had root take the read of the file it named, and open it
    as the store, before a check refused it. The header of a file a store of this process
    holds was checked when it was first opened, and is not read again (``_in_use``): closing
    a descriptor of it would drop that store's locks."""
    real = resolved(path)
    try:
        st = os.lstat(real)
    except OSError as err:  # a name absent() saw, which leads nowhere: a dangling link
        raise StoreDamaged(path, "is a link to %s, where no file can be opened: %s" % (
            real, err.strerror)) from None
    if stat.S_ISLNK(st.st_mode):  # links of this user's or root's, in a loop
        raise StoreDamaged(path, "is a link to %s, where no file can be opened: %s" % (
            real, os.strerror(errno.ELOOP)))
    if not stat.S_ISREG(st.st_mode):
        raise StoreDamaged(path, "is not a file but %s" % kind_of(st.st_mode))
    if st.st_size == 0:
        raise StoreDamaged(path, "is empty (0 bytes): a store is never empty, so it was "
                           "truncated or is not a store" + MOVE_AWAY)
    with _in_use_lock:  # (held throughout: no store of this process opens it meanwhile)
        if (st.st_dev, st.st_ino) in _in_use:
            check_writable(path, real)
            return st
        try:  # (not blocking: a FIFO put there since opens at once)
            fd = _open_way(path, real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except PermissionError:
            raise StoreReadOnly(path, "cannot be read by %s (%s)" % (
                user(), _mode(real))) from None
        except OSError as err:
            if err.errno == errno.ELOOP:  # a link put at its name since its look
                refuse_link(path, real, os.lstat(real))
            raise translate(path, err, "cannot open it") from err
        try:
            st = _checked(path, real, fd, st)
            try:
                keep_unread(path, real, fd, st)
            except OSError as err:
                raise translate(path, err, "cannot keep it from readers") from err
        finally:
            os.close(fd)
    return st


def _open_way(path: str, real: str, flags: int) -> int:
    """The store file at ``real`` (``resolved``'s: no link on its way) opened with ``flags``,
    each folder on its way opened from the one before it and no link there followed: a
    member who put a link of theirs in place of a folder on the way after ``resolved`` walked
    it (the store's own, in the team's folder they write) had the open follow it, and root's
    fractui checked, took the read of, and wrote another team's store of root's. A link
    found there is judged as on the walk (``refuse_link``); one that passes was put there
    since, and the file is no longer the one checked (``_replaced``)."""
    at = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    way = "/"
    try:
        for name in real.strip("/").split("/")[:-1]:
            way = os.path.join(way, name)
            try:
                into = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                               dir_fd=at)
            except NotADirectoryError:
                st, target = _look(way)
                if target is None:
                    raise
                refuse_link(path, way, st, folder=True)
                raise _replaced(path, real) from None
            os.close(at)
            at = into
        return os.open(os.path.basename(real), flags | os.O_CLOEXEC, dir_fd=at)
    finally:
        os.close(at)


def _checked(path: str, real: str, fd: int, looked: os.stat_result) -> os.stat_result:
    """The stat of the store file opened at ``real`` (``fd``), the file ``looked`` at there
    (not empty), refused where it is no whole, writable SQLite file of one name."""
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (looked.st_dev, looked.st_ino):
        raise _replaced(path, real)
    if st.st_nlink > 1 and not _being_made(real, st) and os.fstat(fd).st_nlink > 1:
        refuse_linked(path, "its file", real, st)
    head = os.pread(fd, HEADER_BYTES, 0)
    if not head.startswith(HEADER):
        if HEADER.startswith(head):
            raise StoreDamaged(path, "is truncated: %s, shorter than an SQLite header%s"
                               % (count(len(head), "byte"), MOVE_AWAY))
        raise StoreDamaged(path, "is not an SQLite database (it starts with %r), so not a "
                           "fractui store%s" % (head[:16], MOVE_AWAY))
    if len(head) < HEADER_BYTES:
        raise StoreDamaged(path, "is truncated: %s, shorter than an SQLite header%s" % (
            count(len(head), "byte"), MOVE_AWAY))
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    counted = head[92:96] == head[24:28]  # the header's page count is current (SQLite's rule)
    wal = real + "-wal"
    pending = os.path.exists(wal) and os.path.getsize(wal) > 0  # pages may live there yet
    if counted and not pending and st.st_size < pages * page_size:
        raise StoreDamaged(path, "is truncated: %s where its header counts %s of %d bytes%s" % (
            count(st.st_size, "byte"), count(pages, "page"), page_size, MOVE_AWAY))
    check_writable(path, real)
    return st


def _being_made(real: str, st: os.stat_result) -> bool:
    """Whether the store file's one other name is the private one ``create`` made it under
    beside it (``.store.db.*.new``), which that process removes once the store is linked
    into place: an open meanwhile sees both names. (A file of elsewhere linked at both names
    has three.)"""
    folder, name = os.path.split(real)
    if st.st_nlink != 2:
        return False
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("." + name + ".") and entry.name.endswith(".new"):
                    seen = entry.stat(follow_symlinks=False)
                    if (seen.st_dev, seen.st_ino) == (st.st_dev, st.st_ino):
                        return True
    except OSError:  # (a name removed as it was looked at: the count is asked again)
        pass
    return False


def check_writable(path: str, real: str) -> None:
    """The file (at its real path ``real``), and the directory SQLite writes its -wal and
    -shm files in, must be writable by this process: every decision is recorded there."""
    folder = os.path.dirname(real)
    if _read_only_fs(folder):
        raise StoreReadOnly(path, "is on a read-only filesystem: fractui records every "
                            "decision in its store, so it must be writable")
    if not os.access(real, os.R_OK | os.W_OK, effective_ids=_EFFECTIVE):
        raise StoreReadOnly(path, "is read-only for %s (%s): fractui records every decision in "
                            "its store; make it writable (chmod 600) or run as its owner" % (
                                user(), _mode(real)))
    if not os.access(folder, os.W_OK | os.X_OK, effective_ids=_EFFECTIVE):
        raise StoreReadOnly(path, "its directory %s is not writable by %s (%s): SQLite keeps "
                            "the store's -wal and -shm files beside it" % (
                                folder, user(), _mode(folder)))


def create(path: str, initialise: Callable[[sqlite3.Connection], None]) -> None:
    """A new store at ``path``: made whole in a private (0600) file beside it, then linked into
    place in one step, so no process ever sees a half-made store, and a store another process
    made meanwhile is kept as it is. Directories made on the way are 0700. SQLite opens no
    name in the store's folder: it makes the store in a folder of this process's alone
    (``_made``), whose bytes go into that file through its descriptor. A shared store's folder
    is its group's to write, and a member who put a link at the file's name once it was made
    had root's SQLite, opening it by that name, make the file the link named, anywhere."""
    folder = os.path.dirname(path)
    try:
        make_dirs(folder)
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".new",
                                   dir=folder)
    except OSError as err:
        raise translate(path, err, "cannot create a new store there") from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_made(path, initialise))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made the store first: that one is used
            pass
    except OSError as err:
        raise translate(path, err, "cannot create a new store there") from err
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _made(path: str, initialise: Callable[[sqlite3.Connection], None]) -> bytes:
    """The bytes of a new store (for ``path``), made by SQLite in a new folder of this
    process's alone (0700, in the system's temporary folder) and read back once it is closed
    (its WAL put back into it). A failure is judged before that folder is removed: its
    removal frees the room whose want SQLite may have said only as "disk I/O error"."""
    folder = tempfile.gettempdir()
    try:
        with tempfile.TemporaryDirectory(prefix="fractui-store-") as private:
            made = os.path.join(private, os.path.basename(path))
            try:
                db = sqlite3.connect(made, isolation_level=None)
                try:
                    initialise(db)
                finally:
                    db.close()
                with open(made, "rb") as f:
                    return f.read()
            except (sqlite3.Error, OSError) as err:
                raise _unmade(path, folder, made, err) from err
    except OSError as err:  # (its folder: made, or removed)
        raise _unmade(path, folder, os.path.join(folder, "store.db"), err) from err


def _unmade(path: str, folder: str, made: str, err: BaseException) -> StoreError:
    """Why no store for ``path`` could be made at ``made`` in ``folder``: no room there said
    as a full store's folder is (``_full``), else SQLite's or the system's words, with the
    folder's room as read just after where SQLite gave no cause (``room_read_after``)."""
    if _full(err):
        return StoreFull(path, "cannot make a new store in %s: no space is left on the "
                         "filesystem that holds it (%s): nothing was recorded" % (folder, err))
    return _room_read_after(path, made, "cannot make a new store in %s: %s" % (folder, err),
                            err)


def _full(err: BaseException) -> bool:
    """Whether ``err`` says itself that its filesystem has no room: SQLite's "database or
    disk is full" (SQLITE_FULL), or the system's ENOSPC or a quota's EDQUOT. An error whose
    cause SQLite does not give ("disk I/O error") is not, whatever free space is read after
    it: room may have come or gone since, and a full disk is one of its causes, not the one."""
    name = getattr(err, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_FULL") or getattr(err, "errno", None) in (
        errno.ENOSPC, errno.EDQUOT) or "disk is full" in str(err)


def translate(path: str, err: BaseException, doing: str = "") -> StoreError:
    """The store's error for a driver's (or the system's) error met at ``path``. Python's
    sqlite3 raises UnicodeDecodeError for SQLite's words that are not UTF-8: they quote a
    damaged name (``malformed database schema (\\x80hanges)``)."""
    name = getattr(err, "sqlite_errorname", "") or ""
    code = getattr(err, "errno", None)
    if isinstance(err, UnicodeDecodeError):
        said = bytes(err.object).decode("utf-8", "surrogateescape")
        return StoreDamaged(path, "is damaged: SQLite says %s%s" % (quoted(said), MOVE_AWAY))
    text = str(err) or type(err).__name__
    what = (doing + ": " if doing else "") + text
    if _full(err):
        return StoreFull(path, "no space is left on the filesystem that holds it (%s): nothing "
                         "was recorded" % what)
    if name.startswith("SQLITE_READONLY") or "readonly database" in text or code in (
            errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreReadOnly(path, "cannot be written by %s: %s" % (user(), what))
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or (
            "not a database" in text) or "Could not decode" in text:  # text that is not UTF-8
        return StoreDamaged(path, "is damaged: SQLite says %r%s" % (text, MOVE_AWAY))
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "is locked" in text:
        return StoreBusy(path, "another process kept it locked too long (%s); try again" % what)
    return _room_read_after(path, path, what, err)


def _room_read_after(path: str, met: str, what: str, err: BaseException) -> StoreError:
    """The error of ``err`` met at ``met``, said ``what``, where SQLite gave no cause of its
    own: a filesystem read just after as full is said so, as the likely cause, and is a full
    store's error all the same (a migration cut by it is not damage, a wait for the store ends
    at it, as at SQLITE_FULL: room comes back by an admin's hand, not by waiting); else the
    store is unavailable."""
    hint = room_read_after(met, err)
    if hint:
        return StoreFull(path, "%s%s: nothing was recorded" % (what, hint))
    return StoreUnavailable(path, what)
