"""The files fractui keeps for itself on the admin's machine (its logs, in the state dir):
the admin's alone. Each is refused where another local user could have put it there, or could
replace it: the folders on its way are checked as the config's are, and the file must be the
admin's own regular file, never a link, made 0600 (remote_agent.daemon.trust's rule)."""

from __future__ import annotations

import os

from remote_agent.daemon.trust import check_tree, open_private


def open_log(path: str, what: str) -> int:
    """A descriptor to append to the log at ``path`` (``what`` names it in a refusal),
    making its folder (0700) where missing; UnsafePath where another user could have made or
    could change it."""
    folder = os.path.dirname(os.path.abspath(path))
    check_tree(folder, "folder of the " + what, runner="fractui")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    check_tree(folder, "folder of the " + what, runner="fractui")  # as made, whoever made it
    return open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, what, runner="fractui")
