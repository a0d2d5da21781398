"""What a daemon keeps in its state dir for the next one, so that a restart (an upgrade, a
kill -9) does not change what the admin is told: the marks of GPUs a failed MIG change left
degraded (remote_agent.mig.health), a GPU's recent XID errors (remote_agent.gpu.xid).

Each file is written whole (a reader sees all of it or the one before), 0600, and holds the
boot it was written in: what it says is of the GPUs as they were in that boot, and a reboot
ends it (MIG instances do not outlive one; an XID is of the driver that raised it), so a file
of another boot is read as nothing kept. Where the boot's id cannot be read (no
/proc/sys/kernel/random/boot_id), neither can a reboot be told, so nothing kept is taken: a
mark or an XID of a boot long over is not said of the GPUs as they are now.

A damaged file the agent reads from its state dir (these, and a job's own files: its start,
its end, that it outlived its shim) is read as nothing kept, said once and set aside
(``read_json``): read again at each pass, it would fail each pass for good.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Optional, Tuple, TypeVar

from remote_agent.daemon.trust import DAMAGE, in_folder, open_private, record, write_private
from remote_agent.failing import Failures
from remote_agent.mig.journal import BOOT_ID, boot_id

log = logging.getLogger(__name__)

VERSION = 2  # of every kept file's format (``keep``)
# what version 1 of the marks and the XIDs held: why a file of it is not taken (``read_kept``)
BY_GPU_INDEX = MappingProxyType({1: "kept by GPU index, which may name another GPU by now; this "
                                    "one keeps them by GPU UUID"})
DAMAGED = ".damaged"  # what a damaged file is renamed to, beside itself
T = TypeVar("T")
# a file that cannot be kept (a full disk), or a damaged one set aside, said once while it
# repeats: by path
unkept = Failures(log, ("write", "writes"))
unmoved = Failures(log, ("read", "reads"))


TAKING = ".taking"  # the name a file being set aside has between its two renames, beside itself
TRIES = 3  # reads of a damaged file replaced each time before it could be set aside


class Replaced(OSError):
    """The name no longer holds the file read: another process set it aside, or wrote a new
    one in its place (each writer replaces the file whole), which is left where it is."""


def read_json(path: str, what: str, shape: Callable[[Any], T], then: str,
              dir_fd: Optional[int] = None) -> Optional[T]:
    """The JSON at ``path`` as ``shape`` reads it (which raises one of DAMAGE where the
    content is not what it expects), or None where there is none. A damaged file is said once
    (``then``: what the agent does without it) and set aside beside itself (``DAMAGED``, 0600)
    for whoever looks into why, so the next read finds none. OSError (the disk) and UnsafePath
    (someone else's file) are raised, as for any of the agent's files. ``dir_fd``: its folder,
    opened already (``open_private``'s): the file is read, and set aside, in that very
    folder, never through its name."""
    with _reading(path, what, shape, then, dir_fd) as (read, _held):
        return read


@contextmanager
def _reading(path: str, what: str, shape: Callable[[Any], T], then: str,
             dir_fd: Optional[int] = None) -> Iterator[Tuple[Optional[T], Optional[int]]]:
    """``read_json``'s answer, and the file that gave it, held open (None where none did):
    while it is open its inode number is not another file's, so ``_moved`` can tell it from
    a file written in its place. A damaged file that another process replaced or set aside
    before this one could set it aside is read again: what is there by then is the answer (a
    new file a writer put in its place); at most TRIES times, then read as none, said."""
    for _ in range(TRIES):
        fd = _open(path, what, dir_fd)
        if fd is None:
            yield None, None
            return
        try:
            with open(fd, "rb", closefd=False) as f:
                data = f.read()
            try:
                read = shape(json.loads(data.decode()))
            except DAMAGE as err:
                aside = set_aside(path, what, "%s: %s" % (type(err).__name__, err), then, fd,
                                  dir_fd)
            else:
                unmoved.worked(path, "%s (the %s), damaged, is gone or mended" % (path, what))
                yield read, fd
                return
            if aside:
                yield None, None
                return
        finally:
            os.close(fd)
    unmoved.failed(path, "%s (the %s) was damaged at each of %d reads, and each time replaced "
                   "by another file before it could be set aside: read as none this time, and "
                   "%s" % (path, what, TRIES, then), level=logging.ERROR, same="replaced")
    yield None, None


def _open(path: str, what: str, dir_fd: Optional[int] = None) -> Optional[int]:
    """``path`` opened to read (``open_private``), or None where there is none. A file found
    missing is looked for again with the folder's lock held: a reader between the two renames
    of one set aside waits for them (the file may be put back), and a file a reader killed
    between them left under its own name (``TAKING``) is put back first."""
    try:
        return open_private(path, os.O_RDONLY, what, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    try:
        with _locked(path, dir_fd):
            taken = path + TAKING
            if _lexists(taken, dir_fd):
                _put_back(taken, path, dir_fd)
                log.warning("%s (the %s) was found under %s, where a reader stopped while "
                            "setting it aside left it; put back", path, what, taken)
            return open_private(path, os.O_RDONLY, what, dir_fd=dir_fd)
    except FileNotFoundError:  # (no file, or no folder)
        return None


def _lexists(path: str, dir_fd: Optional[int]) -> bool:
    """Whether ``path`` (in ``dir_fd``, where given) is there, a symlink or not."""
    try:
        os.lstat(in_folder(path, dir_fd), dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


@contextmanager
def _locked(path: str, dir_fd: Optional[int] = None) -> Iterator[None]:
    """The lock of ``path``'s folder (``dir_fd``, where given: opened anew from it, so the
    lock is this holder's alone), held while a file of it is set aside (``_moved``) and
    while a reader that found none looks again: a lock dies with its holder, so a name it
    left behind is known to be no one's once the lock is taken."""
    fd = os.open("." if dir_fd is not None else os.path.dirname(path) or ".",
                 os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def set_aside(path: str, what: str, why: str, then: str, held: int,
              dir_fd: Optional[int] = None) -> bool:
    """The damaged file read (``held``, open) renamed beside itself, said once; False where
    ``path`` no longer holds it (``Replaced``): nothing is said, and the caller reads again.
    Where it cannot be renamed, that is said once while it stays (each read finds it again,
    and reads it as nothing kept)."""
    aside = path + DAMAGED
    err = _moved(path, aside, held, dir_fd)
    if isinstance(err, Replaced):
        return False
    if err is not None:
        unmoved.failed(path, "%s (the %s) is damaged (%s) and cannot be set aside (%s: %s); "
                       "%s" % (path, what, why, type(err).__name__, err, then),
                       level=logging.ERROR, same=why)
        return True
    log.error("%s (the %s) is damaged (%s); set aside as %s, and %s", path, what, why, aside,
              then)
    return True


def _moved(path: str, aside: str, held: int, dir_fd: Optional[int] = None) -> Optional[OSError]:
    """``path`` renamed to ``aside``, 0600 (for whoever looks into it), where it is still the
    file read (``held``: open, so no other file has its inode number); Replaced where it is
    not; or why not. Renamed first to ``TAKING`` beside it, then looked at: a look before a
    rename of ``path`` itself could be followed by a writer's new file, which the rename would
    take. One taken so is put back, unless a still newer one is there by then; so is the file
    read where it cannot be renamed on (it stays where it was, as one that cannot be set
    aside). The folder's lock is held throughout: a reader finding no file meanwhile waits
    for it (``_open``). ``dir_fd``: as ``read_json``'s."""
    taken = path + TAKING
    at = {"src_dir_fd": dir_fd, "dst_dir_fd": dir_fd}
    try:
        with _locked(path, dir_fd):
            try:
                os.rename(in_folder(path, dir_fd), in_folder(taken, dir_fd), **at)
            except FileNotFoundError:
                return Replaced("set aside or removed meanwhile")
            except OSError as err:
                return _as_move(err, path, aside)
            if not os.path.samestat(os.lstat(in_folder(taken, dir_fd), dir_fd=dir_fd),
                                    os.fstat(held)):
                _put_back(taken, path, dir_fd)
                return Replaced("replaced meanwhile")
            try:
                os.fchmod(held, 0o600)  # (the file at ``taken``, as seen just now)
                os.replace(in_folder(taken, dir_fd), in_folder(aside, dir_fd), **at)
            except OSError as err:
                _put_back(taken, path, dir_fd)
                return _as_move(err, path, aside)
    except OSError as err:  # (a file left as ``taken`` is put back by the next reader)
        return err
    return None


def _as_move(err: OSError, path: str, aside: str) -> OSError:
    """``err`` of either rename said as the move it is part of, ``path`` to ``aside``."""
    return type(err)(err.errno, err.strerror, path, None, aside)


def _put_back(taken: str, path: str, dir_fd: Optional[int] = None) -> None:
    """The file at ``taken`` (a writer's, taken by a rename meant for a damaged one) back at
    ``path``, unless a still newer one is there by then: by a hard link, which never replaces
    one. Where no link can be made (no inode left on a tmpfs, which a link takes; a filesystem
    without links) it is renamed back where ``path`` is still free (the folder's lock is held,
    but a writer takes none: only one in the instant between the look and the rename would
    lose its file, where else the file taken would be lost for good, under a name nobody
    reads). ``dir_fd``: as ``read_json``'s."""
    src, dst = in_folder(taken, dir_fd), in_folder(path, dir_fd)
    try:
        os.link(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        pass
    except OSError:
        if not _lexists(path, dir_fd):
            os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return
    os.unlink(src, dir_fd=dir_fd)


def read_kept(path: str, what: str, parse: Callable[[Any], T], lost: str,
              formats: Mapping[int, str] = MappingProxyType({})) -> Optional[T]:
    """What a daemon before this one kept at ``path`` in this boot, as ``parse`` reads it
    (raising one of DAMAGE where it is not what it kept), or None: nothing kept, kept in
    another boot or by another version, not readable or damaged, which is said with ``lost``
    (what goes unsaid for it). ``formats``: by version, what older agents kept in this file,
    said as why one of them is not taken (``other_version``). UnsafePath (someone else's
    file) is raised: the daemon refuses it, as its other files."""
    def shape(data: Any) -> Tuple[int, Optional[str], Optional[T]]:
        record({"boot": (str, type(None)), "version": (int,)}, ("boot", "kept", "version"))(data)
        return data["version"], data["boot"], \
            parse(data["kept"]) if data["version"] == VERSION else None
    try:
        with _reading(path, what, shape, lost) as (kept, held):
            return _taken(path, what, kept, held, lost, formats)
    except OSError as err:
        log.error("the %s kept in %s cannot be read (%s: %s); %s", what, path,
                  type(err).__name__, err, lost)
        return None


def _taken(path: str, what: str, kept: Optional[Tuple[int, Optional[str], Optional[T]]],
           held: Optional[int], lost: str, formats: Mapping[int, str]) -> Optional[T]:
    """What ``read_kept`` takes of the file read (``held``, open): nothing of another boot,
    and nothing of another version, which is set aside (``formats``: as ``read_kept``'s)."""
    if kept is None or held is None:
        return None
    version, boot, taken = kept
    if boot_id() is None:
        log.warning("the %s kept in %s are not taken: this boot's id cannot be read (%s), "
                    "so whether the host rebooted since cannot be told; %s", what, path,
                    BOOT_ID, lost)
        return None
    if boot != boot_id():
        return None
    if version != VERSION:
        # set aside, so that the next start finds none to say of again (until this daemon
        # keeps its own, which may be long)
        aside = "%s.v%d" % (path, version)
        err = _moved(path, aside, held)
        log.warning("the %s kept in %s are of another version of the agent (%d, not %d: "
                    "%s): not taken; %s; %s", what, path, version, VERSION,
                    other_version(version, formats), lost, "set aside as %s" % aside
                    if err is None else
                    "%s, and left as it is" % err if isinstance(err, Replaced) else (
                        "it cannot be set aside (%s: %s), so each start says this until "
                        "they are kept again" % (type(err).__name__, err)))
        return None
    return taken


def other_version(version: int, formats: Mapping[int, str]) -> str:
    """Why a kept file of ``version`` (not ``VERSION``) is not taken: what an older agent kept
    in it (``formats``), else that a newer agent wrote it, or that no agent keeps it so."""
    if version in formats:
        return formats[version]
    if version > VERSION:
        return "written by a newer agent, in a form this one cannot read"
    return "a form no agent keeps this file in"


def keep(path: str, what: str, kept: Any, durable: bool = True) -> None:
    """Write ``kept`` (JSON) for the next daemon. A write that fails is said once while it
    fails (a full disk fails every write until there is room), and once when one works again:
    this daemon goes on with what it holds, and the next reads what was written last."""
    data = {"version": VERSION, "boot": boot_id(), "kept": kept}
    try:
        write_private(path, json.dumps(data, sort_keys=True).encode(), durable=durable)
    except OSError as err:
        unkept.failed(path, "the %s cannot be kept in %s (%s: %s); a restarted agent "
                      "would say what was written there last; said again when they are "
                      "kept" % (what, path, type(err).__name__, err), level=logging.ERROR)
        return
    unkept.worked(path, "the %s are kept in %s again" % (what, path))
