"""Who holds the agent's powers on its host: the users a job launched for someone else
(``run_as``) must never run as.

The agent's powers are its socket, its state dir and every job on the host (stop them, read
their env and logs, change MIG). They are held by root, by the agent's own user, by every login
that reached it through sudo (``become``: that login can become root again) — the one that
started its daemon, and each whose bridge (its own sudo) used that daemon later, all kept in the
state dir's ``sudo-logins`` for as long as the state dir is, so a daemon started anew by another
login still knows them — and by whoever owns a path the agent's code or interpreter is loaded
from: an agent started with ``become`` runs the zipapp its login user put in that user's
``agent_cache``, so that user could change the code that root runs at the next shim or daemon
start.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, Iterable, Mapping, Optional, Set, Tuple

from remote_agent.daemon.trust import open_private, read_private
from remote_agent.digits import whole

UID_MOST = 2 ** 32 - 2  # uid_t's largest; (uid_t)-1 is no user


def holders(environ: Mapping[str, str], loaded_from: Iterable[str],
            logins: Iterable[int]) -> Dict[int, str]:
    """uid -> why that user holds the agent's powers, for an agent whose environment is
    ``environ``, whose code and interpreter are loaded from the paths ``loaded_from``, and
    that the sudo ``logins`` (``sudo_logins``) reached."""
    found: Dict[int, str] = {0: "root", os.geteuid(): "the agent's own user"}
    sudo_uid = whole(environ.get("SUDO_UID", ""), UID_MOST)
    if sudo_uid is not None:
        found.setdefault(sudo_uid, "the user who started the agent with sudo")
    for uid in sorted(logins):
        found.setdefault(uid, "a user who reached the agent through sudo (a login that can "
                              "become root again)")
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


def record_login(path: str, environ: Mapping[str, str]) -> None:
    """Add the login sudo names in ``environ`` (its SUDO_UID), if any, to the sudo logins
    kept at ``path``: a bridge whose sudo reached a daemon another login started, and each
    daemon, record theirs. Appended (a line each, durable), so two at once both stay."""
    uid = whole(environ.get("SUDO_UID", ""), UID_MOST)
    if uid is None or uid in sudo_logins(path):
        return
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, "sudo logins")
    try:
        os.write(fd, b"%d\n" % uid)
        os.fsync(fd)
    finally:
        os.close(fd)


def sudo_logins(path: str) -> Set[int]:
    """The uids of the logins that ever reached the agent of this state dir through sudo."""
    data = read_private(path, "sudo logins") or b""
    uids = (whole(line, UID_MOST) for line in data.split())
    return {uid for uid in uids if uid is not None}


def refusal(uid: int, logins_path: str) -> Optional[str]:
    """Why a job launched for someone else may not run as ``uid`` on this host, or None
    where it may (asked at each launch: the paths' owners may change, a login may come);
    ``logins_path``: the state dir's sudo logins."""
    why = holders(os.environ, loaded_from(), sudo_logins(logins_path)).get(uid)
    if why is None:
        return None
    if uid == 0:
        return "uid 0 on this host: a job run as a user never runs as root"
    return ("uid %d on this host, %s: a job run as a team member never runs with the agent's "
            "powers (its socket and state dir: every job's env and logs, stopping them, MIG)"
            % (uid, why))
