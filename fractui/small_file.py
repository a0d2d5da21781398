"""Reading a small file a person names (a config, an ssh_config, a known_hosts, a theme): a
regular file only (or /dev/null, the empty file by name), and only up to a size. A FIFO with no
writer would block the reader for good and a device such as /dev/zero never ends, so neither is
read: each is refused with what it is. Each of these files says what fractui trusts (which
programs run, which host keys are a host's, where a host is), so one that another local user
could change, or that is reached through a folder or link another user could change, is
refused as OpenSSH's StrictModes refuses such an ssh_config (remote_agent.daemon.trust's rule,
the agent's for its own files)."""

from __future__ import annotations

import os
import stat
from typing import Optional

from remote_agent.daemon.trust import UnsafePath, check_tree, kind_of

class NotRead(Exception):
    """Why a file was not read, in words for a message after its path."""


def read_small_file(path: str, max_bytes: int, what: str) -> bytes:
    """The bytes of the regular file at ``path``. FileNotFoundError where there is none (each
    caller says what a missing file means); NotRead for anything else that stops the read (a
    file another user could change among them), ``what`` (an article and a noun: "a config
    file") naming the kind."""
    try:  # what it is, before any open (a device may act on one; a socket cannot be opened)
        st = os.stat(path)
        if _null(st):  # the empty file by name (ssh -F /dev/null)
            return b""
        why = _not_regular(st.st_mode)
        if why:
            raise NotRead(why)
        check_tree(path, what.split(" ", 1)[-1], root_may_own=True, runner="fractui")
        # not blocking: a FIFO put there since opens at once, and is refused below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise
    except UnsafePath as err:
        raise NotRead(str(err)) from None
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        raise NotRead(_words(err)) from None
    try:
        why = _not_regular(os.fstat(fd).st_mode)
        if why:
            raise NotRead(why)
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise NotRead("larger than %d MiB: not %s" % (max_bytes >> 20, what))
    except OSError as err:
        raise NotRead(_words(err)) from None
    finally:
        os.close(fd)


def not_regular(path: str) -> Optional[str]:
    """Why ``path`` is not a regular file ("not a regular file: a FIFO"), for a file read by a
    library that opens it itself; None for a regular file, /dev/null or none at all (the
    reader says)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return None if _null(st) else _not_regular(st.st_mode)


def _null(st: os.stat_result) -> bool:
    """Whether ``st`` is /dev/null's."""
    try:
        return os.path.samestat(st, os.stat(os.devnull))
    except OSError:
        return False


def _not_regular(mode: int) -> Optional[str]:
    """What a file of ``mode`` is, where it is not a regular file; None where it is."""
    if stat.S_ISREG(mode):
        return None
    return "is a directory" if stat.S_ISDIR(mode) else "not a regular file: " + kind_of(mode)


def _words(err: Exception) -> str:
    """An OS error as words for a message after a path: "permission denied"."""
    return (getattr(err, "strerror", None) or str(err)).lower()
