"""What a daemon keeps in its state dir for the next one, so that a restart (an upgrade, a
kill -9) does not change what the admin is told: the marks of GPUs a failed MIG change left
degraded (remote_agent.mig.health), a GPU's recent XID errors (remote_agent.gpu.xid).

Each file is written whole (a reader sees all of it or the one before), 0600, and holds the
boot it was written in: what it says is of the GPUs as they were in that boot, and a reboot
ends it (MIG instances do not outlive one; an XID is of the driver that raised it), so a file
of another boot is read as nothing kept. Where the boot's id cannot be read (no
/proc/sys/kernel/random/boot_id), neither can a reboot be told, so nothing kept is taken: a
mark or an XID of a boot long over is not said of the GPUs as they are now.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Optional, TypeVar

from remote_agent.daemon.trust import UnsafePath, read_private, write_private
from remote_agent.mig.journal import BOOT_ID, boot_id

log = logging.getLogger(__name__)

VERSION = 1
T = TypeVar("T")


def read_kept(path: str, what: str, parse: Callable[[Any], T], lost: str) -> Optional[T]:
    """What a daemon before this one kept at ``path`` in this boot, as ``parse`` reads it, or
    None: nothing kept, kept in another boot, or not readable, which is said with ``lost``
    (what goes unsaid for it). UnsafePath (someone else's file) is raised: the daemon refuses
    it, as its other files."""
    try:
        data = json.loads((read_private(path, what) or b"null").decode())
        if data is None:
            return None
        boot = boot_id()
        if boot is None:
            log.warning("the %s kept in %s are not taken: this boot's id cannot be read (%s), "
                        "so whether the host rebooted since cannot be told; %s", what, path,
                        BOOT_ID, lost)
            return None
        if data["boot"] != boot:
            return None
        return parse(data["kept"])
    except UnsafePath:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        log.error("the %s kept in %s cannot be read (%s: %s); %s", what, path,
                  type(err).__name__, err, lost)
        return None


def keep(path: str, what: str, kept: Any, durable: bool = True) -> None:
    """Write ``kept`` (JSON) for the next daemon. A write that fails is said: this daemon goes
    on with what it holds, and the next reads what was written last."""
    data = {"version": VERSION, "boot": boot_id(), "kept": kept}
    try:
        write_private(path, json.dumps(data, sort_keys=True).encode(), durable=durable)
    except OSError as err:
        log.error("the %s cannot be kept in %s (%s: %s); a restarted agent would say what was "
                  "written there last", what, path, type(err).__name__, err)
