"""POSIX ACLs set and read as the kernel keeps them (the ``system.posix_acl_access`` and
``system.posix_acl_default`` xattrs), so the tests need no setfacl: what ``setfacl -m
u:UID:rwx`` (or ``-d -m``, with ``default``) leaves on a file or directory."""

from __future__ import annotations

import errno
import os
import stat
import struct
from typing import List, Tuple

import pytest

ACCESS, DEFAULT = "system.posix_acl_access", "system.posix_acl_default"
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NO_ID = 0xFFFFFFFF
ENTRY = struct.Struct("<HHI")


def grant(path, uid: int = -1, gid: int = -1, perm: int = 7, default: bool = False) -> None:
    """Give the user ``uid`` (or the group ``gid``) ``perm`` (rwx = 4|2|1) on ``path`` through
    an ACL, its mask made to let it, as setfacl does: the owner, owning group and others keep
    what its mode gives them. ``default``: the directory's default ACL instead, the one the
    kernel gives what is made in it. Skips the test where the filesystem keeps no ACLs."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    named = (USER, uid) if uid >= 0 else (GROUP, gid)
    entries = [(USER_OBJ, mode >> 6 & 7, NO_ID), (named[0], perm, named[1]),
               (GROUP_OBJ, mode >> 3 & 7, NO_ID), (MASK, (mode >> 3 & 7) | perm, NO_ID),
               (OTHER, mode & 7, NO_ID)]
    raw = struct.pack("<I", 2) + b"".join(ENTRY.pack(*e) for e in sorted(entries))  # by tag
    try:
        os.setxattr(path, DEFAULT if default else ACCESS, raw)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip("the filesystem of %s keeps no POSIX ACLs" % path)
        raise


def entries(path, which: str = ACCESS) -> List[Tuple[int, int, int]]:
    """The (tag, perm, id) entries of ``path``'s ACL (``which``); [] where it has none."""
    try:
        raw = os.getxattr(path, which, follow_symlinks=False)
    except OSError as err:
        if err.errno == errno.ENODATA:
            return []
        raise
    return [ENTRY.unpack_from(raw, at) for at in range(4, len(raw), ENTRY.size)]


def let_in(path, uid: int) -> int:
    """The perm bits (rwx = 4|2|1) the ACL of ``path`` lets the user ``uid`` have, as the kernel
    reckons them: the named entry cut by the mask (0 where no entry names ``uid``)."""
    acl = entries(path)
    mask = next((p for tag, p, _ in acl if tag == MASK), 7)
    return next((p & mask for tag, p, ident in acl if tag == USER and ident == uid), 0)
