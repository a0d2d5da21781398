"""Who this process acts as on this machine: the OS user of its effective uid, as the kernel
says. ``$USER`` and ``$LOGNAME`` are the caller's to set, so nothing that names a user — in the
audit, a lease holder's name, an SSH login, a store's identity — ever reads them."""

from __future__ import annotations

import os
import pwd
from typing import Optional

from remote_agent.digits import whole
from remote_agent.jobs.powers import UID_MOST


def os_user() -> str:
    """The effective user's name; ``uid N`` for a uid with no passwd entry (a container's)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "uid %d" % uid


def uid_named(name: str) -> Optional[int]:
    """The uid ``os_user`` names ``name`` by (a passwd entry's, or ``uid N``'s); None for a
    name this machine has no user of."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return whole(name[4:], UID_MOST) if name.startswith("uid ") else None
