"""Who holds the agent's powers on its host: the users a job launched for someone else
(``run_as``) must never run as.

The agent's powers are its socket, its state dir and every job on the host (stop them, read
their env and logs, change MIG). They are held by root, by the agent's own user, by the user who
started it through sudo (``become``: that login can become root again), and by whoever owns a
path the agent's code or interpreter is loaded from: an agent started with ``become`` runs the
zipapp its login user put in that user's ``agent_cache``, so that user could change the code
that root runs at the next shim or daemon start.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, Iterable, Mapping, Optional, Tuple


def holders(environ: Mapping[str, str], loaded_from: Iterable[str]) -> Dict[int, str]:
    """uid -> why that user holds the agent's powers, for an agent whose environment is
    ``environ`` and whose code and interpreter are loaded from the paths ``loaded_from``."""
    found: Dict[int, str] = {0: "root", os.geteuid(): "the agent's own user"}
    sudo_uid = environ.get("SUDO_UID", "")
    if sudo_uid.isdigit():
        found.setdefault(int(sudo_uid), "the user who started the agent with sudo")
    for path in loaded_from:
        for step, uid in _owners(path):
            found.setdefault(uid, "the owner of %s, on the way to %s, which the agent loads "
                                  "its code from (it could change what the agent runs)" % (
                                      step, path))
    return found


def loaded_from() -> Iterable[str]:
    """The paths this agent's code and interpreter are loaded from: its python, and each
    entry of its module path (the agent's own code, a zipapp or a directory, among them)."""
    yield sys.executable
    yield from (p for p in sys.path if p)


def _owners(path: str) -> Iterable[Tuple[str, int]]:
    """(each existing step of ``path``, as given and with its symlinks resolved, and its
    owner's uid), from / down; a step missing ends it (nothing below is loaded)."""
    for way in (os.path.abspath(path), os.path.realpath(path)):
        current = "/"
        for name in way.strip("/").split("/"):
            current = os.path.join(current, name)
            try:
                st = os.lstat(current)
            except OSError:
                break
            yield current, st.st_uid


def refusal(uid: int) -> Optional[str]:
    """Why a job launched for someone else may not run as ``uid`` on this host, or None
    where it may (asked at each launch: the paths' owners may change)."""
    why = holders(os.environ, loaded_from()).get(uid)
    if why is None:
        return None
    if uid == 0:
        return "uid 0 on this host: a job run as a user never runs as root"
    return ("uid %d on this host, %s: a job run as a team member never runs with the agent's "
            "powers (its socket and state dir: every job's env and logs, stopping them, MIG)"
            % (uid, why))
