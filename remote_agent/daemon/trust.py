"""What the agent trusts on its host's disk, and how it makes its own files.

Another local user must never read the agent's traffic or make it run code. So every directory on
the way to the state dir must belong to root or the agent's user and be writable by nobody else
(a sticky directory such as /tmp excepted: others cannot rename what they do not own there), a
symlink on the way must be owned by root or the agent's user, and the state dir and everything the
agent reads inside it must be the agent's own and writable by nobody else — OpenSSH's StrictModes
rule, applied to every path the agent trusts. Files are opened without following symlinks and
checked on the open descriptor, so nothing can be swapped between the check and the use. Every
file the agent creates is 0600 and every directory 0700.

POSIX ACLs need no check of their own on Linux: where a file has an extended ACL, its mode's group
bits are the ACL's mask, which bounds what every named user and group (and the owning group) may
do, so a grant to another user shows there; chmod go-rwx clears the mask, and what a default ACL
gives a new file is cut by the mode it is created with (0600, 0700). The ACL is read to name who
it lets in (``grantees``): a mask that lets write where no entry has it lets no one, and is no
refusal.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import struct
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

MAX_LINKS = 40  # as the kernel's own limit on symlinks in one lookup
ACL_ACCESS = "system.posix_acl_access"  # the kernel's xattr: a u32 version, then entries
_ACL_ENTRY = struct.Struct("<HHI")  # tag, permission bits (rwx = 4|2|1), user or group id
# the errors the content of a damaged file of the agent's gives as it is read: not JSON (cut
# short, bytes not UTF-8), nested past the parser's depth, or not of the shape its reader takes
DAMAGE = (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError)
_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP = 0x02, 0x04, 0x08  # the group class, less the mask


def record(types: Dict[str, Tuple[type, ...]],
           required: Sequence[str] = ()) -> Callable[[Any], Dict[str, Any]]:
    """A shape for a JSON file the agent reads (``kept.read_json``, a job's spec): an object
    with the ``required`` keys, each of its keys named in ``types`` of one of those types (a
    boolean is not a number)."""
    def shape(data: Any) -> Dict[str, Any]:
        if not isinstance(data, dict):
            raise TypeError("not an object but %s" % type(data).__name__)
        for key in required:
            if key not in data:
                raise KeyError(key)
        for key, allowed in types.items():
            value = data.get(key)
            if key in data and (not isinstance(value, allowed) or (
                    isinstance(value, bool) and bool not in allowed)):
                raise TypeError("%s is %.80r" % (key, value))  # (cut: it may be long)
        return data
    return shape


# ``python -m`` and ``-c`` put the working directory first on the module path (``-P``, which
# does not, is Python 3.11's), so a child started in a folder another user may write, such as
# /tmp or a team's project folder, imports their ``remote_agent``, ``fractui``, ``hashlib`` or
# ``typing`` in place of ours. This line, run first, drops that entry (``sys`` is built in).
_NO_WORKING_DIR = "import sys; getattr(sys.flags, 'safe_path', 0) or sys.path.pop(0); "
_RUN_MODULE = "del sys.argv[0]; import runpy; " \
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"


class UnsafePath(Exception):
    """A path the agent refuses to use; the message says what is wrong and how to fix it."""


def _uid() -> int:
    return os.geteuid()


def _mode(st: os.stat_result) -> str:
    return "%04o" % stat.S_IMODE(st.st_mode)


def check_tree(path: str, what: str, root_may_own: bool = False,
               runner: str = "the agent", socket: bool = False) -> None:
    """Refuse ``path`` (``what`` names it in messages) unless no other user can change what it
    leads to. Components that do not exist yet are not checked (the caller creates them 0700
    and checks again). With ``root_may_own``, ``path`` itself may be root's too (a file root
    put there for every user to read, such as a config under /etc). With ``socket``, ``path``
    is a socket, whose write bits let others connect to it, not change it: they are not
    refused (its owner, who listens there, must still be ours). ``runner``: who reads it, as
    the messages say."""
    uid = _uid()
    pending = os.path.abspath(path).strip("/").split("/")
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
            st = os.lstat(step)
        except FileNotFoundError:
            return
        last = not pending
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, uid):
                raise UnsafePath(
                    "refusing %s %s: it is reached through the symlink %s, owned by uid %d, who "
                    "could point it anywhere; replace the link with one of your own or use the "
                    "real path" % (what, path, step, st.st_uid))
            links += 1
            if links > MAX_LINKS:
                raise UnsafePath("refusing %s %s: too many symlinks on the way" % (what, path))
            target = os.readlink(step)
            pending = [p for p in target.split("/") if p] + pending
            if target.startswith("/"):
                current = "/"
            continue
        owners = (uid,) if last and not root_may_own else (0, uid)
        if st.st_uid not in owners:
            raise UnsafePath(
                "refusing %s %s: %s is owned by uid %d, not by %s; that user could change what "
                "%s runs. Use a directory of your own (chown it, or pick another path)"
                % (what, path, step, st.st_uid,
                   "uid %d (the user %s runs as)" % (uid, runner) if owners == (uid,) else
                   "root or uid %d" % uid, runner))
        if not last and not stat.S_ISDIR(st.st_mode):
            raise UnsafePath("refusing %s %s: %s is not a directory" % (what, path, step))
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        writers = grantees(st, step, 2) if (not socket if last else not sticky_dir) else ""
        if writers:
            # a folder others must go on making files in (a team's project folder) may be
            # sticky instead: then no one renames or removes what is not theirs
            sticky = "" if last else " (or, where others must go on making files there: " \
                "chmod +t %s, or a folder of your own elsewhere)" % step
            raise UnsafePath(
                "refusing %s %s: %s is writable by %s (mode %s), who could replace what %s "
                "reads there; fix it with: chmod go-w %s%s" % (
                    what, path, step, writers, _mode(st), runner, step, sticky))
        current = step


def python_code(python: str, code: str) -> List[str]:
    """The command line of ``python -c CODE``, which imports nothing from its working
    directory: what it imports is only what its module path names. CODE is compiled once
    that entry is gone: a ``from __future__`` line, which must come before any other line,
    imports the module ``__future__`` as it runs. (Put in ASCII, whatever the locale.)"""
    return [python, "-c", _NO_WORKING_DIR + "exec(compile(%s, '<string>', 'exec'))"
            % ascii(code)]


def python_module(module: str) -> List[str]:
    """The command line of ``python -m MODULE`` (this interpreter), as ``python_code``'s: runpy
    runs the module as ``-m`` does."""
    return [sys.executable, "-c", _NO_WORKING_DIR + _RUN_MODULE, module]


def grantees(st: os.stat_result, target: Union[str, int], perm: int) -> str:
    """Who besides the owner has any of ``perm`` (of rwx = 4|2|1; 2 for write) on ``target``
    (a path that is no symlink, or a descriptor) whose stat is ``st``, in words: "its group",
    "all users", or the users and groups its ACL names; "" where no one."""
    who = []
    if (st.st_mode >> 3) & perm:
        acl = _acl_entries(target)
        if acl is None:
            who.append("its group")
        else:
            who.extend(_acl_grantees(acl, (st.st_mode >> 3) & perm))
    if st.st_mode & perm:
        who.append("all users")
    return " and ".join(who)


def _acl_entries(target: Union[str, int]) -> Optional[List[Tuple[int, int, int]]]:
    """The (tag, perm, id) entries of ``target``'s extended access ACL; None where it has none
    (or its filesystem, or this system, keeps no ACLs: its mode says all)."""
    if not hasattr(os, "getxattr"):
        return None
    try:
        raw = os.getxattr(target, ACL_ACCESS)
    except OSError as err:
        if err.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    return [_ACL_ENTRY.unpack_from(raw, at) for at in range(4, len(raw), _ACL_ENTRY.size)]


def _acl_grantees(acl: List[Tuple[int, int, int]], perm: int) -> List[str]:
    """Who an extended ACL gives ``perm``, already cut by its mask (the mode's group bits): the
    group class's entries, each as far as the mask lets it."""
    who = []
    for tag, p, ident in acl:
        if not p & perm:
            continue
        if tag == _ACL_USER:
            who.append("the user %s through its ACL" % _name(pwd.getpwuid, ident, "uid"))
        elif tag == _ACL_GROUP:
            who.append("the group %s through its ACL" % _name(grp.getgrgid, ident, "gid"))
        elif tag == _ACL_GROUP_OBJ:
            who.append("its group")
    return who


def _name(lookup: Callable[[int], Sequence], ident: int, kind: str) -> str:
    try:
        return "%s (%s %d)" % (lookup(ident)[0], kind, ident)
    except KeyError:
        return "%s %d" % (kind, ident)


def private_tree(path: str, what: str) -> str:
    """The directory ``path``, created 0700 where missing, after ``check_tree``."""
    check_tree(path, what)
    make_dirs(path)
    check_tree(path, what)
    return private_dir(path, what)


def make_dirs(folder: str) -> None:
    """``folder`` and every missing one above it, each made 0700: ``os.makedirs`` makes those
    above with the umask's mode, which a default ACL on their parent replaces by its own grants
    (the umask is not applied there)."""
    folder = os.path.abspath(folder)
    if os.path.isdir(folder):
        return
    make_dirs(os.path.dirname(folder))
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:  # made meanwhile by another process: the caller checks it
        pass


def private_dir(path: str, what: str = "directory") -> str:
    """A directory of the agent's own inside a checked one: made 0700 if missing, else it must
    be a real directory (not a symlink) of the agent's user that nobody else can write."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath("refusing %s %s: it is %s, not a directory" % (
            what, path, "a symlink" if stat.S_ISLNK(st.st_mode) else "a file"))
    _check_owned(st, path, what)
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def open_dir(path: str, what: str = "directory") -> int:
    """A descriptor of a directory of the agent's own, to open files in (``open_private``'s
    ``dir_fd``): never through a symlink, refused unless a directory of its user that nobody
    else can write. A name swapped after this open is never followed by the opens in it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise UnsafePath("refusing %s %s: it is %s, not a directory" % (
            what, path, kind_of(os.lstat(path).st_mode))) from err
    try:
        _check_owned(os.fstat(fd), path, what, fd=fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_owned(st: os.stat_result, path: str, what: str, runner: str = "the agent",
                 fd: Union[int, str, None] = None) -> None:
    """Refuse ``path`` (open as ``fd`` where given, or held at ``seen_at``'s name) unless it
    is ours and nobody else writes it."""
    uid = _uid()
    if st.st_uid != uid:
        raise UnsafePath("refusing %s %s: it is owned by uid %d, not by uid %d (the user %s "
                         "runs as); remove it, or chown it back after checking it" % (
                             what, path, st.st_uid, uid, runner))
    writers = grantees(st, path if fd is None else fd, 2)
    if writers:
        raise UnsafePath("refusing %s %s: it is writable by %s (mode %s), who could have "
                         "changed it; check it, then: chmod go-w %s" % (
                             what, path, writers, _mode(st), path))


def kind_of(mode: int) -> str:
    """What kind of file one of ``mode`` is, in words, for a refusal ("a FIFO")."""
    for test, kind in ((stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a file of no known kind"


def _check_kind(st: os.stat_result, path: str, what: str, fifo: bool) -> None:
    """Refuse ``path`` unless it is a regular file (a FIFO, with ``fifo``)."""
    if (stat.S_ISFIFO if fifo else stat.S_ISREG)(st.st_mode):
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath("refusing %s %s: it is a symlink" % (what, path))
    raise UnsafePath("refusing %s %s: not a %s: %s" % (
        what, path, "FIFO" if fifo else "regular file", kind_of(st.st_mode)))


def in_folder(path: str, dir_fd: Optional[int]) -> str:
    """What names ``path`` to a call given ``dir_fd`` (its folder, opened already): its own
    name there; ``path`` itself where there is none."""
    return path if dir_fd is None else os.path.basename(path)


def open_private(path: str, flags: int, what: str = "file", fifo: bool = False,
                 runner: str = "the agent", readable: bool = False,
                 dir_fd: Optional[int] = None) -> int:
    """``os.open`` for a file the agent (``runner``) trusts: never through a symlink, created
    0600, and refused unless it is a regular file (or a FIFO, with ``fifo``) of its user that
    nobody else can write. Read bits for others are taken away (kept with ``readable``: a file
    other tools made readable, such as OpenSSH's known_hosts). The open never waits: a FIFO
    or a device put where a regular file belongs is refused as it is seen, not opened, and the
    open is non-blocking (the descriptor is made blocking again unless ``flags`` asked
    otherwise), so one swapped in meanwhile is refused too: a plain open of a FIFO waits for
    its other end for good, holding up whichever of the daemon's loops opened it. A regular file
    whose lease is being broken is waited for, as a plain open waits (at most the kernel's
    lease-break-time): that open is of the file seen to be one (``_reopen_seen``), never of
    whatever the path names by then. With ``dir_fd`` (``path``'s folder, opened already, as
    ``open_dir`` opens one) the file is opened in that folder, never through its name again."""
    name = in_folder(path, dir_fd)
    try:
        _check_kind(os.lstat(name, dir_fd=dir_fd), path, what, fifo)
    except FileNotFoundError:
        pass  # (made by this open, where ``flags`` say so)
    try:
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600,
                         dir_fd=dir_fd)
        except BlockingIOError:  # a regular file under a lease (a file server's), being broken
            fd = _reopen_seen(name, flags, path, what, fifo, dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:  # the last component is a symlink
            raise UnsafePath("refusing %s %s: it is a symlink" % (what, path)) from err
        if err.errno != errno.ENOENT:  # (a FIFO with no reader swapped in: ENXIO)
            try:
                _check_kind(os.lstat(name, dir_fd=dir_fd), path, what, fifo)
            except FileNotFoundError:
                pass
        raise
    try:
        st = os.fstat(fd)
        _check_kind(st, path, what, fifo)
        _check_owned(st, path, what, runner, fd)
        if st.st_mode & 0o077 and not readable:
            os.fchmod(fd, 0o600)
        if not flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _reopen_seen(name: str, flags: int, path: str, what: str, fifo: bool,
                 dir_fd: Optional[int]) -> int:
    """``name`` (``path``, in ``dir_fd`` where given) opened with ``flags``, waiting as a
    plain open waits, once it is seen to be a regular file (a FIFO, with ``fifo``): the file
    is held by an ``O_PATH`` descriptor, which opens nothing, and the open that may wait is of
    that very file through /proc. An open by name after a look would open what was swapped in
    between: a FIFO, whose open waits for its other end for good."""
    held = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        _check_kind(os.fstat(held), path, what, fifo)
        return os.open(seen_at(held), flags & ~(os.O_CREAT | os.O_EXCL) | os.O_CLOEXEC)
    finally:
        os.close(held)


def check_private(path: str, what: str = "file",
                  fifo_ok: bool = False) -> Optional[os.stat_result]:
    """For files opened by others (sqlite3) or checked ahead: refuse ``path`` if it is a symlink,
    not a regular file (or FIFO, with ``fifo_ok``), or not the agent's own; None when it does
    not exist."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    check_seen(st, path, what, fifo_ok)
    if st.st_mode & 0o077:
        os.chmod(path, 0o600)
    return st


def check_seen(st: os.stat_result, path: str, what: str = "file", fifo_ok: bool = False,
               dir_ok: bool = False, at: Optional[str] = None) -> None:
    """Refuse ``path``, seen (``lstat``) as ``st``, unless it is a regular file (or a FIFO, with
    ``fifo_ok``; a directory, with ``dir_ok``) of the agent's own that nobody else writes.
    ``at``: where its ACL is read instead of its name (``seen_at``)."""
    if not (dir_ok and stat.S_ISDIR(st.st_mode)):
        _check_kind(st, path, what, fifo_ok and stat.S_ISFIFO(st.st_mode))
    _check_owned(st, path, what, fd=at)


def seen_at(held: int) -> str:
    """Where the file an ``O_PATH`` descriptor ``held`` holds is named for calls that take no
    such descriptor (chmod, getxattr): that very file, whatever its name names by then."""
    return "/proc/self/fd/%d" % held


def read_private(path: str, what: str = "file", dir_fd: Optional[int] = None) -> Optional[bytes]:
    """The content of a file the agent trusts, or None when it does not exist (``dir_fd``:
    as ``open_private``'s)."""
    try:
        fd = open_private(path, os.O_RDONLY, what, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


# A directory found at a temporary name is renamed to NAME + this + hex, beside it (the shim's
# ``_clear``), where it stays until its job's folder is pruned: a directory of the agent's own
# among a job's files (``AgentPaths.check``).
SET_ASIDE = ".set-aside."


def temporary_name(path: str) -> str:
    """Where ``write_private`` writes ``path`` before it replaces it: beside it, named for this
    process, so no other writer of the agent's shares it."""
    return "%s.tmp.%d" % (path, os.getpid())


def write_private(path: str, data: bytes, durable: bool = False, mode: int = 0o600,
                  dir_fd: Optional[int] = None) -> None:
    """Replace ``path`` atomically (a reader sees all of it or none), 0600 (or ``mode``, which
    the caller has checked gives no one else write); with ``durable``, fsync'd before it
    replaces the old one. ``dir_fd``: as ``open_private``'s (the temporary file beside it, and
    the rename, in that very folder too)."""
    tmp = temporary_name(path)
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "temporary file",
                      dir_fd=dir_fd)
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(in_folder(tmp, dir_fd), dir_fd=dir_fd)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(in_folder(tmp, dir_fd), in_folder(path, dir_fd), src_dir_fd=dir_fd,
               dst_dir_fd=dir_fd)
