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

import json
import logging
import os
import threading
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, TypeVar

from remote_agent.daemon.trust import DAMAGE, open_private, write_private
from remote_agent.failing import Failures
from remote_agent.mig.journal import BOOT_ID, boot_id

log = logging.getLogger(__name__)

VERSION = 2  # 1: kept by GPU index, which names another GPU once one falls off the bus
DAMAGED = ".damaged"  # what a damaged file is renamed to, beside itself
T = TypeVar("T")
# a file that cannot be kept (a full disk), or a damaged one set aside, said once while it
# repeats: by path
unkept = Failures(log, ("write", "writes"))
unmoved = Failures(log, ("read", "reads"))


Seen = Tuple[int, int]  # (st_dev, st_ino): which file was read, whatever names it by then


class Replaced(OSError):
    """The name no longer holds the file read: another process set it aside, or wrote a new
    one in its place (each writer replaces the file whole), which is left where it is."""


def read_json(path: str, what: str, shape: Callable[[Any], T], then: str) -> Optional[T]:
    """The JSON at ``path`` as ``shape`` reads it (which raises one of DAMAGE where the
    content is not what it expects), or None where there is none. A damaged file is said once
    (``then``: what the agent does without it) and set aside beside itself (``DAMAGED``, 0600)
    for whoever looks into why, so the next read finds none. OSError (the disk) and UnsafePath
    (someone else's file) are raised, as for any of the agent's files."""
    return _read_json(path, what, shape, then)[0]


def _read_json(path: str, what: str, shape: Callable[[Any], T],
               then: str) -> Tuple[Optional[T], Optional[Seen]]:
    """``read_json``'s answer, and which file gave it (None where none did). A damaged file
    that another process replaced or set aside before this one could set it aside is read
    again: what is there by then is the answer (a new file a writer put in its place)."""
    while True:
        data, seen = _read(path, what)
        try:
            read = None if data is None else shape(json.loads(data.decode()))
        except DAMAGE as err:
            if set_aside(path, what, "%s: %s" % (type(err).__name__, err), then, seen):
                return None, None
            continue
        unmoved.worked(path, "%s (the %s), damaged, is gone or mended" % (path, what))
        return read, seen


def _read(path: str, what: str) -> Tuple[Optional[bytes], Optional[Seen]]:
    """``read_private``'s answer, and which file it read."""
    try:
        fd = open_private(path, os.O_RDONLY, what)
    except FileNotFoundError:
        return None, None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        return f.read(), (st.st_dev, st.st_ino)


def set_aside(path: str, what: str, why: str, then: str, seen: Seen) -> bool:
    """The damaged file read (``seen``) renamed beside itself, said once; False where
    ``path`` no longer holds it (``Replaced``): nothing is said, and the caller reads again.
    Where it cannot be renamed, that is said once while it stays (each read finds it again,
    and reads it as nothing kept)."""
    aside = path + DAMAGED
    err = _moved(path, aside, seen)
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


def _moved(path: str, aside: str, seen: Seen) -> Optional[OSError]:
    """``path`` renamed to ``aside``, 0600 (for whoever looks into it), where it is still the
    file read (``seen``); Replaced where it is not; or why not. Renamed first to a name of
    this thread's, then looked at: a look before a rename of ``path`` itself could be followed
    by a writer's new file, which the rename would take. One taken so is put back, unless a
    still newer one is there by then; meanwhile a reader finds none, as while a file is set
    aside."""
    taken = "%s.%d.%d" % (aside, os.getpid(), threading.get_ident())
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        return Replaced("set aside or removed meanwhile")
    except OSError as err:  # (said as the move it is part of)
        return type(err)(err.errno, err.strerror, path, None, aside)
    try:
        st = os.lstat(taken)
        if (st.st_dev, st.st_ino) != seen:
            _put_back(taken, path)
            return Replaced("replaced meanwhile")
        os.chmod(taken, 0o600)
        os.replace(taken, aside)
    except OSError as err:
        return err
    return None


def _put_back(taken: str, path: str) -> None:
    """The file at ``taken`` (a writer's, taken by a rename meant for a damaged one) back at
    ``path``, unless a still newer one is there by then: by a hard link, which never replaces
    one. Where no link can be made (no inode left on a tmpfs, which a link takes; a filesystem
    without links) it is renamed back where ``path`` is still free: only a writer in the
    instant between the look and the rename would lose its file, where else the file taken
    would be lost for good, under a name nobody reads."""
    try:
        os.link(taken, path)
    except FileExistsError:
        pass
    except OSError:
        if not os.path.lexists(path):
            os.rename(taken, path)
            return
    os.unlink(taken)


def record(types: Dict[str, Tuple[type, ...]],
           required: Sequence[str] = ()) -> Callable[[Any], Dict[str, Any]]:
    """A shape for ``read_json``: an object with the ``required`` keys, each of its keys
    named in ``types`` of one of those types (a boolean is not a number)."""
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


def read_kept(path: str, what: str, parse: Callable[[Any], T], lost: str) -> Optional[T]:
    """What a daemon before this one kept at ``path`` in this boot, as ``parse`` reads it
    (raising one of DAMAGE where it is not what it kept), or None: nothing kept, kept in
    another boot or by another version, not readable or damaged, which is said with ``lost``
    (what goes unsaid for it). UnsafePath (someone else's file) is raised: the daemon refuses
    it, as its other files."""
    def shape(data: Any) -> Tuple[int, Optional[str], Optional[T]]:
        record({"boot": (str, type(None)), "version": (int,)}, ("boot", "kept", "version"))(data)
        return data["version"], data["boot"], \
            parse(data["kept"]) if data["version"] == VERSION else None
    try:
        kept, seen = _read_json(path, what, shape, lost)
    except OSError as err:
        log.error("the %s kept in %s cannot be read (%s: %s); %s", what, path,
                  type(err).__name__, err, lost)
        return None
    if kept is None:
        return None
    version, boot, taken = kept
    if boot_id() is None:
        log.warning("the %s kept in %s are not taken: this boot's id cannot be read (%s), "
                    "so whether the host rebooted since cannot be told; %s", what, path,
                    BOOT_ID, lost)
        return None
    if boot != boot_id():
        return None
    if version != VERSION:  # 1: by GPU index, which may name another GPU by now
        # set aside, so that the next start finds none to say of again (until this daemon
        # keeps its own, which may be long)
        aside = "%s.v%d" % (path, version)
        err = _moved(path, aside, seen)
        log.warning("the %s kept in %s are of another version of the agent (%d, not %d, "
                    "which keeps them by GPU UUID): not taken; %s; %s", what, path, version,
                    VERSION, lost, "set aside as %s" % aside if err is None else
                    "%s, and left as it is" % err if isinstance(err, Replaced) else (
                        "it cannot be set aside (%s: %s), so each start says this until "
                        "they are kept again" % (type(err).__name__, err)))
        return None
    return taken


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
